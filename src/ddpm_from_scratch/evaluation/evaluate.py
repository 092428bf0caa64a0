"""Evaluate a trained pipeline: the variational bound on held-out images, and offline sample quality.

For the embedded digits, sample quality is the classifier FID, KID and class histogram of
`metrics.py` against the 300 held-out digits. For any data, a pretrained transformers image encoder
(``feature_model``, e.g. DINOv2) gives FD and KID in its features (`encoder_features.py`); without one,
other data get the bound alone (FID's Inception weights cannot be assumed to be reachable).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import torch

from ..data.images import build_transform, load_image_dataset
from .digit_classifier import load_digits_tensors
from .encoder_features import ImageEncoder, encoder_sample_quality, load_image_encoder
from ..sampling.fast import compile_for_sampling, sampling_autocast
from ..figures.grid import image_grid
from ..hub.model_card import update_model_card
from .conditional import conditional_evaluation, format_conditional, is_digit_conditional
from .metrics import digit_sample_quality, reference_rows
from ..pipelines.pipeline_ddpm import DDPMFromScratchPipeline
from ..hub.loading import load_pipeline
from .reference_bounds import reference_bounds
from ..sampling.samplers import default_num_inference_steps, generate

GRID_IMAGES = 64  # samples shown in the evaluation's grid
DIGITS_HELD_OUT = "UCI digits, held-out split (scikit-learn)"
NO_QUALITY_METRIC = (
    "No offline sample-quality metric applies to this data: the digit classifier only knows 8×8 digits, "
    "and FID's Inception weights need a download. Pass --feature_model (e.g. facebook/dinov2-small) for "
    "FD and KID in a pretrained encoder's features."
)


def held_out_images(unet_config, data_dir: str | None = None) -> torch.Tensor:
    """The evaluation images in [-1, 1] on the 8-bit grid: the held-out digits, or every image in `data_dir`."""
    if data_dir is None:
        images, _ = load_digits_tensors("test")
        return images
    size = unet_config.sample_size
    resolution = size if isinstance(size, int) else size[0]
    transform = build_transform(resolution, unet_config.in_channels, center_crop=True)
    dataset = load_image_dataset(train_data_dir=data_dir)
    return torch.stack([transform(image) for image in dataset["image"]])


def reference_training_images(unet_config, data_dir: str | None = None,
                              train_data_dir: str | None = None) -> tuple[torch.Tensor, str]:
    """The images the bound's reference models are fitted on, and what they are: the digits' training split, the
    model's training images in `train_data_dir`, or, lacking those, the evaluation images themselves."""
    if data_dir is None and train_data_dir is None:
        images, _ = load_digits_tensors("train")
        return images, "UCI digits, training split"
    if train_data_dir is not None:
        return held_out_images(unet_config, train_data_dir), f"images in {Path(train_data_dir)}"
    return held_out_images(unet_config, data_dir), "the evaluation images themselves (optimistic: no training folder given)"


def is_digits_model(unet_config) -> bool:
    return unet_config.in_channels == 1 and unet_config.sample_size in (8, (8, 8), [8, 8])


def bound_summary(pipeline, images: torch.Tensor, seed: int, progress: bool,
                  num_inference_steps: int | None = None) -> dict[str, Any]:
    """Mean bits/dim of `images` with its standard error, and the mean prior and decoder terms; the bound of the
    `num_inference_steps`-step respaced chain when given (default: the training chain)."""
    bound = pipeline.variational_bound(images, generator=torch.Generator().manual_seed(seed), progress=progress,
                                       num_inference_steps=num_inference_steps)
    bpd = bound.bits_per_dim
    return {
        "num_images": len(bpd),
        "num_steps": len(bound.timesteps),
        "bits_per_dim": bpd.mean().item(),
        "bits_per_dim_std_error": (bpd.std().item() / math.sqrt(len(bpd))) if len(bpd) > 1 else float("nan"),
        "prior_bits_per_dim": bound.prior_bits_per_dim.mean().item(),
        "decoder_bits_per_dim": bound.decoder_bits_per_dim.mean().item(),
    }


def evaluate_pipeline(
    pipeline,
    data_dir: str | None = None,
    num_bound_images: int | None = None,
    num_samples: int = 300,
    sampler: str = "ddpm",
    num_inference_steps: int | None = None,
    seed: int = 0,
    batch_size: int = 300,
    progress: bool = True,
    compile_sampling: bool = False,
    mixed_precision: str = "no",
    feature_model: str | ImageEncoder | None = None,
    grid_path: str | Path | None = None,
    bound_steps: int | None = None,
    train_data_dir: str | None = None,
) -> dict[str, Any]:
    """Bits/dim on held-out images and, for digit models, the classifier FID/KID of `num_samples` samples.

    With ``feature_model`` (a transformers model id or folder, or a loaded `ImageEncoder`), also FD and
    KID of the same samples against all evaluation images in that encoder's features, with a floor and
    a ceiling (`encoder_sample_quality`), under ``results["feature_model"]``. The encoder is loaded
    before any work starts. With ``grid_path``, the first `GRID_IMAGES` samples are written there as a grid
    (`grid.image_grid`) and its path is recorded as ``results["samples_grid"]``. ``bound_steps`` = K gives the bound
    of the K-step respaced chain instead of the training chain's.

    A class-conditional digits model (`conditional.is_digit_conditional`) also gets ``results["conditional"]``: the
    bound given the label and, per guidance scale, the accuracy on the label asked for, classifier FID and class
    histogram (`conditional.conditional_evaluation`); ``results["sample_quality"]`` is then its unconditional one.

    Next to the bound, ``results["bound_references"]`` holds two trivial models of the same images in the same 8-bit
    space (`reference_bounds`): uniform over the used levels and a per-pixel histogram, fitted on the training
    images (the digits' training split, or ``train_data_dir``).

    ``compile_sampling`` and ``mixed_precision`` are the opt-in fast paths of
    :mod:`ddpm_from_scratch.fast_sampling`, applied to drawing the samples only: the bound is always
    computed by the float32 network as loaded (compiling happens after it, so the bound's batch
    shapes are never compiled). Both settings are recorded with the sample-quality numbers.
    """
    if isinstance(feature_model, str):
        feature_model = load_image_encoder(feature_model, device=pipeline.device)
    elif feature_model is not None:
        feature_model.model.to(pipeline.device)
    pipeline.unet.eval()
    pipeline.set_progress_bar_config(disable=not progress)
    all_images = held_out_images(pipeline.unet.config, data_dir)
    images = all_images if num_bound_images is None else all_images[:num_bound_images]
    results: dict[str, Any] = {
        "dataset": DIGITS_HELD_OUT if data_dir is None else f"images in {Path(data_dir)}",
        "bound": bound_summary(pipeline, images, seed, progress, bound_steps),
    }
    train_images, fitted_on = reference_training_images(pipeline.unet.config, data_dir, train_data_dir)
    results["bound_references"] = {"fitted_on": fitted_on, **reference_bounds(train_images, images)}
    digits = data_dir is None and is_digits_model(pipeline.unet.config)
    steps = num_inference_steps or default_num_inference_steps(sampler)
    sampling = {"sampler": sampler, "num_inference_steps": steps, "compiled": compile_sampling,
                "mixed_precision": mixed_precision}
    if digits or feature_model is not None:
        if compile_sampling:
            compile_for_sampling(pipeline.unet)
        with sampling_autocast(pipeline.device, mixed_precision):
            samples = generate(pipeline, num_samples, sampler, steps, seed, batch_size).float()
    if grid_path is not None and (digits or feature_model is not None):
        image_grid(pipeline.numpy_to_pil(samples[:GRID_IMAGES].permute(0, 2, 3, 1).numpy())).save(grid_path)
        results["samples_grid"] = str(grid_path)
    if feature_model is not None:
        results["feature_model"] = {**sampling, **encoder_sample_quality(samples, (all_images + 1) / 2,
                                                                          feature_model, seed)}
    if digits:
        quality = digit_sample_quality(samples, value_range=(0.0, 1.0), seed=seed)
        results["sample_quality"] = {**sampling, **quality}
        if is_digit_conditional(pipeline):  # the samples above are its unconditional ones (the null label)
            results["conditional"] = conditional_evaluation(pipeline, num_bound_images, num_samples, sampler, steps,
                                                            seed, batch_size, progress, bound_steps)
        # The floor and ceiling at the same number of images: classifier FID grows as n shrinks.
        results["reference_rows"] = [
            {k: row[k] for k in ("name", "kind", "classifier_fid", "kid_mean", "kid_std")}
            for row in reference_rows(num_images=num_samples, seed=seed)
        ]
    else:
        results["sample_quality"] = None
        if feature_model is None:
            results["note"] = NO_QUALITY_METRIC
    return results


def format_results(results: dict[str, Any]) -> str:
    """The results as a Markdown table."""
    bound = results["bound"]
    rows = [
        ("bits/dim (variational bound, lower is better)",
         f"{bound['bits_per_dim']:.3f} ± {bound['bits_per_dim_std_error']:.3f} on {bound['num_images']} images"),
        ("  prior term L_T", f"{bound['prior_bits_per_dim']:.2e}"),
        ("  decoder term L_0", f"{bound['decoder_bits_per_dim']:.3f}"),
    ]
    if bound.get("num_steps") is not None:
        rows.insert(1, ("  chain", f"{bound['num_steps']} steps"))
    references = results.get("bound_references")
    if references:
        uniform, histogram = references["uniform_over_used_levels"], references["per_pixel_histogram"]
        rows += [
            (f"  reference: uniform over the {uniform['num_levels']} used levels", f"{uniform['bits_per_dim']:.3f}"),
            ("  reference: per-pixel histogram (no correlations)",
             f"{histogram['bits_per_dim']:.3f} ± {histogram['bits_per_dim_std_error']:.3f}"),
        ]
    quality = results.get("sample_quality")
    if quality:
        sampling = f"{quality['num_images']} samples, {quality['sampler']} {quality['num_inference_steps']} steps"
        if quality.get("mixed_precision", "no") != "no":
            sampling += f", {quality['mixed_precision']} autocast"
        if quality.get("compiled"):
            sampling += ", compiled U-Net"
        rows += [
            ("classifier FID (digit-classifier features; not FID)", f"{quality['classifier_fid']:.3f} ({sampling})"),
            ("KID (digit-classifier features)", f"{quality['kid_mean']:.4f} ± {quality['kid_std']:.4f}"),
            ("predicted class histogram 0–9", " ".join(str(n) for n in quality["class_histogram"])),
        ]
    features = results.get("feature_model")
    if features:
        sampling = f"{features['num_images']} samples, {features['sampler']} {features['num_inference_steps']} steps"
        rows += [
            (f"FD ({features['model']} features)", f"{features['fd']:.3f} ({sampling}, "
                                                           f"vs {features['num_reference']} images)"),
            (f"KID ({features['model']} features)", f"{features['kid_mean']:.4f} ± {features['kid_std']:.4f}"),
        ]
    lines = [f"Evaluation on {results['dataset']}", "", "| metric | value |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    if results.get("reference_rows"):
        lines += ["", f"Reference rows, same code and number of images ({quality['num_images']}):", "",
                  "| images | classifier FID | KID |", "|---|---|---|"]
        lines += [f"| {row['name']} ({row['kind']}) | {row['classifier_fid']:.3f} | "
                  f"{row['kid_mean']:.4f} ± {row['kid_std']:.4f} |" for row in results["reference_rows"]]
    if features:
        lines += ["", f"Reference rows in {features['model']} features, same code and reference images:", "",
                  "| images | n | FD | KID |", "|---|---:|---:|---|"]
        lines += [f"| {row['name']} ({row['kind']}) | {row['num_images']} | {row['fd']:.3f} | "
                  f"{row['kid_mean']:.4f} ± {row['kid_std']:.4f} |" for row in features["reference_rows"]]
    if results.get("conditional"):
        lines += format_conditional(results["conditional"])
    if results.get("note"):
        lines += ["", results["note"]]
    if results.get("samples_grid"):
        lines += ["", f"Samples: `{Path(results['samples_grid']).name}`"]
    return "\n".join(lines)


def evaluate_folder(pipeline_path: str, update_card: bool = False, output_json: str | None = None,
                    pipeline: DDPMFromScratchPipeline | None = None, **options) -> dict:
    """Evaluate the pipeline at `pipeline_path` (or `pipeline`, loaded from there), write the JSON, optionally
    update its model card."""
    if pipeline is None:
        pipeline = load_pipeline(pipeline_path)
    folder = Path(pipeline_path)
    json_path = Path(output_json) if output_json else (folder if folder.is_dir() else Path(".")) / "evaluation.json"
    grid_path = json_path.with_name(json_path.stem + "_samples.png")
    results = evaluate_pipeline(pipeline, grid_path=grid_path, **options)
    results["pipeline"] = str(pipeline_path)
    table = format_results(results)
    json_path.write_text(json.dumps(results, indent=2))
    if update_card:
        card = folder / "README.md"
        template = card.read_text() if card.is_file() else "---\nlibrary_name: diffusers\n---\n"
        card.write_text(update_model_card(template, results, table, model_name=folder.resolve().name))
    print(table)
    print(f"\nResults in {json_path}" + (f"; model card {folder / 'README.md'} updated." if update_card else "."),
          file=sys.stderr)
    return results
