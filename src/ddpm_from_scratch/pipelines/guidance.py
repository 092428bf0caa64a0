# Copyright 2025 The ddpm-from-scratch authors. Licensed under the Apache License, Version 2.0.
"""Classifier-free guidance (Ho & Salimans 2021): one class-conditional network, two branches, one call.

The network learned ε(x_t, c) and, with the label dropped to the null label ∅, ε(x_t, ∅). Guidance samples with

    ε̃(x_t, c) = ε(x_t, ∅) + s · (ε(x_t, c) − ε(x_t, ∅)),

s the guidance scale (diffusers' ``guidance_scale``; s = 1 is the conditional model itself, s = 0 the unconditional
one, s > 1 trades diversity for fidelity). With a learned variance only ε is mixed; the variance channels come
from the conditional branch, as GLIDE does (Nichol et al. 2022). Shipped beside ``pipeline.py``: it imports torch only.
"""

from __future__ import annotations

import math

import torch


def check_guidance_scale(guidance_scale: float) -> float:
    """Refuse a guidance scale that is not a finite number ≥ 0, naming it."""
    if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, (int, float)) or not (
        math.isfinite(guidance_scale) and guidance_scale >= 0
    ):
        raise ValueError(f"`guidance_scale` must be a finite number ≥ 0, got {guidance_scale!r}.")
    return float(guidance_scale)


def guided_output(conditional: torch.Tensor, unconditional: torch.Tensor, guidance_scale: float,
                  channels: int) -> torch.Tensor:
    """ε̃ = ε_∅ + s (ε_c − ε_∅) on the first ``channels`` (ε); any further channels (a learned variance) are the
    conditional branch's."""
    eps = unconditional[:, :channels] + guidance_scale * (conditional[:, :channels] - unconditional[:, :channels])
    if conditional.shape[1] == channels:
        return eps
    return torch.cat([eps, conditional[:, channels:]], dim=1)


def guided_model_output(unet, sample: torch.Tensor, timestep, class_labels: torch.Tensor | None, null_label: int,
                        guidance_scale: float) -> torch.Tensor:
    """The network's output for the reverse step at (x_t, t) given ``class_labels``.

    None: the unconditional model ε(x_t, ∅). Otherwise ε(x_t, c) at s = 1, and at any other s both branches in one
    batched call (the batch stacked twice, labels c then ∅), combined by `guided_output`.
    """
    batch_size, channels = sample.shape[0], sample.shape[1]
    if class_labels is None:
        labels = torch.full((batch_size,), null_label, dtype=torch.long, device=sample.device)
        return unet(sample, timestep, class_labels=labels).sample
    if guidance_scale == 1.0:
        return unet(sample, timestep, class_labels=class_labels).sample
    null = torch.full_like(class_labels, null_label)
    both = unet(torch.cat([sample, sample]), timestep, class_labels=torch.cat([class_labels, null])).sample
    conditional, unconditional = both.chunk(2)
    return guided_output(conditional, unconditional, guidance_scale, channels)
