"""How well a class-conditional digits model draws the digit asked for, per guidance scale (issue 20).

For each guidance scale s, `num_samples` samples with the classes asked for in turn (0, 1, …, 9, 0, …): the
package's digit classifier's accuracy on the label asked for (and per class), the classifier FID / KID of all of them
against the held-out digits, and the predicted-class histogram. Next to it, the bound of the held-out digits given
their own labels, −log p_θ(x_0 | c). Ho & Salimans (2021) report the trade-off this measures: fidelity (accuracy)
rises with s while diversity (FID) first improves, then falls.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch

from .digit_classifier import load_digit_classifier, load_digits_tensors, predict
from .metrics import digit_sample_quality
from ..sampling.samplers import generate

GUIDANCE_SCALES = (1.0, 1.5, 2.0, 3.0, 5.0)
DIGIT_NAMES = [str(d) for d in range(10)]


def is_digit_conditional(pipeline) -> bool:
    """Whether `pipeline` is conditioned on the digits 0–9 by name, so that class index k is the digit k."""
    names = getattr(pipeline, "id2label", None)
    return getattr(pipeline, "num_classes", None) == 10 and names is not None and [
        names.get(k) for k in range(10)] == DIGIT_NAMES


def requested_labels(num_samples: int, num_classes: int) -> list[int]:
    """0, 1, …, K−1, 0, 1, …: every class asked for equally often (to within one)."""
    return [i % num_classes for i in range(num_samples)]


def guided_sample_quality(pipeline, num_samples: int, sampler: str, num_inference_steps: int, seed: int,
                          batch_size: int, guidance_scales: Sequence[float] = GUIDANCE_SCALES) -> list[dict[str, Any]]:
    """One row per guidance scale: accuracy on the label asked for, per-class accuracy, classifier FID, KID and the
    class histogram of `num_samples` samples (seeds ``seed + i`` at every scale, so the rows differ only by s)."""
    classifier = load_digit_classifier()
    labels = requested_labels(num_samples, pipeline.num_classes)
    asked = torch.tensor(labels)
    rows = []
    for scale in guidance_scales:
        samples = generate(pipeline, num_samples, sampler, num_inference_steps, seed, batch_size, labels,
                           float(scale)).float()
        predicted = predict(classifier, samples * 2 - 1)
        correct = (predicted == asked).double()
        quality = digit_sample_quality(samples, classifier=classifier, value_range=(0.0, 1.0), seed=seed)
        rows.append({
            "guidance_scale": float(scale),
            "accuracy": correct.mean().item(),
            "accuracy_std_error": math.sqrt(correct.mean().item() * (1 - correct.mean().item()) / num_samples),
            "per_class_accuracy": [correct[asked == k].mean().item() for k in range(pipeline.num_classes)],
            **{k: quality[k] for k in ("classifier_fid", "kid_mean", "kid_std", "class_histogram",
                                       "class_tv_distance", "num_images")},
        })
    return rows


def bound_given_labels(pipeline, images: torch.Tensor, labels: torch.Tensor, seed: int, progress: bool,
                       num_inference_steps: int | None = None) -> dict[str, Any]:
    """Mean bits/dim of −log p_θ(x_0 | c) for the images with their own labels, with its standard error."""
    bound = pipeline.variational_bound(images, generator=torch.Generator().manual_seed(seed), progress=progress,
                                       num_inference_steps=num_inference_steps, class_labels=labels.tolist())
    bpd = bound.bits_per_dim
    return {"num_images": len(bpd), "bits_per_dim": bpd.mean().item(),
            "bits_per_dim_std_error": bpd.std().item() / math.sqrt(len(bpd)) if len(bpd) > 1 else float("nan")}


def conditional_evaluation(pipeline, num_bound_images: int | None, num_samples: int, sampler: str,
                           num_inference_steps: int, seed: int, batch_size: int, progress: bool,
                           bound_steps: int | None = None,
                           guidance_scales: Sequence[float] = GUIDANCE_SCALES) -> dict[str, Any]:
    """The conditional digits model's results: the bound given the label and the rows of `guided_sample_quality`."""
    images, labels = load_digits_tensors("test")
    if num_bound_images is not None:
        images, labels = images[:num_bound_images], labels[:num_bound_images]
    return {
        "bound_given_label": bound_given_labels(pipeline, images, labels, seed, progress, bound_steps),
        "sampler": sampler, "num_inference_steps": num_inference_steps,
        "guidance": guided_sample_quality(pipeline, num_samples, sampler, num_inference_steps, seed, batch_size,
                                          guidance_scales),
    }


def format_conditional(conditional: dict[str, Any]) -> list[str]:
    """The conditional results as Markdown lines: the bound given the label, then a row per guidance scale."""
    bound = conditional["bound_given_label"]
    lines = ["", f"Class-conditional: bits/dim given the label {bound['bits_per_dim']:.3f} ± "
                 f"{bound['bits_per_dim_std_error']:.3f} on {bound['num_images']} held-out digits. Samples asked for "
                 f"each digit in turn ({conditional['sampler']} {conditional['num_inference_steps']} steps):", "",
             "| guidance scale | accuracy on the label asked for | classifier FID | KID | predicted class histogram 0–9 |",
             "|---:|---:|---:|---|---|"]
    for row in conditional["guidance"]:
        lines.append(f"| {row['guidance_scale']:g} | {row['accuracy']:.3f} ± {row['accuracy_std_error']:.3f} | "
                     f"{row['classifier_fid']:.3f} | {row['kid_mean']:.4f} ± {row['kid_std']:.4f} | "
                     f"{' '.join(str(n) for n in row['class_histogram'])} |")
    return lines
