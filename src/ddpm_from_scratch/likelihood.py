# Copyright 2025 The ddpm-from-scratch authors. Licensed under the Apache License, Version 2.0.
"""The variational bound of a DDPM, in bits per dimension (Ho et al. 2020, eq. 5).

    −log p_θ(x_0) ≤ L = L_T + Σ_{t ≥ 1} L_t + L_0        (diffusers' 0-indexed timesteps t = 0..T−1)

- prior    L_T = KL(q(x_{T−1} | x_0) ‖ N(0, I)), no parameters (`prior_kl`);
- KL terms L_t = KL(q(x_{t−1} | x_t, x_0) ‖ p_θ(x_{t−1} | x_t)) for t ≥ 1, with x_t ~ q(x_t | x_0) (`normal_kl`);
- decoder  L_0 = −log p_θ(x_0 | x at timestep 0), the discretised Gaussian likelihood of the 256
  bins of 8-bit data (`discretized_gaussian_log_likelihood`).

Each term is one Monte-Carlo draw of x_t per image and timestep, as in improved-diffusion's
``calc_bpd_loop``; the sum is an unbiased estimate of the bound. Bits per dimension are nats
divided by (C·H·W · ln 2).

Indexing. In the papers' 1-indexed notation timestep t here is step t + 1: column 0 of
``terms_bits_per_dim`` is L_0 = −log p(x_0 | x_1), column t ≥ 1 is the paper's L_t =
KL(q(x_t | x_{t+1}, x_0) ‖ p_θ(x_t | x_{t+1})), and the prior uses ᾱ at timestep T − 1 (the paper's ᾱ_T).

The decoder's variance. The reverse step out of timestep 0 has the posterior variance β̃_0 = 0
(given x_0, the step's outcome x_0 is certain), which diffusers, and this package's scheduler,
clamp to 1e-20 for sampling. A decoder with σ² = 1e-20 puts all of a pixel's mass in one bin and
its likelihood is degenerate, so here, as in Ho et al.'s code and improved-diffusion (``posterior_log_variance_clipped`` and the
FIXED_LARGE branch of ``p_mean_variance``), the decoder's σ² at timestep 0 is β̃ of timestep 1,
for both fixed_small and fixed_large; for learned_range the lower end of the interpolation at
timestep 0 is that same β̃ (the upper end stays β of timestep 0). See `decoder_log_variance`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from diffusers.utils import BaseOutput
from tqdm.auto import tqdm

from .pipelines.pipeline_utils import output_for_scheduler
from .schedulers.scheduling_ddpm import LEARNED_VARIANCE_TYPES, VARIANCE_TYPES, learned_range_log_variance

if TYPE_CHECKING:  # for the annotations only: any scheduler with these named methods will do
    from .schedulers.scheduling_ddpm import DDPMFromScratchScheduler, ModelMeanVariance

# improved-diffusion floors each pixel's probability here, so that one impossible pixel under a
# near-deterministic decoder costs at most −log(1e-12) ≈ 27.6 nats instead of infinity.
MIN_PROBABILITY = 1e-12
# How far (in bins) a value may sit from the 8-bit grid and still count as on it: float16 holds
# k/127.5 − 1 only to within about 0.03 bins near ±1.
GRID_TOLERANCE = 0.05
# Variance types whose reverse-step variance the bound knows how to read (all of the scheduler's).
SUPPORTED_VARIANCE_TYPES = VARIANCE_TYPES


@dataclass
class VariationalBoundOutput(BaseOutput):
    """Output of [`variational_bound`]; all float64, in bits per dimension, one row per image.

    Args:
        bits_per_dim (`torch.Tensor` of shape `(B,)`):
            The bound L = L_T + Σ_t terms, an upper bound (in expectation) on −log₂ p_θ(x_0) / (C·H·W).
        prior_bits_per_dim (`torch.Tensor` of shape `(B,)`):
            L_T = KL(q(x_{T−1} | x_0) ‖ N(0, I)).
        terms_bits_per_dim (`torch.Tensor` of shape `(B, T)`):
            Column t is the term at diffusers timestep t: the decoder −log p_θ(x_0 | x at timestep 0)
            at t = 0, KL(q(x_{t−1} | x_t, x_0) ‖ p_θ(x_{t−1} | x_t)) for t ≥ 1.
        decoder_bits_per_dim (`torch.Tensor` of shape `(B,)`):
            L_0, the same as ``terms_bits_per_dim[:, 0]``.
        timesteps (`torch.Tensor` of shape `(K,)`, *optional*):
            The chain's timesteps in ascending order, so that column k of ``terms_bits_per_dim`` is the term at
            ``timesteps[k]``; ``0, 1, …, T−1`` for the training chain. On a respaced chain of K timesteps
            ``terms_bits_per_dim`` has K columns: the decoder out of ``timesteps[0]``, then the KL terms of the
            steps ``timesteps[k] → timesteps[k−1]``.
    """

    bits_per_dim: torch.Tensor
    prior_bits_per_dim: torch.Tensor
    terms_bits_per_dim: torch.Tensor
    decoder_bits_per_dim: torch.Tensor
    timesteps: torch.Tensor | None = None


# ----------------------------------------------------------------------------- Gaussian pieces


def normal_kl(
    mean1: torch.Tensor | float,
    logvar1: torch.Tensor | float,
    mean2: torch.Tensor | float,
    logvar2: torch.Tensor | float,
) -> torch.Tensor:
    """KL(N(μ₁, σ₁²) ‖ N(μ₂, σ₂²)) elementwise, in nats, from log-variances:

        KL = ½ (log σ₂² − log σ₁² + σ₁²/σ₂² + (μ₁ − μ₂)²/σ₂² − 1).

    Arguments broadcast against each other; at least one must be a tensor. Log-variances rather
    than variances so that σ² far below float resolution (β̃ near t = 0) stays exact.
    """
    tensor = next(v for v in (mean1, logvar1, mean2, logvar2) if isinstance(v, torch.Tensor))
    logvar1, logvar2 = (torch.as_tensor(v, dtype=tensor.dtype, device=tensor.device) for v in (logvar1, logvar2))
    return 0.5 * (logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2) - 1.0)


def log_standard_normal_mass(lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """log P(lower < Z ≤ upper) = log(Φ(upper) − Φ(lower)) for Z ~ N(0, 1), elementwise.

    Bounds may be ±∞ (an open bin). Computed as log Φ(b) + log(1 − exp(log Φ(a) − log Φ(b))) with
    log Φ from ``torch.special.log_ndtr``, after reflecting the interval to the side where it lies
    mostly in the left tail ((a, b) → (−b, −a) when a + b > 0): Φ(b) − Φ(a) = Φ(−a) − Φ(−b), and
    in the left tail log Φ keeps full relative precision, where Φ itself rounds to 1 in the right
    tail (Φ(9) = 1 in float64) and the difference would cancel to 0.
    """
    flip = (lower + upper) > 0  # NaN for (−∞, ∞): False, and the unreflected form gives log 1 = 0
    lo = torch.where(flip, -upper, lower)
    hi = torch.where(flip, -lower, upper)
    log_hi = torch.special.log_ndtr(hi)
    log_lo = torch.special.log_ndtr(lo)
    return log_hi + torch.log(-torch.expm1(log_lo - log_hi))


def discretized_gaussian_log_likelihood(
    x: torch.Tensor,
    means: torch.Tensor,
    log_scales: torch.Tensor | float,
    min_probability: float = MIN_PROBABILITY,
) -> torch.Tensor:
    """log p(x) of 8-bit data x ∈ {k/127.5 − 1} under N(means, exp(log_scales)²), elementwise, in nats:

        p(x) = Φ((x + 1/255 − μ)/σ) − Φ((x − 1/255 − μ)/σ)     for −1 < x < 1,
        p(−1) = Φ((−1 + 1/255 − μ)/σ),   p(1) = 1 − Φ((1 − 1/255 − μ)/σ),

    the Gaussian mass of x's bin [x − 1/255, x + 1/255], the outer bins open to ±∞ so that the 256
    probabilities sum to 1 (Ho et al. eq. 13). ``log_scales`` is log σ (half the log-variance).
    Each probability is floored at ``min_probability`` (improved-diffusion's 1e-12). Computed in
    float64 (the log-space difference of `log_standard_normal_mass` needs it when σ ≫ 1/255), and
    returned in float64, broadcast to the shape of the inputs.
    """
    x, means = x.double(), means.double()
    log_scales = torch.as_tensor(log_scales, dtype=torch.float64, device=x.device)
    inv_std = torch.exp(-log_scales)
    # Edges from the bin index k rather than from x ± 1/255: neighbouring bins then share bit-identical
    # edges, so the 256 masses telescope to exactly Φ(∞) − Φ(−∞) = 1 even for a σ far below x's rounding.
    k = torch.round((x + 1) * 127.5)
    upper_edge = (k + 0.5) / 127.5 - 1
    lower_edge = (k - 0.5) / 127.5 - 1
    upper = torch.where(k >= 255, math.inf, (upper_edge - means) * inv_std)
    lower = torch.where(k <= 0, -math.inf, (lower_edge - means) * inv_std)
    log_probs = log_standard_normal_mass(lower, upper)
    return log_probs.clamp(min=math.log(min_probability))


def nats_to_bits_per_dim(nats: torch.Tensor) -> torch.Tensor:
    """Σ over each sample's dimensions of ``nats`` / (number of dimensions · ln 2): ``(N, …)`` → ``(N,)``."""
    return nats.flatten(1).sum(1) / (nats[0].numel() * math.log(2.0))


# ----------------------------------------------------------------------------- the terms of the bound


def prior_kl(
    scheduler: DDPMFromScratchScheduler, original_samples: torch.Tensor, timestep: int | None = None
) -> torch.Tensor:
    """L_T per element, in nats: KL(q(x_τ | x_0) ‖ N(0, 1)) with q = N(√ᾱ x_0, 1 − ᾱ), ᾱ = ᾱ_τ:

        KL = ½ (−log(1 − ᾱ) + (1 − ᾱ) + ᾱ x_0² − 1).

    τ is ``timestep``, the first timestep of the sampling chain (default T − 1, the training chain's; a
    respaced chain that starts lower, e.g. 900 for 10 'leading' steps of 1000, starts its sampler from
    N(0, I) there). Uses the scheduler's `q_mean_variance`, in float64: ᾱ_{T−1} is tiny for the usual
    schedules, and in float32 −log(1 − ᾱ) + (1 − ᾱ) − 1 ≈ ᾱ²/2 drowns in the rounding of its parts.
    """
    first = scheduler.config.num_train_timesteps - 1 if timestep is None else int(timestep)
    mean, _, log_variance = scheduler.q_mean_variance(original_samples.double(), first)
    return normal_kl(mean, log_variance, 0.0, 0.0)


def prior_bits_per_dim(
    scheduler: DDPMFromScratchScheduler, original_samples: torch.Tensor, timestep: int | None = None
) -> torch.Tensor:
    """L_T of each sample in bits per dimension, ``(B,)`` (see `prior_kl`)."""
    return nats_to_bits_per_dim(prior_kl(scheduler, original_samples, timestep))


def decoder_log_variance(
    scheduler: DDPMFromScratchScheduler,
    predicted_variance: torch.Tensor | None = None,
    like: torch.Tensor | None = None,
    timestep: int = 0,
    timestep_above: int | None = None,
) -> torch.Tensor:
    """log σ² of the decoder p_θ(x_0 | x at timestep 0), in the convention of Ho et al. and improved-diffusion.

    On a respaced chain the decoder leaves the chain's last timestep τ_1 (``timestep``) and β̃_1 below is the
    posterior variance of the chain's own step into it, from τ_2 (``timestep_above``):
    β̃ = (1 − ᾱ_{τ_1})/(1 − ᾱ_{τ_2}) · (1 − ᾱ_{τ_2}/ᾱ_{τ_1}), and β_0 is 1 − ᾱ_{τ_1}, the respaced chain's
    own β of the step into x_0 (improved-diffusion's respacing builds exactly that chain). With the defaults
    (τ_1 = 0, τ_2 = 1) this is the training chain's decoder.

    fixed_small(_log), fixed_large(_log): log β̃_1, with β̃_1 = (1 − ᾱ_0)/(1 − ᾱ_1) · β_1 the posterior
    variance of timestep 1. The scheduler's own σ² at timestep 0 is β̃_0 = 0 clamped to 1e-20 for
    fixed_small (right for sampling, where the last step adds no noise, but a degenerate decoder)
    and β_0 for fixed_large; improved-diffusion replaces both by β̃_1 "to get a better decoder log
    likelihood", and so does this function, so that bits/dim are comparable with published numbers.
    learned_range: with f = (v + 1)/2 from the model's output v, f log β_0 + (1 − f) log β̃_1 (the
    scheduler's lower end, log 1e-20, replaced by log β̃_1, as improved-diffusion's clipped log-variance
    does). learned: the model's own variance, unchanged.

    Needs num_train_timesteps ≥ 2 for the fixed and learned_range types (β̃_1 must exist). Returns a
    0-d tensor for the fixed types, else the shape of ``predicted_variance``.
    """
    variance_type = scheduler.config.variance_type
    if variance_type == "learned":
        return scheduler.model_log_variance(timestep, predicted_variance, like=like)
    # The posterior log-variance of the step into τ_1 (its clamp at 1e-20 never bites: β̃ > 0).
    if timestep == 0 and timestep_above in (None, 1):
        log_tilde_beta_1 = scheduler.posterior_log_variance(1, like=like)
    else:
        above = timestep + 1 if timestep_above is None else timestep_above
        log_tilde_beta_1 = scheduler.posterior_log_variance(above, timestep, like=like)
    if variance_type in ("fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log"):
        return log_tilde_beta_1
    if variance_type == "learned_range":
        if predicted_variance is None:
            raise ValueError(
                "variance_type='learned_range' needs the model's variance output: the model must return"
                " twice the sample's channels"
            )
        # β_0 = 1 − ᾱ_{τ_1}: the scheduler's log β of the step into x_0, with the same float operations.
        log_beta_0 = torch.log(1 - scheduler.alpha_bar(timestep, like=like))
        return learned_range_log_variance(predicted_variance.to(log_beta_0.dtype), log_tilde_beta_1, log_beta_0)
    raise ValueError(f"variational_bound supports variance_type in {SUPPORTED_VARIANCE_TYPES}, got {variance_type!r}")


def reverse_step_distribution(
    scheduler: DDPMFromScratchScheduler,
    model_output: torch.Tensor,
    sample: torch.Tensor,
    timesteps: torch.Tensor,
    clip_denoised: bool = True,
    prev_timesteps: torch.Tensor | None = None,
    decoder_timestep_above: int | None = None,
) -> ModelMeanVariance:
    """p_θ(x_{t'} | x_t) = N(μ_θ, σ_t²) for the bound: the scheduler's `p_mean_variance`, except
    that the decoder rows (t' = −1: the step into x_0) get the variance of `decoder_log_variance`.

    ``timesteps`` is a ``(N,)`` long tensor, one per row of ``sample``; ``prev_timesteps`` the rows' t'
    (default t − 1, the training chain); ``decoder_timestep_above`` the chain's timestep above its last
    one (default: that timestep + 1). Returns the scheduler's ``ModelMeanVariance`` (mean, variance,
    log_variance, pred_original_sample).
    """
    out = scheduler.p_mean_variance(model_output, sample, timesteps, prev_timesteps, clip_denoised=clip_denoised)
    first = timesteps == 0 if prev_timesteps is None else prev_timesteps < 0
    if not bool(first.any()):
        return out
    _, predicted_variance = scheduler.split_model_output(model_output, sample)
    decoder_timestep = int(timesteps[first][0])
    decoder = decoder_log_variance(scheduler, predicted_variance, like=sample, timestep=decoder_timestep,
                                   timestep_above=decoder_timestep_above).to(out.log_variance.dtype)
    mask = first.reshape(-1, *([1] * (sample.ndim - 1)))
    log_variance = torch.where(mask, decoder, out.log_variance)
    variance = torch.where(mask, decoder.exp(), out.variance)
    return out._replace(variance=variance, log_variance=log_variance)


def decoder_nll(original_samples: torch.Tensor, mean: torch.Tensor, log_variance: torch.Tensor | float) -> torch.Tensor:
    """L_0 per element, in nats: −log p_θ(x_0 | x_1) = −log ∫_{bin(x_0)} N(y; μ_θ, σ²) dy
    (`discretized_gaussian_log_likelihood` with log σ = ½ log σ²); float64."""
    return -discretized_gaussian_log_likelihood(original_samples, mean, 0.5 * torch.as_tensor(log_variance))


def continuous_decoder_nll(original_samples: torch.Tensor, mean: torch.Tensor,
                           log_variance: torch.Tensor | float) -> torch.Tensor:
    """L_0 per element, in nats, for real-valued data: −log N(x_0; μ_θ, σ²) = ½ (log 2π + log σ² + (x_0 − μ_θ)²/σ²).

    A density, not a probability: the bound is then on −log p_θ(x_0) as a density (Sohl-Dickstein et al.'s
    K for the Swiss roll), comparable only with other densities of the same data. float64.
    """
    x, mean = original_samples.double(), mean.double()
    log_variance = torch.as_tensor(log_variance, dtype=torch.float64, device=x.device)
    return 0.5 * (math.log(2 * math.pi) + log_variance + (x - mean) ** 2 * torch.exp(-log_variance))


# The decoder −log p_θ(x_0 | x_1) of each kind of data: 8-bit images, or real-valued vectors.
DECODERS = {"discretized": decoder_nll, "continuous": continuous_decoder_nll}


def vb_terms_bits_per_dim(
    scheduler: DDPMFromScratchScheduler,
    model_output: torch.Tensor,
    sample: torch.Tensor,
    original_samples: torch.Tensor,
    timesteps: torch.Tensor,
    clip_denoised: bool = True,
    decoder: str = "discretized",
    prev_timesteps: torch.Tensor | None = None,
    decoder_timestep_above: int | None = None,
) -> torch.Tensor:
    """One term of the bound per row, in bits per dimension, ``(N,)`` float64:

        t' ≥ 0:  KL(q(x_{t'} | x_t, x_0) ‖ p_θ(x_{t'} | x_t)) = KL(N(μ̃_t, β̃_t) ‖ N(μ_θ, σ_t²)),
        t' = −1: −log p_θ(x_0 | x_t)  (``decoder``: "discretized" for 8-bit images,
                 `decoder_nll`; "continuous" for real-valued data, `continuous_decoder_nll`),

    where ``sample`` is x_t ~ q(x_t | x_0), ``original_samples`` is x_0, and ``model_output`` is the
    network's output at (x_t, t). t' is the row's ``prev_timesteps`` (default t − 1: the training chain,
    whose decoder is at t = 0); on a respaced chain every quantity is the shorter chain's, β'_t = 1 −
    ᾱ_t/ᾱ_{t'}. μ̃_t, β̃_t come from the scheduler's `q_posterior_mean_variance`, μ_θ from its
    `p_mean_variance` (x̂_0 under ``prediction_type``, clipped to [−1, 1] when ``clip_denoised``), σ_t² from
    its ``variance_type`` (see `reverse_step_distribution`).
    """
    timesteps = torch.as_tensor(timesteps, dtype=torch.long, device=sample.device).reshape(-1)
    if timesteps.numel() == 1:
        timesteps = timesteps.expand(sample.shape[0])
    if prev_timesteps is not None:
        prev_timesteps = torch.as_tensor(prev_timesteps, dtype=torch.long, device=sample.device).reshape(-1)
        prev_timesteps = prev_timesteps.expand(sample.shape[0]) if prev_timesteps.numel() == 1 else prev_timesteps
    true_mean, _, true_log_variance = scheduler.q_posterior_mean_variance(
        original_samples, sample, timesteps, prev_timesteps)
    model = reverse_step_distribution(scheduler, model_output, sample, timesteps, clip_denoised, prev_timesteps,
                                      decoder_timestep_above)

    # KL in float64: Σ over thousands of pixels of differences of O(1) means.
    kl = normal_kl(true_mean.double(), true_log_variance.double(), model.mean.double(), model.log_variance.double())
    terms = nats_to_bits_per_dim(kl)
    first = timesteps == 0 if prev_timesteps is None else prev_timesteps < 0
    if bool(first.any()):
        # Only the decoder rows: its float64 CDFs cost more than the KL, and the KL at t = 0 (against
        # a posterior variance of 1e-20) is meaningless.
        if decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {tuple(DECODERS)}, got {decoder!r}")
        nll = DECODERS[decoder](original_samples[first], model.mean[first], _rows(model.log_variance, first))
        terms[first] = nats_to_bits_per_dim(nll)
    return terms


def _rows(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    # A per-row coefficient may be 0-d (a single timestep's constant); select rows only when it has them.
    return values[mask] if values.ndim > 0 and values.shape[0] == mask.shape[0] else values


# ----------------------------------------------------------------------------- input checks


def check_images(images: torch.Tensor) -> torch.Tensor:
    """Validate a batch of 8-bit images on [−1, 1] and return it snapped exactly onto the grid.

    Requires a floating-point ``(B, C, H, W)`` tensor, B ≥ 1, finite, within [−1, 1] and within
    `GRID_TOLERANCE` bins of a grid value k/127.5 − 1, k = 0..255. The bound is a likelihood of the
    discrete data, so values are replaced by k/127.5 − 1 (removing rounding from an earlier
    uint8 → float conversion). Returns float64 for float64 input, else float32.

    Raises:
        TypeError: if ``images`` is not a tensor.
        ValueError: naming the first problem found otherwise.
    """
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor of shape (B, C, H, W), got {type(images).__name__}")
    if images.ndim != 4:
        raise ValueError(f"images must have shape (B, C, H, W) (4 dimensions), got shape {tuple(images.shape)}")
    if images.shape[0] == 0 or images.numel() == 0:
        raise ValueError(
            f"images must hold at least one image with at least one pixel, got shape {tuple(images.shape)}"
        )
    if not images.is_floating_point():
        raise ValueError(
            f"images must be floating point in [-1, 1] (k/127.5 - 1 for 8-bit k), got dtype {images.dtype}"
        )
    x = images.to(torch.float64 if images.dtype == torch.float64 else torch.float32)
    if not bool(torch.isfinite(x).all()):
        raise ValueError("images contain NaN or infinite values")
    slack = GRID_TOLERANCE / 127.5
    low, high = x.min().item(), x.max().item()
    if low < -1 - slack or high > 1 + slack:
        raise ValueError(f"images must lie in [-1, 1], got values in [{low:.6g}, {high:.6g}]")
    levels = (x + 1) * 127.5
    k = torch.round(levels)
    off_grid = (levels - k).abs().max().item()
    if off_grid > GRID_TOLERANCE:
        raise ValueError(
            "images must lie on the 8-bit grid k/127.5 - 1 (k = 0..255), but a value is"
            f" {off_grid:.3g} bins from it (tolerance {GRID_TOLERANCE}); quantise them first"
            " (bfloat16 cannot hold the grid: use float32)"
        )
    return k.clamp(0, 255) / 127.5 - 1


def ddpm_chain(scheduler: Any) -> DDPMFromScratchScheduler:
    """The DDPM chain a scheduler's config describes, as a `DDPMFromScratchScheduler` (whose methods give the bound).

    Our scheduler is returned as it is; diffusers' `DDPMScheduler`, or any scheduler whose config
    `DDPMFromScratchScheduler.from_config` accepts (the β schedule, ``prediction_type``, ``variance_type``,
    ``clip_sample``, thresholding), is mapped to one, so its bound is exactly the one our scheduler gives for
    the same config. A config that names something our scheduler refuses is a ValueError naming the class and,
    through our scheduler's own message, the key.
    """
    from .schedulers.scheduling_ddpm import DDPMFromScratchScheduler

    if hasattr(scheduler, "q_posterior_mean_variance"):  # ours, or anything with its named methods
        return scheduler
    config = getattr(scheduler, "config", None)
    if config is None:
        raise ValueError(f"the bound needs a DDPM scheduler config; {type(scheduler).__name__} has none")
    try:
        return DDPMFromScratchScheduler.from_config(dict(config))
    except (ValueError, TypeError) as error:
        raise ValueError(f"the bound needs the DDPM chain of the scheduler's config, and {type(scheduler).__name__}'s "
                         f"config cannot give one: {error}") from None


def _check_scheduler(scheduler: DDPMFromScratchScheduler) -> None:
    variance_type = scheduler.config.variance_type
    if variance_type not in SUPPORTED_VARIANCE_TYPES:
        raise ValueError(
            f"variational_bound supports variance_type in {SUPPORTED_VARIANCE_TYPES}, got {variance_type!r}"
        )
    if scheduler.config.num_train_timesteps < 2:
        raise ValueError(
            "variational_bound needs num_train_timesteps >= 2: the decoder's variance is the posterior"
            f" variance of timestep 1; got num_train_timesteps={scheduler.config.num_train_timesteps}"
        )


def bound_timesteps(
    scheduler: DDPMFromScratchScheduler,
    num_inference_steps: int | None = None,
    timesteps: Any = None,
) -> list[int]:
    """The descending timesteps τ_K > … > τ_1 of the chain whose bound is asked for.

    None of both: the training chain T − 1, …, 0. ``num_inference_steps`` = K: the K timesteps the scheduler's
    ``set_timesteps(K)`` visits (its ``timestep_spacing`` and ``steps_offset``), so the bound is that of the
    sampler run with the same K. ``timesteps``: an explicit chain, as ``set_timesteps(timesteps=…)`` takes it.

    Raises:
        ValueError: both given; K not an integer in [2, T]; timesteps not integers, not strictly decreasing,
            outside [0, T) or fewer than 2 (the decoder's variance is that of the chain's step into its last
            timestep).
    """
    T = scheduler.config.num_train_timesteps
    if num_inference_steps is not None and timesteps is not None:
        raise ValueError("give num_inference_steps or timesteps for the bound's chain, not both")
    if timesteps is not None:
        chain = scheduler._validated_custom_timesteps(timesteps).tolist()
    elif num_inference_steps is not None:
        K = num_inference_steps
        if isinstance(K, bool) or not isinstance(K, (int, np.integer)) or not 1 <= K <= T:
            raise ValueError(f"num_inference_steps must be an integer between 1 and num_train_timesteps={T}, "
                             f"got {K!r}")
        chain = scheduler._spaced_timesteps(int(K)).tolist()
    else:
        return list(range(T - 1, -1, -1))
    if len(chain) < 2:
        raise ValueError(f"the bound needs a chain of at least 2 timesteps (its decoder's variance is the posterior "
                         f"variance of the step into the last one), got timesteps {chain}")
    return chain


# ----------------------------------------------------------------------------- the whole bound


def _check_real_samples(samples: torch.Tensor, decoder: str) -> torch.Tensor:
    """Real-valued samples for the continuous decoder: a finite floating ``(B, …)`` tensor, B ≥ 1."""
    if decoder != "continuous":
        raise ValueError(f"decoder must be 'discretized' or 'continuous', got {decoder!r}")
    if not isinstance(samples, torch.Tensor) or not samples.is_floating_point():
        raise TypeError(f"samples must be a floating-point tensor, got {type(samples).__name__}")
    if samples.dim() < 2 or samples.shape[0] < 1:
        raise ValueError(f"samples must have shape (B, ...) with B ≥ 1, got {tuple(samples.shape)}")
    if not torch.isfinite(samples).all():
        raise ValueError("samples must be finite")
    return samples


def _draw_noise(shape: torch.Size, generator: torch.Generator | None, dtype: torch.dtype, device: torch.device):
    # Drawn on the generator's device and moved, so one CPU generator gives the same noise everywhere.
    draw_device = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, dtype=dtype, device=draw_device).to(device)


def _call_model(unet: Any, sample: torch.Tensor, timesteps: torch.Tensor,
                class_labels: torch.Tensor | None = None) -> torch.Tensor:
    # The network runs in its own dtype (a half-precision U-Net gets half-precision inputs, as in the
    # pipeline); the bound is computed in the sample's.
    model_dtype = getattr(unet, "dtype", None)
    model_input = sample.to(model_dtype) if isinstance(model_dtype, torch.dtype) else sample
    if class_labels is None:
        output = unet(model_input, timesteps)
    else:
        output = unet(model_input, timesteps, class_labels=class_labels)
    if hasattr(output, "sample"):
        output = output.sample
    elif isinstance(output, (tuple, list)):
        output = output[0]
    return output.to(sample.dtype)


@torch.no_grad()
def variational_bound(
    unet: Any,
    scheduler: DDPMFromScratchScheduler,
    images: torch.Tensor,
    generator: torch.Generator | None = None,
    clip_denoised: bool = True,
    batch_timesteps: int | None = None,
    max_batch_size: int = 256,
    progress: bool = True,
    num_inference_steps: int | None = None,
    timesteps: Any = None,
    decoder: str = "discretized",
    class_labels: torch.Tensor | None = None,
) -> VariationalBoundOutput:
    """Every term of the variational bound of ``images`` under a DDPM, in bits per dimension.

    For each timestep t of the chain τ_K > … > τ_1 (the training chain T−1, …, 0 by default): draw ε through
    ``generator``, x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε (the scheduler's ``add_noise``), run the network on (x_t, t),
    and score KL(q(x_{t'} | x_t, x_0) ‖ p_θ(x_{t'} | x_t)) towards the chain's next timestep t' and the
    decoder −log p_θ(x_0 | x_{τ_1}) at the last one (`vb_terms_bits_per_dim`); add L_T =
    KL(q(x_{τ_K} | x_0) ‖ N(0, I)) (`prior_bits_per_dim`).

    With ``num_inference_steps`` = K (or an explicit ``timesteps`` chain) this is the bound of the K-step
    generative model the scheduler samples after ``set_timesteps(K)``: its own β'_t = 1 − ᾱ_t/ᾱ_{t'}, posterior
    β̃'_t, prior at τ_K and decoder out of τ_1; at K = T it is the training chain's bound, bit for bit.
    The reverse step's variance follows the scheduler's ``variance_type`` (all six are supported; a scheduler
    with its own `model_variance`, as Analytic-DPM's, is read through it), with the decoder convention of
    `decoder_log_variance`; x̂_0 follows its ``prediction_type``. A network with a learned variance (2C output
    channels) under a fixed-variance scheduler is scored on its ε alone, as the pipeline samples it.

    Several timesteps share one network call: the images are stacked ``batch_timesteps`` times, row
    j·B + i holding image i at the j-th timestep of the chunk. The noise is drawn one (B, C, H, W)
    tensor per timestep in descending t whatever the chunking, so the result does not depend on
    ``batch_timesteps``. Put the network in eval mode first (dropout would perturb the bound).

    Args:
        unet: the noise (or x_0, or v) predictor: ``unet(sample, timesteps).sample`` (a diffusers
            U-Net, [`DDPMFromScratchUNet`], or anything with that contract), on the images' device.
        scheduler: a [`DDPMFromScratchScheduler`] (its named methods give every quantity; its training
            chain is the default, whatever `set_timesteps` did), or a scheduler whose config maps to one.
        images: ``(B, C, H, W)`` 8-bit images on [−1, 1], values k/127.5 − 1 (see `check_images`).
        generator: the random source of the draws x_t ~ q(x_t | x_0), for a reproducible estimate.
        clip_denoised: clip x̂_0 to [−1, 1] (or threshold it, if the scheduler is configured to)
            before the posterior mean, as improved-diffusion's ``calc_bpd_loop`` does by default.
        batch_timesteps: timesteps per network call; default ``max(1, max_batch_size // B)``.
        max_batch_size: the largest network batch the default ``batch_timesteps`` aims for.
        progress: show a tqdm progress bar over the chain's timesteps.
        num_inference_steps: K, the respaced chain of ``set_timesteps(K)`` (see `bound_timesteps`).
        timesteps: an explicit descending chain instead (at least 2 timesteps in [0, T)).
        decoder: ``"discretized"`` (8-bit images, the default) or ``"continuous"``: real-valued samples of any
            shape ``(B, …)`` (the toy problems' points), L_0 their Gaussian density (`continuous_decoder_nll`);
            pass ``clip_denoised=False`` for data not confined to [−1, 1].
        class_labels: ``(B,)`` each image's class, for a class-conditional network: the bound of p_θ(x_0 | c).
            None: the network as it is (a conditional one then reads the null label: p_θ(x_0 | ∅)).

    Returns:
        [`VariationalBoundOutput`] with ``bits_per_dim``, ``prior_bits_per_dim``,
        ``terms_bits_per_dim`` (B, K), ``decoder_bits_per_dim`` and ``timesteps`` (K, ascending),
        float64 on the images' device; ``bits_per_dim == prior_bits_per_dim + terms_bits_per_dim.sum(-1)``.

    Raises:
        ValueError: for images off the grid, out of range or of the wrong shape; unsupported
            scheduler settings; a bad chain (see `bound_timesteps`) or ``batch_timesteps``.
    """
    x0 = check_images(images) if decoder == "discretized" else _check_real_samples(images, decoder)
    scheduler = ddpm_chain(scheduler)
    _check_scheduler(scheduler)
    chain = bound_timesteps(scheduler, num_inference_steps, timesteps)
    training_chain = num_inference_steps is None and timesteps is None
    num_images, device = x0.shape[0], x0.device
    if class_labels is not None:
        class_labels = torch.as_tensor(class_labels, device=device).reshape(-1).long()
        if class_labels.numel() != num_images:
            raise ValueError(f"class_labels has {class_labels.numel()} labels for {num_images} images")
    if batch_timesteps is None:
        batch_timesteps = max(1, max_batch_size // num_images)
    if isinstance(batch_timesteps, bool) or not isinstance(batch_timesteps, int) or batch_timesteps < 1:
        raise ValueError(f"batch_timesteps must be a positive integer, got {batch_timesteps!r}")
    previous = {t: p for t, p in zip(chain, chain[1:] + [-1])}
    decoder_timestep_above = None if training_chain else chain[-2]
    reads_variance = scheduler.config.variance_type in LEARNED_VARIANCE_TYPES

    # Column k holds the term at chain[K − 1 − k]: ascending timesteps, the decoder first.
    num_steps = len(chain)
    terms = torch.zeros(num_images, num_steps, dtype=torch.float64, device=device)
    with tqdm(total=num_steps, disable=not progress, desc="variational bound", unit="step") as bar:
        for start in range(0, num_steps, batch_timesteps):
            chunk = chain[start:start + batch_timesteps]
            timesteps_ = torch.tensor(chunk, dtype=torch.long, device=device).repeat_interleave(num_images)
            noise = torch.cat([_draw_noise(x0.shape, generator, x0.dtype, device) for _ in chunk])
            original = x0.repeat(len(chunk), *[1] * (x0.dim() - 1))
            sample = scheduler.add_noise(original, noise, timesteps_)
            labels = None if class_labels is None else class_labels.repeat(len(chunk))
            # A learned-variance network under a fixed-variance scheduler is read as the pipelines read it.
            model_output = output_for_scheduler(_call_model(unet, sample, timesteps_, labels), x0.shape[1],
                                                reads_variance)
            prev = None
            if not training_chain:
                prev = torch.tensor([previous[t] for t in chunk], dtype=torch.long, device=device)
                prev = prev.repeat_interleave(num_images)
            chunk_terms = vb_terms_bits_per_dim(scheduler, model_output, sample, original, timesteps_, clip_denoised,
                                                prev_timesteps=prev, decoder_timestep_above=decoder_timestep_above,
                                                decoder=decoder)
            columns = [num_steps - 1 - (start + j) for j in range(len(chunk))]
            terms[:, columns] = chunk_terms.reshape(len(chunk), num_images).T
            bar.update(len(chunk))

    prior = prior_bits_per_dim(scheduler, x0, None if training_chain else chain[0])
    return VariationalBoundOutput(
        bits_per_dim=prior + terms.sum(-1),
        prior_bits_per_dim=prior,
        terms_bits_per_dim=terms,
        decoder_bits_per_dim=terms[:, 0].clone(),
        timesteps=torch.tensor(chain[::-1], dtype=torch.long),
    )
