"""Noise predictors whose answers are known in closed form, for tests that need no training.

They follow the `forward(sample, timestep).sample` contract of a diffusers U-Net, so a
pipeline or the likelihood bound can use them in place of a trained network.
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.models.unets.unet_2d import UNet2DOutput


def linear_alphas_cumprod(num_train_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02):
    """ᾱ_t of the linear schedule, in float64, computed here rather than by the package under test."""
    betas = np.linspace(beta_start, beta_end, num_train_timesteps, dtype=np.float64)
    return np.cumprod(1.0 - betas)


class GaussianOptimalDenoiser(ModelMixin, ConfigMixin):
    r"""The Bayes-optimal ε-predictor for data x_0 ~ N(m, s² I) under the linear schedule.

    Since x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε is jointly Gaussian with ε,
    E[ε | x_t] = √(1−ᾱ_t) · (x_t − √ᾱ_t m) / (ᾱ_t s² + 1 − ᾱ_t).
    Fractional timesteps (Euler's) read ᾱ off a linear interpolation of the table.
    """

    @register_to_config
    def __init__(
        self,
        mean: float = 0.15,
        std: float = 0.2,
        sample_size: int = 16,
        in_channels: int = 1,
        num_train_timesteps: int = 1000,
    ):
        super().__init__()
        table = torch.tensor(linear_alphas_cumprod(num_train_timesteps), dtype=torch.float64)
        self.register_buffer("alphas_cumprod", table, persistent=False)
        # ModelMixin infers dtype and device from the parameters.
        self.anchor = torch.nn.Parameter(torch.zeros(()))

    def forward(self, sample: torch.Tensor, timestep, return_dict: bool = True):
        t = torch.as_tensor(timestep, dtype=torch.float64).reshape(-1)
        low = t.floor().long().clamp(0, len(self.alphas_cumprod) - 1)
        high = (low + 1).clamp(max=len(self.alphas_cumprod) - 1)
        frac = t - low
        abar = (1 - frac) * self.alphas_cumprod[low] + frac * self.alphas_cumprod[high]
        abar = abar.reshape(-1, *([1] * (sample.ndim - 1)))
        m, s = self.config.mean, self.config.std
        x = sample.double()
        eps = (1 - abar).sqrt() * (x - abar.sqrt() * m) / (abar * s**2 + 1 - abar)
        eps = eps.to(sample.dtype)
        return UNet2DOutput(sample=eps) if return_dict else (eps,)
