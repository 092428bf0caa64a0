# Copyright 2026 The ddpm-from-scratch authors. Licensed under the Apache License, Version 2.0.
"""Trivial models of the same images, in the same 8-bit space as the bound: what a bits/dim must beat to mean anything.

Both are fitted on training images and scored on the evaluation images, −log₂ p per pixel, averaged over a
image's C·H·W dimensions, exactly as `likelihood.variational_bound` reports bits/dim:

- `uniform_levels_bits_per_dim`: every pixel uniform over the 8-bit levels the training images use (for the
  digits, the 17 levels round(v · 255/16): log₂ 17 = 4.087 bits/dim);
- `pixel_histogram_bits_per_dim`: each pixel (channel, row, column) its own histogram of those levels over the
  training images, add-½ smoothed (Krichevsky–Trofimov), so no used level gets probability 0. It ignores every
  correlation between pixels.

A held-out value at a level no training image uses would get probability 0 from both; each model therefore mixes
in ``escape`` = 1e-4 of probability spread uniformly over all 256 levels, which costs < 0.0002 bits on used levels.
"""

from __future__ import annotations

import math

import torch

from ..likelihood import check_images

NUM_LEVELS = 256
ESCAPE = 1e-4
SMOOTHING = 0.5


def levels(images: torch.Tensor) -> torch.Tensor:
    """The 8-bit level k ∈ {0..255} of each value k/127.5 − 1 (after `likelihood.check_images`), long."""
    return torch.round((check_images(images).double() + 1) * 127.5).long()


def _bits_per_dim(probabilities: torch.Tensor) -> torch.Tensor:
    return -torch.log2(probabilities).flatten(1).mean(1)


def _with_escape(probabilities: torch.Tensor, escape: float) -> torch.Tensor:
    return (1 - escape) * probabilities + escape / NUM_LEVELS


def uniform_levels_bits_per_dim(train_images: torch.Tensor, images: torch.Tensor,
                                escape: float = ESCAPE) -> torch.Tensor:
    """Bits/dim of ``images`` ``(B,)`` when every pixel is uniform over the levels ``train_images`` use."""
    train, test = levels(train_images), levels(images)
    used = torch.zeros(NUM_LEVELS, dtype=torch.bool)
    used[train.flatten()] = True
    p = torch.where(used, 1.0 / used.sum(), 0.0).double()
    return _bits_per_dim(_with_escape(p[test], escape))


def pixel_histogram_bits_per_dim(train_images: torch.Tensor, images: torch.Tensor, smoothing: float = SMOOTHING,
                                 escape: float = ESCAPE) -> torch.Tensor:
    """Bits/dim of ``images`` ``(B,)`` under one histogram per pixel over the levels ``train_images`` use:

        p_i(k) = (n_i(k) + ½) / (N + ½ · L)   for the L used levels k, n_i(k) = training images with level k at pixel i.

    ``images`` must have the training images' shape (C, H, W).
    """
    train, test = levels(train_images), levels(images)
    if train.shape[1:] != test.shape[1:]:
        raise ValueError(f"the per-pixel histogram needs images of the training images' shape "
                         f"{tuple(train.shape[1:])}, got {tuple(test.shape[1:])}")
    used = torch.zeros(NUM_LEVELS, dtype=torch.bool)
    used[train.flatten()] = True
    flat = train.flatten(1)  # (N, D)
    counts = torch.zeros(flat.shape[1], NUM_LEVELS, dtype=torch.float64)
    counts.scatter_add_(1, flat.T, torch.ones_like(flat.T, dtype=torch.float64))
    counts = torch.where(used, counts + smoothing, 0.0)
    histogram = counts / counts.sum(1, keepdim=True)  # (D, 256)
    p = histogram.gather(1, test.flatten(1).T).T  # (B, D): p_i(level of image b at pixel i)
    return _bits_per_dim(_with_escape(p, escape))


def reference_bounds(train_images: torch.Tensor, images: torch.Tensor) -> dict[str, dict[str, float]]:
    """Both reference models of ``images`` fitted on ``train_images``: {name: {"bits_per_dim", "bits_per_dim_std_error",
    "num_levels"}}, for the evaluation's JSON and the model card."""
    rows = {}
    for name, per_image in (("uniform_over_used_levels", uniform_levels_bits_per_dim(train_images, images)),
                            ("per_pixel_histogram", pixel_histogram_bits_per_dim(train_images, images))):
        rows[name] = {
            "bits_per_dim": per_image.mean().item(),
            "bits_per_dim_std_error": per_image.std().item() / math.sqrt(len(per_image)) if len(per_image) > 1
            else float("nan"),
        }
    used = torch.unique(levels(train_images)).numel()
    rows["uniform_over_used_levels"]["num_levels"] = used
    return rows
