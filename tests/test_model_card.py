"""Model cards are the repo's template filled with a run's facts, never with a hole."""

from pathlib import Path

import pytest

from ddpm_from_scratch.hub.model_card import render_model_card

TEMPLATE = Path(__file__).resolve().parents[1] / "model_card.md"


def test_placeholders_are_replaced_by_facts():
    assert render_model_card("steps: $steps, loss ${loss}", {"steps": 10, "loss": "0.1"}) == "steps: 10, loss 0.1"


def test_a_placeholder_without_a_fact_is_an_error_naming_it():
    with pytest.raises(ValueError, match="'loss'"):
        render_model_card("loss $loss", {})


def test_the_repo_template_starts_with_hub_metadata():
    text = TEMPLATE.read_text()
    assert text.startswith("---\n")
    metadata = text.split("---\n")[1]
    assert "library_name: diffusers" in metadata and "pipeline_tag: unconditional-image-generation" in metadata
