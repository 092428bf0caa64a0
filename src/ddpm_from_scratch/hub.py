"""Model cards: the repo's `model_card.md` template filled in with a run's facts."""

from __future__ import annotations

import string
from typing import Any, Mapping


def render_model_card(template: str, facts: Mapping[str, Any]) -> str:
    """Substitute ``$name`` / ``${name}`` placeholders in `template` with `facts`.

    A placeholder with no fact is an error naming it, so a card never ships with a
    hole in it; ``$$`` writes a literal dollar sign.
    """
    try:
        return string.Template(template).substitute({k: str(v) for k, v in facts.items()})
    except KeyError as missing:
        raise ValueError(f"the model card template needs the fact {missing.args[0]!r}, which was not given.") from None


EVALUATION_START = "<!-- evaluation:start -->"
EVALUATION_END = "<!-- evaluation:end -->"


def model_index_results(results: Mapping[str, Any]) -> list:
    """The evaluation as Hub `model-index` entries (shown on the model page and searchable)."""
    from huggingface_hub import EvalResult

    task, dataset = "unconditional-image-generation", results["dataset"]
    bound = results["bound"]
    entries = [EvalResult(task_type=task, dataset_type="image", dataset_name=dataset, metric_type="bits_per_dim",
                          metric_name="bits/dim (variational bound)", metric_value=round(bound["bits_per_dim"], 4))]
    quality = results.get("sample_quality")
    if quality:
        entries += [
            EvalResult(task_type=task, dataset_type="image", dataset_name=dataset, metric_type="classifier_fid",
                       metric_name="classifier FID (digit-classifier features)",
                       metric_value=round(quality["classifier_fid"], 4)),
            EvalResult(task_type=task, dataset_type="image", dataset_name=dataset, metric_type="kid",
                       metric_name="KID (digit-classifier features)", metric_value=round(quality["kid_mean"], 5)),
        ]
    return entries


def update_model_card(card_text: str, results: Mapping[str, Any], table: str, model_name: str) -> str:
    """Put an evaluation into a model card: `model-index` metrics in its YAML and `table` in its text.

    The text goes between the template's evaluation markers, replacing what was there,
    so evaluating again updates the card rather than appending to it.
    """
    from huggingface_hub import ModelCard

    card = ModelCard(card_text)
    card.data.model_name = model_name
    card.data.eval_results = model_index_results(results)
    rendered = str(card)
    if EVALUATION_START not in rendered or EVALUATION_END not in rendered:
        rendered = rendered.rstrip("\n") + f"\n\n## Evaluation\n\n{EVALUATION_START}\n{EVALUATION_END}\n"
    head, rest = rendered.split(EVALUATION_START, 1)
    _, tail = rest.split(EVALUATION_END, 1)
    return f"{head}{EVALUATION_START}\n{table}\n{EVALUATION_END}{tail}"
