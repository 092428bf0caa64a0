# Copyright 2026 The ddpm-from-scratch authors. Licensed under the Apache License, Version 2.0.
"""Analytic-DPM (Bao, Li, Zhu & Zhang 2022): the optimal reverse variance of a trained ε-model, without training.

For the reverse step t → t' of any chain (t' = t − 1 on the training chain, the next timestep of a respaced one),
with ᾱ_t, ᾱ_{t'}, β_{t|t'} = 1 − ᾱ_t/ᾱ_{t'}, β̄_t = 1 − ᾱ_t, the posterior variance β̃_{t|t'} = (1 − ᾱ_{t'})/β̄_t ·
β_{t|t'} and Γ_t = E_{x_0, ε} ‖ε_θ(x_t, t)‖² / d, the variance that minimises the bound's KL term is

    σ*²_{t|t'} = β̃_{t|t'} + (ᾱ_{t'} β_{t|t'}² / β̄_t²) · clip((β̄_t / ᾱ_t)(1 − Γ_t), 0, 1)          (Bao et al., eq. 7)

Unclipped it is (β_{t|t'}/α_{t|t'})(1 − β_{t|t'} Γ_t / β̄_t); the clip at 0 is their lower bound β̃, the clip at 1
their bound for data in [−1, 1] (Theorem 2, ((b − a)/2)² = 1). The step into x_0 (t' = −1) keeps β̃ (0, clamped at
1e-20 as the parent does), as the paper's code does: the last step returns the mean.

One table Γ_0..Γ_{T−1} over the training timesteps serves every respaced chain; it is estimated from training
images by ``ddpm_from_scratch.analytic_variance.estimate_gamma`` and stored in this scheduler's config, so it saves,
loads and pushes with the pipeline. This module is shipped inside Hub repositories beside ``scheduling_ddpm.py``;
it imports only numpy, torch, diffusers and that sibling.
"""

from typing import Sequence

import numpy as np
import torch
from diffusers.configuration_utils import register_to_config
# Imported for diffusers' loader, which looks a component's base class up in the component's own module.
from diffusers.schedulers.scheduling_utils import SchedulerMixin  # noqa: F401

from .scheduling_ddpm import DDPMFromScratchScheduler, Timesteps, _as_index, _chain_coefficients

# The step into x_0 keeps the posterior variance β̃ = 0, clamped as the parent clamps it.
_MIN_VARIANCE = 1e-20


def analytic_variance(
    alphas_cumprod: torch.Tensor, alphas_cumprod_prev: torch.Tensor, gamma: torch.Tensor
) -> torch.Tensor:
    """σ*² of the step t → t' elementwise, from ᾱ_t, ᾱ_{t'} (1 for t' = −1) and Γ_t (see the module docstring).

    At t' = −1 (ᾱ_{t'} = 1) it returns β̃ = 0 clamped to 1e-20: the decoder step keeps the posterior variance.
    """
    coefficients = _chain_coefficients(alphas_cumprod, alphas_cumprod_prev)
    one_minus_ac = 1 - alphas_cumprod
    beta = coefficients["betas"]
    correction = (alphas_cumprod_prev * beta**2 / one_minus_ac**2) * torch.clamp(
        one_minus_ac / alphas_cumprod * (1 - gamma), 0, 1)
    variance = coefficients["posterior_variance"] + correction
    into_data = alphas_cumprod_prev >= 1
    return torch.where(into_data, coefficients["posterior_variance_clamped"], variance)


class AnalyticDPMScheduler(DDPMFromScratchScheduler):
    r"""DDPM ancestral sampling with Analytic-DPM's optimal reverse variance σ*² (Bao et al. 2022).

    Everything is [`DDPMFromScratchScheduler`]'s (the β schedule, the forward process, the posterior, the mean μ_θ,
    respacing with ``set_timesteps``) except the reverse step's variance, which is σ*²_{t|t'} of
    [`analytic_variance`] for the step t → t' of the current chain, from the stored table ``gamma``. The bound
    (``ddpm_from_scratch.likelihood.variational_bound``) reads the same σ*² through `model_variance`; its decoder
    keeps β̃ of the chain's step into its last timestep, as for ``variance_type="fixed_small"``.

    Args:
        gamma (`list[float]`):
            Γ_t = E ‖ε_θ(x_t, t)‖² / d for t = 0..T−1 (length ``num_train_timesteps``, finite), the network's
            mean squared ε-prediction on training images, or the estimate 1 − E‖ε − ε_θ‖²/d of the same number
            (``analytic_variance.estimate_gamma``). Γ_t < 1 for a good ε-model: it cannot predict all of the
            unit-variance noise.
        variance_type (`str`, defaults to ``"fixed_small"``):
            Must be ``"fixed_small"``: σ*² replaces the reverse variance, β̃ (its lower bound) is what plain
            diffusers' ``DDPMScheduler`` falls back to with this config, and the decoder's convention.
        prediction_type (`str`, defaults to ``"epsilon"``):
            Must be ``"epsilon"``: Γ is a moment of the predicted noise.
        **others: as [`DDPMFromScratchScheduler`].
    """

    @register_to_config
    def __init__(
        self,
        gamma: Sequence[float] | np.ndarray | None = None,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        trained_betas: np.ndarray | list[float] | None = None,
        variance_type: str = "fixed_small",
        clip_sample: bool = True,
        prediction_type: str = "epsilon",
        thresholding: bool = False,
        dynamic_thresholding_ratio: float = 0.995,
        clip_sample_range: float = 1.0,
        sample_max_value: float = 1.0,
        timestep_spacing: str = "leading",
        steps_offset: int = 0,
        rescale_betas_zero_snr: bool = False,
    ):
        self._gamma = check_gamma(gamma, num_train_timesteps)
        self.register_to_config(gamma=self._gamma.tolist())  # JSON-ready whatever array type it came as
        if prediction_type != "epsilon":
            raise ValueError(f"Analytic-DPM needs an ε-model (Γ is E‖ε_θ‖²/d): prediction_type must be 'epsilon', "
                             f"got {prediction_type!r}")
        if variance_type != "fixed_small":
            raise ValueError(f"AnalyticDPMScheduler's variance is σ*²; variance_type names its fallback and decoder "
                             f"and must be 'fixed_small', got {variance_type!r}")
        super().__init__(
            num_train_timesteps=num_train_timesteps, beta_start=beta_start, beta_end=beta_end,
            beta_schedule=beta_schedule, trained_betas=trained_betas, variance_type=variance_type,
            clip_sample=clip_sample, prediction_type=prediction_type, thresholding=thresholding,
            dynamic_thresholding_ratio=dynamic_thresholding_ratio, clip_sample_range=clip_sample_range,
            sample_max_value=sample_max_value, timestep_spacing=timestep_spacing, steps_offset=steps_offset,
            rescale_betas_zero_snr=rescale_betas_zero_snr,
        )

    def _build_step_table(self, chain: np.ndarray) -> None:
        # The parent's table, with σ = σ*_{t|t'} in the standard-deviation column `step` multiplies the noise by.
        super()._build_step_table(chain)
        ts = torch.from_numpy(np.ascontiguousarray(chain))
        prev = torch.cat([ts[1:], torch.tensor([-1], dtype=torch.long)])
        std = self.model_variance(ts, prev_timesteps=prev).sqrt().tolist()
        for t, sigma in zip(ts.tolist(), std):
            row = self._step_coefficients[t]
            self._step_coefficients[t] = (*row[:5], sigma, *row[6:])

    def model_variance(
        self,
        timesteps: Timesteps,
        predicted_variance: torch.Tensor | None = None,
        prev_timesteps: Timesteps | None = None,
        like: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """σ*²_{t|t'} of [`analytic_variance`] at ``timesteps`` (t' = ``prev_timesteps``, default t − 1),
        shaped to broadcast against ``like``; ``predicted_variance`` is ignored (the model has none)."""
        # ᾱ_t and ᾱ_{t'} through the parent's gather (its device, dtype and broadcasting); Γ at the same t.
        ac_t = self._coefficient("alphas_cumprod", timesteps, prev_timesteps, like)
        ac_prev = self._coefficient("alphas_cumprod_prev", timesteps, prev_timesteps, like)
        t = _as_index(timesteps, ac_t.device)
        T = self.config.num_train_timesteps
        if bool(((t < 0) | (t >= T)).any()):
            raise ValueError(f"timesteps must lie in [0, {T}), got {t.tolist()}")
        gamma = self._gamma.to(ac_t.device, ac_t.dtype)[t].reshape(ac_t.shape)
        return analytic_variance(ac_t, ac_prev, gamma)

    def model_log_variance(
        self,
        timesteps: Timesteps,
        predicted_variance: torch.Tensor | None = None,
        prev_timesteps: Timesteps | None = None,
        like: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """log σ*²_{t|t'} (see `model_variance`)."""
        return torch.log(self.model_variance(timesteps, predicted_variance, prev_timesteps, like))


def check_gamma(gamma: Sequence[float] | np.ndarray | torch.Tensor | None, num_train_timesteps: int) -> torch.Tensor:
    """Γ as a float64 tensor, refused in one line naming ``gamma`` if it is missing, of the wrong length, or holds
    a non-finite value. (Any finite Γ gives a σ*² between the clip's bounds.)"""
    if gamma is None:
        raise ValueError("AnalyticDPMScheduler needs gamma, the table Γ_t = E‖ε_θ(x_t, t)‖²/d of its ε-model: "
                         "estimate it with ddpm_from_scratch.analytic_variance.estimate_gamma")
    if isinstance(gamma, torch.Tensor):
        gamma = gamma.detach().cpu().numpy()
    values = np.asarray(gamma, dtype=np.float64)
    if values.ndim != 1 or values.size != num_train_timesteps:
        raise ValueError(f"gamma must hold one value per training timestep (num_train_timesteps="
                         f"{num_train_timesteps}), got shape {values.shape}")
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise ValueError(f"gamma must be finite, got gamma[{bad[0]}] = {values[bad[0]]}")
    return torch.from_numpy(values)
