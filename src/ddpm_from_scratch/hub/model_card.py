"""Model cards: the repo's `model_card.md` filled in with a run's facts, evaluation results written into a
card, and a minimal card for a folder that has none."""

from __future__ import annotations

import json
import re
import string
from pathlib import Path
from typing import Any, Mapping

# The template the training script renders; a source checkout has it next to `src/`.
MODEL_CARD_TEMPLATE = Path(__file__).resolve().parents[3] / "model_card.md"
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
    features = results.get("feature_model")
    if features:
        model = features["model"]
        entries += [
            EvalResult(task_type=task, dataset_type="image", dataset_name=dataset, metric_type="fd",
                       metric_name=f"FD ({model} features)", metric_value=round(features["fd"], 4)),
            EvalResult(task_type=task, dataset_type="image", dataset_name=dataset, metric_type="kid",
                       metric_name=f"KID ({model} features)", metric_value=round(features["kid_mean"], 5)),
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


# ----------------------------------------------------------------------------------------------- uploads


def _parameter_count(folder: Path) -> int | None:
    from safetensors import safe_open

    weights = sorted((folder / "unet").glob("*.safetensors"))
    if not weights:
        return None
    total = 0
    for path in weights:
        with safe_open(str(path), framework="pt") as file:
            for key in file.keys():  # noqa: SIM118  (a safetensors handle, not a dict)
                count = 1
                for size in file.get_slice(key).get_shape():
                    count *= size
                total += count
    return total


def _sample_grid(folder: Path) -> str | None:
    def step(path: Path) -> tuple[int, str]:
        number = re.findall(r"\d+", path.stem)
        return (int(number[-1]) if number else -1, path.name)

    grids = sorted((folder / "samples").glob("*.png"), key=step)
    return grids[-1].relative_to(folder).as_posix() if grids else None


_FALLBACK_TEMPLATE = """---
library_name: diffusers
pipeline_tag: unconditional-image-generation
tags:
- ddpm
- ddpm-from-scratch
---

# $repo_id

A denoising diffusion probabilistic model made with ddpm-from-scratch ($num_parameters parameters,
${resolution}×${resolution}, $channels channel(s), $num_train_timesteps timesteps).

![samples]($sample_grid)
"""


def minimal_model_card(folder: str | Path, repo_id: str, template: str | None = None) -> str:
    """A model card for a pipeline folder that has none: the template with the facts the folder tells
    (repo id, parameter count, resolution, channels, noise schedule, sample grid) and "unknown" for the rest."""
    folder = Path(folder)
    if template is None:
        template = MODEL_CARD_TEMPLATE.read_text(encoding="utf-8") if MODEL_CARD_TEMPLATE.is_file() \
            else _FALLBACK_TEMPLATE

    def config(name: str) -> dict:
        paths = [folder / name / "config.json", folder / name / "scheduler_config.json"]
        for path in paths:
            if path.is_file():
                return json.loads(path.read_text(encoding="utf-8"))
        return {}

    unet, scheduler = config("unet"), config("scheduler")
    count = _parameter_count(folder)
    grid = _sample_grid(folder)
    size = unet.get("sample_size")
    facts: dict[str, Any] = {
        "repo_id": repo_id,
        "num_parameters": f"{count:,}" if count is not None else "unknown",
        "model_config": unet.get("_class_name", "unknown"),
        "resolution": size if isinstance(size, int) else "unknown",
        "channels": unet.get("in_channels", "unknown"),
        "num_train_timesteps": scheduler.get("num_train_timesteps", "unknown"),
        "beta_schedule": scheduler.get("beta_schedule", "unknown"),
        "sample_grid": grid or "unknown",
    }
    names = {m.group("named") or m.group("braced") for m in string.Template.pattern.finditer(template)} - {None}
    facts = {**{name: "unknown" for name in names}, **facts}
    card = render_model_card(template, facts)
    if grid is None:
        card = card.replace("\n![samples](unknown)\n", "")
    return card.replace("datasets:\n- unknown\n", "")  # no Hub dataset to link to
