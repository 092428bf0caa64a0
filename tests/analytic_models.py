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


class HeartbeatBayesDenoiser(ModelMixin, ConfigMixin):
    r"""The exact P(x_0 = 1 | x_t) of each bit for data uniform over a few binary patterns, as logits.

    P(pattern k | x_t) ∝ Π_i q(x_t^i | x_0^i = pattern_k^i) (the forward chain is independent per bit), and
    P(x_0^i = 1 | x_t) = Σ_k P(k | x_t) pattern_k^i. With `BinomialDiffusionScheduler`'s ``prediction_type=
    "sample"`` this gives each bit's exact reverse marginal, the best a factorised reverse kernel can do.
    """

    @register_to_config
    def __init__(self, patterns: list, alphas_cumprod: list, stationary_probability: float, in_features: int):
        super().__init__()
        self.register_buffer("pattern_table", torch.tensor(patterns, dtype=torch.float64), persistent=False)
        self.register_buffer("table", torch.tensor(alphas_cumprod, dtype=torch.float64), persistent=False)
        self.anchor = torch.nn.Parameter(torch.zeros(()))

    def forward(self, sample: torch.Tensor, timestep, return_dict: bool = True):
        t = torch.as_tensor(timestep).reshape(-1).long().expand(sample.shape[0])
        alpha_bar = self.table[t][:, None, None]
        p = self.config.stationary_probability
        q_one = self.pattern_table[None] * alpha_bar + p * (1 - alpha_bar)  # (B, K, L): q(x_t^i = 1 | pattern k)
        x = sample.double()[:, None, :]
        log_likelihood = (x * torch.log(q_one) + (1 - x) * torch.log1p(-q_one)).sum(-1)
        probability = (torch.softmax(log_likelihood, -1) @ self.pattern_table).clamp(1e-12, 1 - 1e-12)
        logits = (torch.log(probability) - torch.log1p(-probability)).to(sample.dtype)
        return UNet2DOutput(sample=logits) if return_dict else (logits,)


class GaussianPointOptimalModel(ModelMixin, ConfigMixin):
    r"""The exact reverse kernel for data x_0 ~ N(m, s² I) in `in_features` dimensions, for variance_type "learned".

    Outputs [E[ε | x_t], Var(x_{t−1} | x_t)]: with x_t = √ᾱ x_0 + √(1−ᾱ) ε jointly Gaussian,
    E[ε | x_t] = √(1−ᾱ)(x_t − √ᾱ m)/(ᾱ s² + 1 − ᾱ), Var(x_0 | x_t) = s²(1 − ᾱ)/(ᾱ s² + 1 − ᾱ), and
    Var(x_{t−1} | x_t) = β̃_t + c_t² Var(x_0 | x_t), c_t = √ᾱ_{t−1} β_t/(1 − ᾱ_t) the posterior mean's x_0
    coefficient (β̃_0 = 0, c_0 = 1 at the last step). The ᾱ table is the chain's, computed by the test.
    """

    @register_to_config
    def __init__(self, mean: float, std: float, alphas_cumprod: list, in_features: int = 2):
        super().__init__()
        self.register_buffer("table", torch.tensor(alphas_cumprod, dtype=torch.float64), persistent=False)
        self.anchor = torch.nn.Parameter(torch.zeros(()))

    def forward(self, sample: torch.Tensor, timestep, return_dict: bool = True):
        t = torch.as_tensor(timestep).reshape(-1).long().expand(sample.shape[0])
        abar = self.table[t][:, None]
        abar_prev = torch.where(t > 0, self.table[(t - 1).clamp(min=0)], torch.ones_like(abar[:, 0]))[:, None]
        beta = 1 - abar / abar_prev
        m, s2 = self.config.mean, self.config.std ** 2
        x = sample.double()
        eps = (1 - abar).sqrt() * (x - abar.sqrt() * m) / (abar * s2 + 1 - abar)
        var_x0 = s2 * (1 - abar) / (abar * s2 + 1 - abar)
        tilde_beta = (1 - abar_prev) / (1 - abar) * beta
        coefficient = abar_prev.sqrt() * beta / (1 - abar)
        variance = (tilde_beta + coefficient ** 2 * var_x0).expand_as(x)
        output = torch.cat([eps, variance], dim=1).to(sample.dtype)
        return UNet2DOutput(sample=output) if return_dict else (output,)
