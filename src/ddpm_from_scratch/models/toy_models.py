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

This module imports only torch and diffusers, so that it ships alone in a saved folder's ``unet/`` (diffusers
downloads a model folder's weights, config and named code file, nothing else beside it). The timestep embedding
is therefore a copy of the U-Net's, marked ``# Copied from``; tests/test_copies.py checks the copies still match.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from torch import nn


# Copied from ddpm_from_scratch.models.unet.sinusoidal_embedding
def sinusoidal_embedding(timesteps: torch.Tensor, frequencies: torch.Tensor, flip_sin_to_cos: bool = False) -> torch.Tensor:
    """The Transformer's sinusoidal position embedding, applied to diffusion timesteps.

    ``emb[b] = [sin(t_b ω_0), …, sin(t_b ω_{d/2-1}), cos(t_b ω_0), …, cos(t_b ω_{d/2-1})]``
    with ``ω_i = 10000^(-i / (d/2 - 1))`` (the DDPM code's convention: sines first, and
    the last frequency exactly 1/10000).

    Args:
        timesteps: ``(B,)`` timesteps, integer or fractional.
        frequencies: ``(d/2,)`` the ω_i, float32.

        flip_sin_to_cos: put the cosines first (diffusers' ``UNet2DModel`` default; DDPM puts sines first).

    Returns:
        ``(B, d)`` float32 embedding (``d = 2 · len(frequencies)``).
    """
    # Always float32: at t ≈ 1000 the phases need more precision than fp16/bf16 have.
    angles = timesteps.to(torch.float32)[:, None] * frequencies[None, :]
    halves = [torch.cos(angles), torch.sin(angles)] if flip_sin_to_cos else [torch.sin(angles), torch.cos(angles)]
    return torch.cat(halves, dim=-1)


# Copied from ddpm_from_scratch.models.unet.TimestepEmbedding
class TimestepEmbedding(nn.Module):
    """t ↦ MLP(sinusoidal(t)): the conditioning vector every residual block receives.

    The embedding has ``channels`` dimensions; the MLP (Linear, SiLU, Linear) maps it
    to ``embedding_dim`` (4 × base channels in DDPM).
    """

    def __init__(self, channels: int, embedding_dim: int, flip_sin_to_cos: bool = False, freq_shift: float = 1.0):
        super().__init__()
        self.channels = channels
        self.flip_sin_to_cos = flip_sin_to_cos
        self.freq_shift = freq_shift
        # The frequencies depend only on the width: compute them once. Not persistent —
        # they are not learned and do not belong in a checkpoint.
        self.register_buffer("frequencies", self._frequencies(channels, freq_shift=freq_shift), persistent=False)
        self.linear_1 = nn.Linear(channels, embedding_dim)
        self.linear_2 = nn.Linear(embedding_dim, embedding_dim)

    @staticmethod
    def _frequencies(channels: int, device: Optional[torch.device] = None, freq_shift: float = 1.0) -> torch.Tensor:
        half = channels // 2
        # ω_i = 10000^(-i / (half - s)), i = 0 … half-1, s = freq_shift (DDPM: 1, so the last is exactly
        # 1/10000; UNet2DModel's default: 0), worked out in float64 and rounded once to float32 (the
        # max(…, 1) guards half = s).
        exponent = torch.arange(half, dtype=torch.float64) / max(half - freq_shift, 1)
        return torch.exp(-math.log(10000.0) * exponent).to(device=device, dtype=torch.float32)

    def _apply(self, fn, *args, **kwargs):
        # `.to(device)`, `.half()`, … also cast buffers. Re-create the frequencies in
        # float32 on the new device instead: rounded to fp16 they would shift the phase
        # of large t by a sizeable fraction of a radian.
        super()._apply(fn, *args, **kwargs)
        self.frequencies = self._frequencies(self.channels, device=self.frequencies.device, freq_shift=self.freq_shift)
        return self

    def forward(self, timesteps: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """``(B,)`` timesteps → ``(B, embedding_dim)`` conditioning vectors in ``dtype``."""
        emb = sinusoidal_embedding(timesteps, self.frequencies, self.flip_sin_to_cos)
        if self.channels % 2 == 1:  # odd width: one zero column, so the shapes still fit
            emb = F.pad(emb, (0, 1))
        emb = emb.to(dtype)
        return self.linear_2(F.silu(self.linear_1(emb)))


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
