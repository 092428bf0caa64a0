# Copyright 2025 The ddpm-from-scratch authors. Licensed under the Apache License, Version 2.0.
"""A small denoising network for vectors: binary sequences and 2-D points (Sohl-Dickstein et al.'s toy problems).

One class, two uses, set by its config:

* binary sequences (``out_features = in_features``): the outputs are logits, one per bit, that
  `BinomialDiffusionScheduler` reads as P(x_0 = 1 | x_t) (or as f_b itself);
* 2-D points with a learned covariance (``out_features = 2 · in_features``): ε_θ(x_t, t) and the
  interpolation v of Nichol & Dhariwal's ``learned_range`` variance, which `DDPMFromScratchScheduler`
  reads like the image U-Net's 2C channels. ``learned_range`` rather than Sohl-Dickstein's f_Σ readout
  (a sigmoid between β̃ and β): the same family of variances, and the package's bound, losses and
  samplers already handle it, so the toy uses the very code the image models do.

This module imports only torch, diffusers and this package's `unet` (for the timestep embedding).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from torch import nn

from .unet import TimestepEmbedding


@dataclass
class ToyDenoiserOutput(BaseOutput):
    """Output of [`ToyDenoiser`]: ``sample`` of shape ``(B, out_features)``."""

    sample: torch.Tensor


class ResidualMLPBlock(nn.Module):
    """h + W₂ SiLU((1 + a(t)) ⊙ W₁ LayerNorm(h) + b(t)): a residual MLP block, the timestep scaling and shifting
    its features (FiLM). The scale matters here: the exact denoiser's weights on x_t grow with the signal
    ᾱ_t/(1 − ᾱ_t), a product of t and x_t that an added embedding alone does not give."""

    def __init__(self, hidden_size: int, embedding_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden_size)
        self.linear_1 = nn.Linear(hidden_size, hidden_size)
        self.time = nn.Linear(embedding_dim, 2 * hidden_size)
        self.linear_2 = nn.Linear(hidden_size, hidden_size)

    def forward(self, hidden: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        scale, shift = self.time(embedding).chunk(2, dim=-1)
        inner = F.silu(self.linear_1(self.norm(hidden)) * (1 + scale) + shift)
        return hidden + self.linear_2(inner)


class ToyDenoiser(ModelMixin, ConfigMixin):
    r"""An MLP with a sinusoidal timestep embedding, for vectors of `in_features` numbers.

    Args:
        in_features (`int`): the length of a sample (20 for the heartbeat, 2 for points).
        out_features (`int`, *optional*): outputs per sample; defaults to `in_features` (2·in_features for a
            learned variance).
        hidden_size (`int`, defaults to 256): width of the residual blocks.
        num_blocks (`int`, defaults to 4): residual blocks.
        embedding_dim (`int`, defaults to 128): width of the timestep embedding.
    """

    @register_to_config
    def __init__(self, in_features: int, out_features: int | None = None, hidden_size: int = 256,
                 num_blocks: int = 4, embedding_dim: int = 128):
        super().__init__()
        for name, value in (("in_features", in_features), ("hidden_size", hidden_size), ("num_blocks", num_blocks),
                            ("embedding_dim", embedding_dim)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        out_features = out_features or in_features
        self.time_embedding = TimestepEmbedding(embedding_dim, embedding_dim)
        self.input = nn.Linear(in_features, hidden_size)
        self.blocks = nn.ModuleList(ResidualMLPBlock(hidden_size, embedding_dim) for _ in range(num_blocks))
        self.norm_out = nn.LayerNorm(hidden_size)
        self.output = nn.Linear(hidden_size, out_features)

    @property
    def learns_variance(self) -> bool:
        """Whether the output carries a variance interpolation v after ε (2·in_features outputs)."""
        return (self.config.out_features or self.config.in_features) == 2 * self.config.in_features

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor | int, return_dict: bool = True):
        """``(B, in_features)`` samples at timestep(s) t → ``(B, out_features)``."""
        if sample.ndim != 2 or sample.shape[1] != self.config.in_features:
            raise ValueError(f"sample must have shape (B, {self.config.in_features}), got {tuple(sample.shape)}")
        timesteps = torch.as_tensor(timestep, device=sample.device).reshape(-1).expand(sample.shape[0])
        embedding = self.time_embedding(timesteps, self.input.weight.dtype)
        hidden = self.input(sample.to(self.input.weight.dtype))
        for block in self.blocks:
            hidden = block(hidden, embedding)
        output = self.output(F.silu(self.norm_out(hidden)))
        return ToyDenoiserOutput(sample=output) if return_dict else (output,)
