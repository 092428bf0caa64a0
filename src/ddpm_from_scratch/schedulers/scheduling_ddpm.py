# Copyright 2025 The ddpm-from-scratch authors. Licensed under the Apache License, Version 2.0.
"""The DDPM scheduler, written from the equations of Ho, Jain & Abbeel (2020).

This module is shipped verbatim inside Hub repositories, so it imports only the
standard library, numpy, torch and diffusers.

Indexing. Papers count steps t = 1..T; this module counts timesteps 0..T-1 as
diffusers does, so ``betas[i] = β_{i+1}`` and ``alphas_cumprod[i] = ᾱ_{i+1}``.
Equations in the docstrings are written in the code's indexing: ``t`` is a
timestep in ``[0, T)``, ``t'`` is the less noisy timestep the reverse step goes to
(``t - 1`` on the training chain, the next entry of ``timesteps`` on a respaced
chain), and ``ᾱ_{t'} = 1`` when ``t' = -1`` (the clean data, after the last step).

One chain, any spacing. Every per-step quantity is a function of ᾱ_t and ᾱ_{t'}
only: β'_t = 1 − ᾱ_t/ᾱ_{t'}, α'_t = ᾱ_t/ᾱ_{t'}. On the training chain β'_t is β_t
(up to rounding); on a respaced chain it is the β of the shorter chain. The
quantity methods therefore take ``timesteps`` and an optional ``prev_timesteps``
(default ``t - 1``) and accept an int or a ``(B,)`` tensor of timesteps, so the
variational bound can evaluate per-image, per-timestep terms in one call.
"""

from dataclasses import dataclass
from typing import Callable, NamedTuple, Sequence

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid")
VARIANCE_TYPES = ("fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log", "learned", "learned_range")
# The variance types whose σ_t² comes from the network's extra C output channels.
LEARNED_VARIANCE_TYPES = ("learned", "learned_range")
PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")
TIMESTEP_SPACINGS = ("leading", "trailing", "linspace")

# diffusers takes log(β̃_t) for the learned_range interpolation; β̃ is 0 at the first
# step, so it clamps first. Same constant here so the samples agree.
_MIN_VARIANCE = 1e-20

Timesteps = int | torch.Tensor | Sequence[int] | np.ndarray


# ----------------------------------------------------------------------------- β schedules


def linear_betas(num_train_timesteps: int, beta_start: float, beta_end: float) -> torch.Tensor:
    """β_t evenly spaced from ``beta_start`` (β_1) to ``beta_end`` (β_T), as in DDPM."""
    return torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float32)


def scaled_linear_betas(num_train_timesteps: int, beta_start: float, beta_end: float) -> torch.Tensor:
    """√β_t evenly spaced from √beta_start to √beta_end (the latent-diffusion schedule)."""
    return torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float32) ** 2


def sigmoid_betas(num_train_timesteps: int, beta_start: float, beta_end: float) -> torch.Tensor:
    """β_t = beta_start + (beta_end − beta_start) · sigmoid(u_t), u_t evenly spaced on [−6, 6] (GeoDiff)."""
    u = torch.linspace(-6, 6, num_train_timesteps, dtype=torch.float32)
    return torch.sigmoid(u) * (beta_end - beta_start) + beta_start


def cosine_alpha_bar(t: np.ndarray, s: float = 0.008) -> np.ndarray:
    """f(t) = cos²(((t + s)/(1 + s)) · π/2) for t ∈ [0, 1] (Nichol & Dhariwal 2021).

    ᾱ(t) = f(t)/f(0); only ratios of f are ever used, so f(0) is not divided out.
    """
    return np.cos((t + s) / (1 + s) * np.pi / 2) ** 2


def betas_for_alpha_bar(
    num_train_timesteps: int,
    alpha_bar: Callable[[np.ndarray], np.ndarray] = cosine_alpha_bar,
    max_beta: float = 0.999,
) -> torch.Tensor:
    """β_t = min(1 − ᾱ((t+1)/T) / ᾱ(t/T), max_beta) for t = 0..T−1.

    The cap keeps β below 1 at the end of the cosine schedule, where ᾱ → 0 and the
    ratio would otherwise give β = 1 (an x_{t'} independent of x_t). Computed in
    float64 and rounded once to float32.
    """
    steps = np.arange(num_train_timesteps, dtype=np.float64)
    ratio = alpha_bar((steps + 1) / num_train_timesteps) / alpha_bar(steps / num_train_timesteps)
    return torch.from_numpy(np.minimum(1 - ratio, max_beta)).to(torch.float32)


def betas_for_schedule(
    beta_schedule: str, num_train_timesteps: int, beta_start: float = 0.0001, beta_end: float = 0.02
) -> torch.Tensor:
    """The float32 β_0..β_{T−1} of a named schedule (names as in diffusers).

    ``linear``: β evenly spaced; ``scaled_linear``: √β evenly spaced; ``squaredcos_cap_v2``:
    the cosine schedule, ᾱ(t) ∝ cos²(((t/T + 0.008)/1.008) π/2), β ≤ 0.999 (``beta_start``/``beta_end``
    unused); ``sigmoid``: β = start + (end − start)·sigmoid(linspace(−6, 6)).
    """
    if beta_schedule == "linear":
        return linear_betas(num_train_timesteps, beta_start, beta_end)
    if beta_schedule == "scaled_linear":
        return scaled_linear_betas(num_train_timesteps, beta_start, beta_end)
    if beta_schedule == "squaredcos_cap_v2":
        return betas_for_alpha_bar(num_train_timesteps, cosine_alpha_bar)
    if beta_schedule == "sigmoid":
        return sigmoid_betas(num_train_timesteps, beta_start, beta_end)
    raise ValueError(f"beta_schedule must be one of {BETA_SCHEDULES}, got {beta_schedule!r}")


def rescale_zero_terminal_snr(betas: torch.Tensor) -> torch.Tensor:
    """Rescale β so that ᾱ_{T−1} = 0: zero terminal SNR (Lin et al. 2023, Algorithm 1).

    √ᾱ is shifted so its last value is 0 and scaled so its first value is unchanged:
    √ᾱ'_t = (√ᾱ_t − √ᾱ_{T−1}) · √ᾱ_0 / (√ᾱ_0 − √ᾱ_{T−1}); then α'_t = ᾱ'_t/ᾱ'_{t−1}, β' = 1 − α'.
    The last β becomes exactly 1.
    """
    sqrt_ac = torch.cumprod(1.0 - betas, dim=0).sqrt()
    first, last = sqrt_ac[0].clone(), sqrt_ac[-1].clone()
    sqrt_ac = (sqrt_ac - last) * (first / (first - last))
    ac = sqrt_ac**2
    alphas = torch.cat([ac[:1], ac[1:] / ac[:-1]])
    return 1 - alphas


# ----------------------------------------------------------------------------- per-step coefficients


def _chain_coefficients(ac_t: torch.Tensor, ac_prev: torch.Tensor) -> dict[str, torch.Tensor]:
    """All per-step coefficients of the step t → t', elementwise in ᾱ_t and ᾱ_{t'}.

    The operations and their order are those of diffusers' ``DDPMScheduler.step``, so in
    float32 the tables hold the same bits that it computes step by step.
    """
    one_minus_ac_t = 1 - ac_t
    one_minus_ac_prev = 1 - ac_prev
    alphas = ac_t / ac_prev
    betas = 1 - alphas
    posterior_variance = one_minus_ac_prev / one_minus_ac_t * betas
    posterior_variance_clamped = torch.clamp(posterior_variance, min=_MIN_VARIANCE)
    return {
        "alphas_cumprod": ac_t,
        "alphas_cumprod_prev": ac_prev,
        "sqrt_alphas_cumprod": ac_t**0.5,
        "sqrt_one_minus_alphas_cumprod": one_minus_ac_t**0.5,
        "log_one_minus_alphas_cumprod": torch.log(one_minus_ac_t),
        "alphas": alphas,
        "betas": betas,
        "log_betas": torch.log(betas),
        "posterior_variance": posterior_variance,
        "posterior_variance_clamped": posterior_variance_clamped,
        "posterior_log_variance": torch.log(posterior_variance_clamped),
        "posterior_mean_coef1": (ac_prev**0.5 * betas) / one_minus_ac_t,
        "posterior_mean_coef2": alphas**0.5 * one_minus_ac_prev / one_minus_ac_t,
    }


def _fixed_std(coefficients: dict[str, torch.Tensor], variance_type: str) -> torch.Tensor:
    """σ_t of the fixed variance types (NaN for the learned ones, which come from the model)."""
    if variance_type == "fixed_small":
        return coefficients["posterior_variance_clamped"] ** 0.5
    if variance_type == "fixed_small_log":
        return torch.exp(0.5 * coefficients["posterior_log_variance"])
    if variance_type in ("fixed_large", "fixed_large_log"):
        # For fixed_large_log σ = exp(½ log β') = √β', taken directly so that it has fixed_large's bits.
        # diffusers 0.42 takes √(log β') here instead (NaN): see the class docstring.
        return coefficients["betas"] ** 0.5
    return torch.full_like(coefficients["betas"], float("nan"))


def learned_range_log_variance(
    predicted_variance: torch.Tensor, min_log: torch.Tensor | float, max_log: torch.Tensor | float
) -> torch.Tensor:
    """log σ_t² = f · log β'_t + (1 − f) · log β̃_t with f = (v + 1)/2 (Nichol & Dhariwal 2021, eq. 15).

    ``predicted_variance`` is the network's v (nominally in [−1, 1]: v = −1 gives the posterior
    variance β̃_t, v = +1 gives β'_t); ``min_log`` = log max(β̃_t, 1e-20) and ``max_log`` = log β'_t of
    the step t → t' being taken, so on a respaced chain both ends are the shorter chain's. The one
    place this interpolation is written: `step`, `model_log_variance` and the bound's decoder use it.
    """
    frac = (predicted_variance + 1) / 2
    return frac * max_log + (1 - frac) * min_log


def start_from_prediction(
    prediction_type: str,
    model_output: torch.Tensor,
    sample: torch.Tensor,
    sqrt_alpha_cumprod: float | torch.Tensor,
    sqrt_one_minus_alpha_cumprod: float | torch.Tensor,
) -> torch.Tensor:
    r"""x̂_0 from the model's output at x_t, by what the model predicts:

        epsilon:       x̂_0 = (x_t − √(1 − ᾱ_t) ε_θ) / √ᾱ_t
        sample:        x̂_0 = the output itself
        v_prediction:  x̂_0 = √ᾱ_t x_t − √(1 − ᾱ_t) v_θ

    The one place this is written: `DDPMFromScratchScheduler.step` passes its precomputed Python floats (in the
    sample's precision, as diffusers computes), `predict_start` tensors of ᾱ in float64 on upcast inputs.
    """
    if prediction_type == "epsilon":
        return (sample - sqrt_one_minus_alpha_cumprod * model_output) / sqrt_alpha_cumprod
    if prediction_type == "sample":
        return model_output
    if prediction_type == "v_prediction":
        return sqrt_alpha_cumprod * sample - sqrt_one_minus_alpha_cumprod * model_output
    raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")


def _as_index(timesteps: Timesteps, device: torch.device) -> torch.Tensor:
    if isinstance(timesteps, torch.Tensor):
        return timesteps.to(device=device, dtype=torch.long)
    return torch.as_tensor(np.asarray(timesteps), dtype=torch.long, device=device)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    # Half-precision inputs are computed in float32: 1 − ᾱ_t and β_t at small t are
    # below half precision's resolution near 1 and would round to 0.
    return torch.float64 if dtype == torch.float64 else torch.float32


# ----------------------------------------------------------------------------- outputs


@dataclass
class DDPMFromScratchSchedulerOutput(BaseOutput):
    """Output of [`DDPMFromScratchScheduler.step`].

    Args:
        prev_sample (`torch.Tensor`, same shape as the sample):
            x_{t'}, the sample at the previous timestep; the next model input.
        pred_original_sample (`torch.Tensor`, same shape as the sample):
            x̂_0, the model's estimate of the clean sample at this step (after clipping or
            thresholding), for previews and guidance.
    """

    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor | None = None


class ModelMeanVariance(NamedTuple):
    """The reverse step p_θ(x_{t'} | x_t) = N(mean, variance), as returned by `p_mean_variance`."""

    mean: torch.Tensor
    variance: torch.Tensor
    log_variance: torch.Tensor
    pred_original_sample: torch.Tensor


# ----------------------------------------------------------------------------- the scheduler


class DDPMFromScratchScheduler(SchedulerMixin, ConfigMixin):
    r"""Ancestral sampling of a DDPM (Ho et al. 2020), with the theory's quantities as methods.

    Forward process q(x_t | x_0) = N(√ᾱ_t x_0, (1 − ᾱ_t) I); reverse process
    p_θ(x_{t'} | x_t) = N(μ_θ(x_t, t), σ_t² I) with μ_θ the posterior mean μ̃_t(x̂_0, x_t) of
    q(x_{t'} | x_t, x_0) at the model's estimate x̂_0, and σ_t² chosen by ``variance_type``.

    The configuration has the keys, defaults and meanings of diffusers' ``DDPMScheduler``, so a
    config saved by either class loads in the other, and given the same config, inputs and
    ``generator``, ``step``, ``add_noise``, ``get_velocity`` and ``set_timesteps`` return what
    ``DDPMScheduler`` (diffusers 0.42) returns, random draws included. Deliberate differences:

    1. ``add_noise`` and ``get_velocity`` compute in float32 for float16/bfloat16 inputs and cast the
       result back. diffusers computes in the input's precision, where ᾱ_0 = 0.9999 rounds to 1
       (float16 has a spacing of 2⁻¹¹ just below 1), so √(1 − ᾱ_t) is 0 at the first timesteps and
       the "noisy" sample comes back without noise.
    2. ``variance_type="fixed_large_log"`` samples with σ_t = exp(½ log β'_t) = √β'_t, exactly the
       samples of ``"fixed_large"``. In diffusers 0.42 ``_get_variance`` returns log β'_t for this
       type (a log-variance, negative) and ``step`` treats it like a variance, taking its square
       root: √(log β'_t) is NaN at every step with t > 0, so every sample is NaN. (It is not the
       t = 0 clamp: no noise is added at t = 0.)
    3. ``timestep_spacing="trailing"`` gives exactly ``num_inference_steps`` timesteps. diffusers
       builds them with a float ``np.arange(T, 0, -T/n)``, which for 62 of the n in 1..1000 (diffusers 0.42) (e.g.
       61, 103, 121) yields one extra entry that rounds to timestep −1. For every other n the
       timesteps are identical.
    4. In float16/bfloat16 on the CPU, ``step`` multiplies by its float32 coefficients, where
       diffusers' 0-d float32 coefficient tensors are first rounded to half precision by PyTorch's
       CPU kernels; results can differ by one half-precision ulp. float32 and float64 agree exactly.
    5. Bad configurations raise ``ValueError`` at construction (diffusers raises for some of them
       only in ``step``/``set_timesteps``, or not at all), and custom timesteps or ``steps_offset``
       that would leave [0, T) are refused by ``set_timesteps``.
    6. The last step of every chain returns the mean μ_θ, as Algorithm 2 of Ho et al. does. diffusers adds noise
       there whenever t > 0, i.e. on chains that end above timestep 0 ('trailing' spacing, ``steps_offset`` ≥ 1,
       custom timesteps): with ``fixed_large`` and 50 'trailing' steps of the linear schedule that is noise of
       std √(1 − ᾱ_19) = 0.076, ten 8-bit levels, on the finished image. Chains ending at 0 are unaffected.

    This model inherits from [`SchedulerMixin`] and [`ConfigMixin`] (saving, loading, ``from_config``).

    Args:
        num_train_timesteps (`int`, defaults to 1000):
            T, the number of diffusion steps the model was trained with. At least 1.
        beta_start (`float`, defaults to 0.0001):
            β of the first timestep for the ``linear``, ``scaled_linear`` and ``sigmoid`` schedules; in (0, 1).
        beta_end (`float`, defaults to 0.02):
            β of the last timestep for those schedules; in (0, 1), and ≥ ``beta_start`` for
            ``linear`` and ``scaled_linear``.
        beta_schedule (`str`, defaults to ``"linear"``):
            How β_t is laid out over the T steps: ``"linear"``, ``"scaled_linear"``,
            ``"squaredcos_cap_v2"`` (cosine) or ``"sigmoid"``. See [`betas_for_schedule`].
        trained_betas (`np.ndarray` or `list[float]`, *optional*):
            β_0..β_{T−1} given explicitly (length ``num_train_timesteps``, each in (0, 1)); overrides
            ``beta_schedule``, ``beta_start`` and ``beta_end``. With ``rescale_betas_zero_snr`` the last may be
            exactly 1: such betas already have zero terminal SNR, and rescaling them is the identity.
        variance_type (`str`, defaults to ``"fixed_small"``):
            σ_t² of the reverse step: ``"fixed_small"``: the posterior variance β̃_t (clamped at 1e-20);
            ``"fixed_large"``: β'_t; ``"fixed_small_log"``/``"fixed_large_log"``: the same, computed in
            log space; ``"learned"``: the model outputs σ_t² itself in extra channels; ``"learned_range"``:
            the model outputs v ∈ [−1, 1] in extra channels and log σ_t² = ((v+1)/2) log β'_t +
            (1 − (v+1)/2) log β̃_t (Nichol & Dhariwal 2021). The learned types expect a model output with
            twice the sample's channels, split along dim 1.
        clip_sample (`bool`, defaults to `True`):
            Clamp x̂_0 to [−clip_sample_range, clip_sample_range] before computing the step's mean.
        prediction_type (`str`, defaults to ``"epsilon"``):
            What the model predicts: ``"epsilon"`` (the noise ε), ``"sample"`` (x_0) or
            ``"v_prediction"`` (v = √ᾱ_t ε − √(1 − ᾱ_t) x_0, Salimans & Ho 2022).
        thresholding (`bool`, defaults to `False`):
            Dynamic thresholding of x̂_0 (Saharia et al. 2022, Imagen) instead of clipping; takes
            precedence over ``clip_sample``. Unsuitable for latent-space models.
        dynamic_thresholding_ratio (`float`, defaults to 0.995):
            The quantile of |x̂_0| (per sample) used as the threshold s; in (0, 1].
        clip_sample_range (`float`, defaults to 1.0):
            The bound of the clamp applied when ``clip_sample`` is set.
        sample_max_value (`float`, defaults to 1.0):
            The largest threshold s dynamic thresholding may use (s is clamped to [1, sample_max_value]).
        timestep_spacing (`str`, defaults to ``"leading"``):
            How ``set_timesteps(n)`` picks n of the T timesteps (Lin et al. 2023, Table 2):
            ``"leading"``: k·⌊T/n⌋ + steps_offset; ``"trailing"``: round(T − k·T/n) − 1;
            ``"linspace"``: round(linspace(0, T − 1, n)); each listed in descending order.
        steps_offset (`int`, defaults to 0):
            Added to every ``"leading"`` timestep (some model families were trained so); ≥ 0.
        rescale_betas_zero_snr (`bool`, defaults to `False`):
            Rescale β so that ᾱ_{T−1} = 0, zero signal-to-noise at the last step (see
            [`rescale_zero_terminal_snr`]); pair it with ``"v_prediction"``, since ε-prediction
            cannot recover x_0 from pure noise.
    """

    # Schedulers of diffusers that accept this configuration (DDPMScheduler's own list).
    _compatibles = [
        "DDIMScheduler",
        "DDPMScheduler",
        "PNDMScheduler",
        "LMSDiscreteScheduler",
        "EulerDiscreteScheduler",
        "HeunDiscreteScheduler",
        "EulerAncestralDiscreteScheduler",
        "DPMSolverMultistepScheduler",
        "DPMSolverSinglestepScheduler",
        "KDPM2DiscreteScheduler",
        "KDPM2AncestralDiscreteScheduler",
        "DEISMultistepScheduler",
        "UniPCMultistepScheduler",
        "DPMSolverSDEScheduler",
        "EDMEulerScheduler",
    ]
    order = 1

    @register_to_config
    def __init__(
        self,
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
        if isinstance(num_train_timesteps, bool) or not isinstance(num_train_timesteps, (int, np.integer)):
            raise ValueError(f"num_train_timesteps must be an integer, got {num_train_timesteps!r}")
        if num_train_timesteps < 1:
            raise ValueError(f"num_train_timesteps must be at least 1, got {num_train_timesteps}")
        for name, value, choices in (
            ("beta_schedule", beta_schedule, BETA_SCHEDULES),
            ("variance_type", variance_type, VARIANCE_TYPES),
            ("prediction_type", prediction_type, PREDICTION_TYPES),
            ("timestep_spacing", timestep_spacing, TIMESTEP_SPACINGS),
        ):
            if value not in choices:
                raise ValueError(f"{name} must be one of {choices}, got {value!r}")
        if isinstance(steps_offset, bool) or not isinstance(steps_offset, (int, np.integer)) or steps_offset < 0:
            raise ValueError(f"steps_offset must be a non-negative integer, got {steps_offset!r}")
        if not 0 < dynamic_thresholding_ratio <= 1:
            raise ValueError(f"dynamic_thresholding_ratio must be in (0, 1], got {dynamic_thresholding_ratio}")

        betas = self._initial_betas(num_train_timesteps, beta_start, beta_end, beta_schedule, trained_betas,
                                    rescale_betas_zero_snr)
        if rescale_betas_zero_snr:
            betas = rescale_zero_terminal_snr(betas)

        self.betas = betas
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        self.init_noise_sigma = 1.0

        # Training-chain coefficient tables, per (device, dtype), built on first use.
        self._tables: dict[tuple[torch.device, torch.dtype], dict[str, torch.Tensor]] = {}

        self.custom_timesteps = False
        self.num_inference_steps = None
        self.timesteps = torch.from_numpy(np.arange(num_train_timesteps - 1, -1, -1, dtype=np.int64))
        self._build_step_table(self.timesteps.numpy())

    @staticmethod
    def _initial_betas(
        num_train_timesteps: int,
        beta_start: float,
        beta_end: float,
        beta_schedule: str,
        trained_betas: np.ndarray | list[float] | None,
        rescale_betas_zero_snr: bool = False,
    ) -> torch.Tensor:
        if trained_betas is not None:
            betas = torch.as_tensor(np.asarray(trained_betas, dtype=np.float64), dtype=torch.float32)
            if betas.ndim != 1 or betas.numel() != num_train_timesteps:
                raise ValueError(
                    f"trained_betas must be a 1-D sequence of num_train_timesteps={num_train_timesteps} values,"
                    f" got shape {tuple(betas.shape)}"
                )
            # Checked after rounding to float32: 1 − 1e-9 becomes 1.0 there.
            inside = (betas > 0) & (betas < 1)
            if rescale_betas_zero_snr:  # already zero terminal SNR: what rescaling them would give
                inside[-1] |= betas[-1] == 1
            if not bool(inside.all()):
                allowed = "(0, 1), the last in (0, 1]," if rescale_betas_zero_snr else "(0, 1)"
                raise ValueError(
                    f"trained_betas must all lie in {allowed} (in float32), got values in"
                    f" [{betas.min().item()}, {betas.max().item()}]"
                )
            return betas
        if beta_schedule in ("linear", "scaled_linear", "sigmoid"):
            for name, value in (("beta_start", beta_start), ("beta_end", beta_end)):
                if not 0 < value < 1:
                    raise ValueError(f"{name} must lie in (0, 1) for beta_schedule={beta_schedule!r}, got {value}")
        if beta_schedule in ("linear", "scaled_linear") and beta_end < beta_start:
            raise ValueError(
                f"beta_end must be >= beta_start for beta_schedule={beta_schedule!r},"
                f" got beta_start={beta_start}, beta_end={beta_end}"
            )
        betas = betas_for_schedule(beta_schedule, num_train_timesteps, beta_start, beta_end)
        if not bool(((betas > 0) & (betas < 1)).all()):
            raise ValueError(f"beta_schedule={beta_schedule!r} gave betas outside (0, 1)")
        return betas

    def __len__(self) -> int:
        return self.config.num_train_timesteps

    # ------------------------------------------------------------------------- timesteps

    def scale_model_input(self, sample: torch.Tensor, timestep: int | None = None) -> torch.Tensor:
        """Return ``sample`` unchanged: DDPM feeds x_t to the model as is (init_noise_sigma = 1)."""
        return sample

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        timesteps: Sequence[int] | None = None,
    ) -> None:
        """Choose the timesteps the reverse chain visits, in descending order.

        With ``num_inference_steps`` = n the n timesteps follow ``config.timestep_spacing``; with
        ``timesteps`` the chain visits exactly those (``custom_timesteps`` becomes True and, as in
        diffusers, ``num_inference_steps`` is left as it was). Stepping from t to the next listed
        timestep t' uses β'_t = 1 − ᾱ_t/ᾱ_{t'} (ᾱ = 1 after the last one).

        Args:
            num_inference_steps: n, between 1 and ``num_train_timesteps``.
            device: where ``self.timesteps`` is put.
            timesteps: custom timesteps, strictly descending, within [0, num_train_timesteps).

        Raises:
            ValueError: if both or neither of ``num_inference_steps`` and ``timesteps`` are given, or
                they are out of range, or ``steps_offset`` pushes a timestep past T − 1.
        """
        T = self.config.num_train_timesteps
        if num_inference_steps is not None and timesteps is not None:
            raise ValueError("Pass either num_inference_steps or timesteps to set_timesteps, not both")
        if timesteps is not None:
            chain = self._validated_custom_timesteps(timesteps)
            self.custom_timesteps = True
        elif num_inference_steps is not None:
            if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, (int, np.integer)):
                raise ValueError(f"num_inference_steps must be an integer, got {num_inference_steps!r}")
            if not 1 <= num_inference_steps <= T:
                raise ValueError(
                    f"num_inference_steps must be between 1 and num_train_timesteps={T}, got {num_inference_steps}"
                )
            chain = self._spaced_timesteps(int(num_inference_steps))
            self.num_inference_steps = int(num_inference_steps)
            self.custom_timesteps = False
        else:
            raise ValueError("set_timesteps needs num_inference_steps or timesteps")
        self.timesteps = torch.from_numpy(chain).to(device)
        self._build_step_table(chain)

    def _spaced_timesteps(self, n: int) -> np.ndarray:
        T = self.config.num_train_timesteps
        spacing = self.config.timestep_spacing
        k = np.arange(n, dtype=np.int64)
        if spacing == "leading":
            offset = self.config.steps_offset
            chain = (k * (T // n))[::-1] + offset
            if chain[0] >= T:
                raise ValueError(
                    f"steps_offset={offset} puts the first of {n} 'leading' timesteps at {chain[0]},"
                    f" outside [0, num_train_timesteps={T})"
                )
        elif spacing == "trailing":
            chain = np.round(T - k * (T / n)).astype(np.int64) - 1
        elif spacing == "linspace":
            chain = np.linspace(0, T - 1, n).round()[::-1].astype(np.int64)
        else:
            raise ValueError(f"timestep_spacing must be one of {TIMESTEP_SPACINGS}, got {spacing!r}")
        return np.ascontiguousarray(chain, dtype=np.int64)

    def _validated_custom_timesteps(self, timesteps: Sequence[int]) -> np.ndarray:
        T = self.config.num_train_timesteps
        if isinstance(timesteps, torch.Tensor):
            timesteps = timesteps.detach().cpu().numpy()
        values = np.asarray(timesteps)
        if values.ndim != 1 or values.size == 0:
            raise ValueError(f"timesteps must be a non-empty 1-D sequence, got shape {values.shape}")
        if not np.issubdtype(values.dtype, np.integer):
            if not np.issubdtype(values.dtype, np.floating) or not np.all(values == np.round(values)):
                raise ValueError(f"timesteps must be integers, got {values.tolist()}")
        chain = values.astype(np.int64)
        if np.any(np.diff(chain) >= 0):
            raise ValueError(f"timesteps must be strictly descending, got {chain.tolist()}")
        if chain[0] >= T or chain[-1] < 0:
            raise ValueError(f"timesteps must lie in [0, num_train_timesteps={T}), got {chain[0]}..{chain[-1]}")
        return chain

    def _build_step_table(self, chain: np.ndarray) -> None:
        """Precompute, for each timestep of the chain, the Python floats `step` needs.

        Python floats keep `step` free of per-call tensor indexing and device syncs; they hold
        the float32 values (exactly representable as doubles), so arithmetic with them matches
        arithmetic with diffusers' 0-d float32 tensors.
        """
        ts = torch.from_numpy(np.ascontiguousarray(chain))
        prev = torch.cat([ts[1:], torch.tensor([-1], dtype=torch.long)])
        padded = torch.cat([torch.ones(1, dtype=torch.float32), self.alphas_cumprod.detach().cpu().float()])
        c = _chain_coefficients(padded[ts + 1], padded[prev + 1])
        columns = [
            c["sqrt_alphas_cumprod"],
            c["sqrt_one_minus_alphas_cumprod"],
            c["posterior_mean_coef1"],
            c["posterior_mean_coef2"],
            _fixed_std(c, self.config.variance_type),
            c["posterior_log_variance"],
            c["log_betas"],
        ]
        rows = torch.stack(columns, dim=1).tolist()
        self._step_coefficients = {t: (p, *row) for t, p, row in zip(ts.tolist(), prev.tolist(), rows)}
        self._prev_table_cpu = torch.full((self.config.num_train_timesteps,), -2, dtype=torch.long)
        self._prev_table_cpu[ts] = prev
        self._prev_tables: dict[torch.device, torch.Tensor] = {}

    def previous_timestep(self, timestep: int | torch.Tensor) -> int | torch.Tensor:
        """t', the timestep after t on the current chain (−1 after the last one).

        t − 1 until `set_timesteps` is called, then the next entry of ``self.timesteps``.
        ``timestep`` may be an int (returns an int) or a tensor of any shape (returns a long
        tensor of that shape on its device).

        Raises:
            ValueError: if a timestep is not on the current chain.
        """
        if isinstance(timestep, torch.Tensor):
            if timestep.numel() == 0:
                return timestep.to(torch.long)
            table = self._prev_tables.get(timestep.device)
            if table is None:
                table = self._prev_tables[timestep.device] = self._prev_table_cpu.to(timestep.device)
            index = timestep.to(torch.long)
            if bool(((index < 0) | (index >= table.numel())).any()):
                raise ValueError(f"timestep must lie in [0, {table.numel()}), got {timestep.tolist()}")
            prev = table[index]
            if bool((prev < -1).any()):
                raise ValueError(f"timestep {timestep.tolist()} is not on the current chain ({self._chain_summary()})")
            return prev
        row = self._step_coefficients.get(int(timestep))
        if row is None:
            raise ValueError(f"timestep {timestep} is not on the current chain ({self._chain_summary()})")
        return row[0]

    def _chain_summary(self) -> str:
        ts = self.timesteps.tolist()
        return f"{len(ts)} timesteps: {ts}" if len(ts) <= 20 else f"{len(ts)} timesteps: {ts[:3]} ... {ts[-3:]}"

    # ------------------------------------------------------------------------- coefficient lookup

    def _training_tables(self, device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        key = (device, dtype)
        tables = self._tables.get(key)
        if tables is None:
            # Built on the CPU and moved, so every device holds the same bits.
            ac = self.alphas_cumprod.detach().to("cpu", dtype)
            one = torch.ones(1, dtype=dtype)
            tables = _chain_coefficients(ac, torch.cat([one, ac[:-1]]))
            tables["alphas_cumprod_padded"] = torch.cat([one, ac])
            tables = {name: value.to(device) for name, value in tables.items()}
            self._tables[key] = tables
        return tables

    def _coefficient(
        self,
        name: str,
        timesteps: Timesteps,
        prev_timesteps: Timesteps | None = None,
        like: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Gather coefficient ``name`` at ``timesteps``, shaped to broadcast against ``like``.

        ``like`` sets the device and dtype (float64 stays float64, anything else is float32); a
        ``(B,)`` set of timesteps becomes ``(B, 1, …, 1)`` so it scales each sample of a batch.
        """
        if like is not None:
            device, dtype = like.device, _compute_dtype(like.dtype)
        else:
            device = timesteps.device if isinstance(timesteps, torch.Tensor) else torch.device("cpu")
            dtype = torch.float32
        tables = self._training_tables(device, dtype)
        T = self.config.num_train_timesteps
        if prev_timesteps is None:
            if isinstance(timesteps, (int, np.integer)):
                if not 0 <= timesteps < T:
                    raise ValueError(f"timesteps must lie in [0, {T}), got {timesteps}")
                values = tables[name][int(timesteps)]
            else:
                values = tables[name][_as_index(timesteps, device)]
        else:
            padded = tables["alphas_cumprod_padded"]
            t = _as_index(timesteps, device)
            p = _as_index(prev_timesteps, device)
            values = _chain_coefficients(padded[t + 1], padded[p + 1])[name]
        if like is not None and values.ndim > 0:
            values = values.reshape(-1, *([1] * (like.ndim - 1)))
        return values

    # ------------------------------------------------------------------------- the forward process

    def alpha_bar(self, timesteps: Timesteps, like: torch.Tensor | None = None) -> torch.Tensor:
        """ᾱ_t = ∏_{s ≤ t} (1 − β_s), the signal fraction of q(x_t | x_0)."""
        return self._coefficient("alphas_cumprod", timesteps, like=like)

    def q_mean_variance(
        self, original_samples: torch.Tensor, timesteps: Timesteps
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean, variance and log-variance of q(x_t | x_0) = N(√ᾱ_t x_0, (1 − ᾱ_t) I).

        The variance terms are shaped ``(B, 1, …, 1)`` (or 0-d for an int timestep).
        """
        x0 = original_samples.to(_compute_dtype(original_samples.dtype))
        mean = self._coefficient("sqrt_alphas_cumprod", timesteps, like=original_samples) * x0
        variance = 1 - self._coefficient("alphas_cumprod", timesteps, like=original_samples)
        log_variance = self._coefficient("log_one_minus_alphas_cumprod", timesteps, like=original_samples)
        dtype = original_samples.dtype
        return mean.to(dtype), variance.to(dtype), log_variance.to(dtype)

    def add_noise(
        self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: Timesteps
    ) -> torch.Tensor:
        """Sample q(x_t | x_0): x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε, for a batch of timesteps.

        ``timesteps`` is an int or a ``(B,)`` tensor, one timestep per sample. Computed in float32
        for float16/bfloat16 inputs and cast back (see the class docstring, difference 1).
        """
        dtype = original_samples.dtype
        compute = _compute_dtype(dtype)
        sqrt_ac = self._coefficient("sqrt_alphas_cumprod", timesteps, like=original_samples)
        sqrt_one_minus_ac = self._coefficient("sqrt_one_minus_alphas_cumprod", timesteps, like=original_samples)
        noisy = sqrt_ac * original_samples.to(compute) + sqrt_one_minus_ac * noise.to(compute)
        return noisy.to(dtype)

    def get_velocity(self, sample: torch.Tensor, noise: torch.Tensor, timesteps: Timesteps) -> torch.Tensor:
        """The v-prediction target v_t = √ᾱ_t ε − √(1 − ᾱ_t) x_0 (Salimans & Ho 2022).

        ``sample`` is x_0 (as in diffusers). Computed in float32 for half-precision inputs.
        """
        dtype = sample.dtype
        compute = _compute_dtype(dtype)
        sqrt_ac = self._coefficient("sqrt_alphas_cumprod", timesteps, like=sample)
        sqrt_one_minus_ac = self._coefficient("sqrt_one_minus_alphas_cumprod", timesteps, like=sample)
        return (sqrt_ac * noise.to(compute) - sqrt_one_minus_ac * sample.to(compute)).to(dtype)

    # ------------------------------------------------------------------------- x_0, ε and v

    def predict_start_from_noise(self, sample: torch.Tensor, noise: torch.Tensor, timesteps: Timesteps) -> torch.Tensor:
        """x_0 = (x_t − √(1 − ᾱ_t) ε) / √ᾱ_t, the inverse of `add_noise` for a known ε."""
        return self._start_from("epsilon", noise, sample, timesteps)

    def predict_start_from_velocity(
        self, sample: torch.Tensor, velocity: torch.Tensor, timesteps: Timesteps
    ) -> torch.Tensor:
        """x_0 = √ᾱ_t x_t − √(1 − ᾱ_t) v."""
        return self._start_from("v_prediction", velocity, sample, timesteps)

    def _start_from(self, prediction_type: str, model_output: torch.Tensor, sample: torch.Tensor,
                    timesteps: Timesteps) -> torch.Tensor:
        """`start_from_prediction` with ᾱ_t's float64 tables, in float32 at least, rounded once to the sample's dtype."""
        compute = _compute_dtype(sample.dtype)
        sqrt_ac = self._coefficient("sqrt_alphas_cumprod", timesteps, like=sample)
        sqrt_one_minus_ac = self._coefficient("sqrt_one_minus_alphas_cumprod", timesteps, like=sample)
        x0 = start_from_prediction(prediction_type, model_output.to(compute), sample.to(compute), sqrt_ac,
                                   sqrt_one_minus_ac)
        return x0.to(sample.dtype)

    def predict_noise_from_start(
        self, sample: torch.Tensor, pred_original_sample: torch.Tensor, timesteps: Timesteps
    ) -> torch.Tensor:
        """ε = (x_t − √ᾱ_t x_0) / √(1 − ᾱ_t), the noise that takes x_0 to x_t."""
        compute = _compute_dtype(sample.dtype)
        sqrt_ac = self._coefficient("sqrt_alphas_cumprod", timesteps, like=sample)
        sqrt_one_minus_ac = self._coefficient("sqrt_one_minus_alphas_cumprod", timesteps, like=sample)
        eps = (sample.to(compute) - sqrt_ac * pred_original_sample.to(compute)) / sqrt_one_minus_ac
        return eps.to(sample.dtype)

    def predict_start(self, model_output: torch.Tensor, sample: torch.Tensor, timesteps: Timesteps) -> torch.Tensor:
        """x̂_0 from the model's output under ``config.prediction_type`` (no clipping): `start_from_prediction`.

        ``model_output`` has the sample's channels (split off a learned variance first, see `split_model_output`);
        an ``"sample"`` output is x̂_0 itself and is returned as it is, in its own precision.
        """
        if self.config.prediction_type == "sample":
            return model_output
        return self._start_from(self.config.prediction_type, model_output, sample, timesteps)

    def threshold_sample(self, sample: torch.Tensor) -> torch.Tensor:
        """Dynamic thresholding of x̂_0 (Saharia et al. 2022): per sample, s = clamp(quantile(|x̂_0|,
        dynamic_thresholding_ratio), 1, sample_max_value), then x̂_0 ← clamp(x̂_0, −s, s) / s.

        With s clamped from below at 1 this is plain clipping to [−1, 1] unless pixels saturate.
        Quantiles are taken in float32 for half-precision inputs (CPU clamp and quantile need it).
        """
        dtype = sample.dtype
        x = sample if dtype in (torch.float32, torch.float64) else sample.float()
        flat = x.reshape(x.shape[0], -1)
        s = torch.quantile(flat.abs(), self.config.dynamic_thresholding_ratio, dim=1)
        s = torch.clamp(s, min=1, max=self.config.sample_max_value).unsqueeze(1)
        return (torch.clamp(flat, -s, s) / s).reshape(x.shape).to(dtype)

    def _threshold_sample(self, sample: torch.Tensor) -> torch.Tensor:
        """diffusers' name for `threshold_sample`, for code written against ``DDPMScheduler``."""
        return self.threshold_sample(sample)

    def _clip(self, pred_original_sample: torch.Tensor, clip_denoised: bool | None) -> torch.Tensor:
        if clip_denoised is False:
            return pred_original_sample
        if self.config.thresholding:
            return self.threshold_sample(pred_original_sample)
        if self.config.clip_sample or clip_denoised:
            limit = self.config.clip_sample_range
            return pred_original_sample.clamp(-limit, limit)
        return pred_original_sample

    def split_model_output(
        self, model_output: torch.Tensor, sample: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Split a learned-variance model output (2C channels) into (prediction, variance output).

        For ``"learned"``/``"learned_range"`` with twice the sample's channels, the first C channels
        are the prediction and the last C the variance output; otherwise returns (model_output, None).
        """
        channels = sample.shape[1]
        if self.config.variance_type in LEARNED_VARIANCE_TYPES and model_output.shape[1] == 2 * channels:
            prediction, predicted_variance = torch.split(model_output, channels, dim=1)
            return prediction, predicted_variance
        return model_output, None

    # ------------------------------------------------------------------------- the posterior q(x_t' | x_t, x_0)

    def posterior_variance(
        self, timesteps: Timesteps, prev_timesteps: Timesteps | None = None, like: torch.Tensor | None = None
    ) -> torch.Tensor:
        """β̃_t = (1 − ᾱ_{t'}) / (1 − ᾱ_t) · β'_t, the variance of q(x_{t'} | x_t, x_0).

        Exactly 0 when t' = −1 (x_0 is known). ``prev_timesteps`` defaults to t − 1.
        """
        return self._coefficient("posterior_variance", timesteps, prev_timesteps, like)

    def posterior_log_variance(
        self, timesteps: Timesteps, prev_timesteps: Timesteps | None = None, like: torch.Tensor | None = None
    ) -> torch.Tensor:
        """log max(β̃_t, 1e-20).

        The clamp is diffusers' (log(1e-20) ≈ −46 where β̃ = 0, at t' = −1); improved-diffusion
        instead substitutes β̃ of the next timestep there. Only matters at the last step.
        """
        return self._coefficient("posterior_log_variance", timesteps, prev_timesteps, like)

    def posterior_mean(
        self,
        original_samples: torch.Tensor,
        sample: torch.Tensor,
        timesteps: Timesteps,
        prev_timesteps: Timesteps | None = None,
    ) -> torch.Tensor:
        """μ̃_t(x_t, x_0) = √ᾱ_{t'} β'_t / (1 − ᾱ_t) · x_0 + √α'_t (1 − ᾱ_{t'}) / (1 − ᾱ_t) · x_t.

        The mean of q(x_{t'} | x_t, x_0) (Ho et al. eq. 7), with α'_t = ᾱ_t/ᾱ_{t'}, β'_t = 1 − α'_t.
        Substituting x_0 = (x_t − √(1 − ᾱ_t) ε)/√ᾱ_t gives μ̃_t = (x_t − β'_t/√(1 − ᾱ_t) · ε)/√α'_t.
        """
        compute = _compute_dtype(sample.dtype)
        coef_x0 = self._coefficient("posterior_mean_coef1", timesteps, prev_timesteps, like=sample)
        coef_xt = self._coefficient("posterior_mean_coef2", timesteps, prev_timesteps, like=sample)
        mean = coef_x0 * original_samples.to(compute) + coef_xt * sample.to(compute)
        return mean.to(sample.dtype)

    def q_posterior_mean_variance(
        self,
        original_samples: torch.Tensor,
        sample: torch.Tensor,
        timesteps: Timesteps,
        prev_timesteps: Timesteps | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(μ̃_t, β̃_t, log max(β̃_t, 1e-20)) of q(x_{t'} | x_t, x_0); variances shaped (B, 1, …, 1)."""
        mean = self.posterior_mean(original_samples, sample, timesteps, prev_timesteps)
        variance = self.posterior_variance(timesteps, prev_timesteps, like=sample).to(sample.dtype)
        log_variance = self.posterior_log_variance(timesteps, prev_timesteps, like=sample).to(sample.dtype)
        return mean, variance, log_variance

    # ------------------------------------------------------------------------- the reverse process p_θ(x_t' | x_t)

    def model_log_variance(
        self,
        timesteps: Timesteps,
        predicted_variance: torch.Tensor | None = None,
        prev_timesteps: Timesteps | None = None,
        like: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """log σ_t² of the reverse step, per ``config.variance_type``.

        fixed_small(_log): log max(β̃_t, 1e-20); fixed_large(_log): log β'_t; learned: log of the
        model's variance output; learned_range: with v the model's output in [−1, 1] and
        f = (v + 1)/2, log σ_t² = f log β'_t + (1 − f) log max(β̃_t, 1e-20).
        """
        variance_type = self.config.variance_type
        if variance_type in ("fixed_small", "fixed_small_log"):
            return self.posterior_log_variance(timesteps, prev_timesteps, like)
        if variance_type in ("fixed_large", "fixed_large_log"):
            return self._coefficient("log_betas", timesteps, prev_timesteps, like)
        v = self._require_predicted_variance(predicted_variance)
        if variance_type == "learned":
            return torch.log(v)
        like = v if like is None else like
        min_log = self._coefficient("posterior_log_variance", timesteps, prev_timesteps, like)
        max_log = self._coefficient("log_betas", timesteps, prev_timesteps, like)
        return learned_range_log_variance(v.to(min_log.dtype), min_log, max_log).to(v.dtype)

    def model_variance(
        self,
        timesteps: Timesteps,
        predicted_variance: torch.Tensor | None = None,
        prev_timesteps: Timesteps | None = None,
        like: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """σ_t² of the reverse step, per ``config.variance_type``.

        fixed_small(_log): max(β̃_t, 1e-20) (Ho et al.'s lower bound choice); fixed_large(_log): β'_t
        (their upper bound, the CIFAR-10 sampler); learned: the model's variance output;
        learned_range: exp(`model_log_variance`). Note that at t' = −1 fixed_small gives 1e-20, as
        diffusers does; a decoder p(x_0 | x_1) for the bound may want another choice.
        """
        variance_type = self.config.variance_type
        if variance_type in ("fixed_small", "fixed_small_log"):
            return self._coefficient("posterior_variance_clamped", timesteps, prev_timesteps, like)
        if variance_type in ("fixed_large", "fixed_large_log"):
            return self._coefficient("betas", timesteps, prev_timesteps, like)
        if variance_type == "learned":
            return self._require_predicted_variance(predicted_variance)
        return torch.exp(self.model_log_variance(timesteps, predicted_variance, prev_timesteps, like))

    def _get_variance(
        self,
        t: int,
        predicted_variance: torch.Tensor | None = None,
        variance_type: str | None = None,
    ) -> torch.Tensor:
        """diffusers' ``DDPMScheduler._get_variance``, for code written against it (its tests, community pipelines).

        For the step t → t' (the chain's previous timestep), with β'_t = 1 − ᾱ_t/ᾱ_{t'} and
        β̃_t = (1 − ᾱ_{t'})/(1 − ᾱ_t) β'_t clamped at 1e-20, it returns what diffusers returns, which is not
        always a variance: ``fixed_small``: β̃_t; ``fixed_small_log``: √β̃_t (a standard deviation);
        ``fixed_large``: β'_t; ``fixed_large_log``: log β'_t; ``learned``: ``predicted_variance`` as given;
        ``learned_range``: the log-variance f log β'_t + (1 − f) log β̃_t, f = (v + 1)/2. Prefer
        `model_variance` / `model_log_variance`, which always return σ_t² / log σ_t².
        """
        variance_type = variance_type or self.config.variance_type
        if variance_type not in VARIANCE_TYPES:
            raise ValueError(f"variance_type must be one of {VARIANCE_TYPES}, got {variance_type!r}")
        if variance_type == "learned":
            return predicted_variance
        prev = self.previous_timestep(t)
        tilde_beta = self._coefficient("posterior_variance_clamped", t, prev)
        beta = self._coefficient("betas", t, prev)
        if variance_type == "fixed_small":
            return tilde_beta
        if variance_type == "fixed_small_log":
            return tilde_beta.sqrt()
        if variance_type == "fixed_large":
            return beta
        if variance_type == "fixed_large_log":
            return torch.log(beta)
        v = self._require_predicted_variance(predicted_variance)
        return learned_range_log_variance(v, torch.log(tilde_beta), torch.log(beta))

    def _require_predicted_variance(self, predicted_variance: torch.Tensor | None) -> torch.Tensor:
        if predicted_variance is None:
            raise ValueError(
                f"variance_type={self.config.variance_type!r} needs the model's variance output: pass a model"
                " output with twice the sample's channels (or predicted_variance)"
            )
        return predicted_variance

    def model_mean(
        self,
        model_output: torch.Tensor,
        sample: torch.Tensor,
        timesteps: Timesteps,
        prev_timesteps: Timesteps | None = None,
        clip_denoised: bool | None = None,
    ) -> torch.Tensor:
        """μ_θ(x_t, t) = μ̃_t(x̂_0, x_t), the posterior mean at the model's estimate x̂_0.

        For ε-prediction without clipping this is μ_θ = (x_t − β'_t/√(1 − ᾱ_t) · ε_θ) / √α'_t.
        ``clip_denoised``: None follows the config (thresholding, else clip_sample); False never
        clips; True clips (or thresholds, if configured) regardless of ``clip_sample``.
        """
        return self.p_mean_variance(model_output, sample, timesteps, prev_timesteps, clip_denoised).mean

    def p_mean_variance(
        self,
        model_output: torch.Tensor,
        sample: torch.Tensor,
        timesteps: Timesteps,
        prev_timesteps: Timesteps | None = None,
        clip_denoised: bool | None = None,
    ) -> ModelMeanVariance:
        """p_θ(x_{t'} | x_t) = N(μ_θ(x_t, t), σ_t² I): mean, σ_t², log σ_t² and x̂_0.

        ``model_output`` may carry the learned variance in extra channels (see `split_model_output`).
        ``timesteps`` is an int or a ``(B,)`` tensor; ``prev_timesteps`` defaults to t − 1.
        """
        prediction, predicted_variance = self.split_model_output(model_output, sample)
        pred_original_sample = self._clip(self.predict_start(prediction, sample, timesteps), clip_denoised)
        mean = self.posterior_mean(pred_original_sample, sample, timesteps, prev_timesteps)
        variance_like = predicted_variance if predicted_variance is not None else sample
        variance = self.model_variance(timesteps, predicted_variance, prev_timesteps, like=variance_like)
        log_variance = self.model_log_variance(timesteps, predicted_variance, prev_timesteps, like=variance_like)
        return ModelMeanVariance(mean, variance.to(sample.dtype), log_variance.to(sample.dtype), pred_original_sample)

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
        return_dict: bool = True,
    ) -> DDPMFromScratchSchedulerOutput | tuple[torch.Tensor, torch.Tensor]:
        """One ancestral step x_t → x_{t'} ~ p_θ(x_{t'} | x_t):

        x̂_0 from the model output (clipped or thresholded per config), μ = μ̃_t(x̂_0, x_t), and
        x_{t'} = μ + σ_t z with z ~ N(0, I) drawn through ``generator`` by diffusers' ``randn_tensor``
        (shape, dtype and device of the model output), except at the last step of the chain (t' = −1, into x_0),
        where x_{t'} = μ and nothing is drawn, whatever t is (difference 6). t' is the next timestep of the current chain, so respaced chains use β'_t = 1 − ᾱ_t/ᾱ_{t'}.

        Args:
            model_output: the model's prediction at (x_t, t); 2C channels for the learned variance types.
            timestep: t, a timestep of the current chain (int or 0-d tensor).
            sample: x_t.
            generator: random number generator for z.
            return_dict: return a [`DDPMFromScratchSchedulerOutput`] rather than a tuple.

        Returns:
            ``prev_sample`` x_{t'} and ``pred_original_sample`` x̂_0 (as an output object or a tuple).
        """
        t = int(timestep)
        row = self._step_coefficients.get(t)
        if row is None:
            raise ValueError(f"timestep {t} is not on the current chain ({self._chain_summary()})")
        prev, sqrt_ac, sqrt_one_minus_ac, coef_x0, coef_xt, std, min_log, max_log = row
        model_output, predicted_variance = self.split_model_output(model_output, sample)

        pred_original_sample = start_from_prediction(self.config.prediction_type, model_output, sample, sqrt_ac,
                                                     sqrt_one_minus_ac)
        pred_original_sample = self._clip(pred_original_sample, None)

        prev_sample = coef_x0 * pred_original_sample + coef_xt * sample

        # The step into x_0 returns the mean (Algorithm 2), also when the chain ends above timestep 0.
        if prev >= 0:
            noise = randn_tensor(
                model_output.shape, generator=generator, device=model_output.device, dtype=model_output.dtype
            )
            variance_type = self.config.variance_type
            if variance_type == "learned":
                noise = self._require_predicted_variance(predicted_variance) ** 0.5 * noise
            elif variance_type == "learned_range":
                v = self._require_predicted_variance(predicted_variance)
                noise = torch.exp(0.5 * learned_range_log_variance(v, min_log, max_log)) * noise
            else:
                noise = noise.mul_(std)
            # Both are fresh tensors of ours: in place saves an allocation, same bits.
            prev_sample = prev_sample.add_(noise)

        if not return_dict:
            return prev_sample, pred_original_sample
        return DDPMFromScratchSchedulerOutput(prev_sample=prev_sample, pred_original_sample=pred_original_sample)
