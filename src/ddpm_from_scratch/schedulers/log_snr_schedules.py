"""Noise schedules given by their log SNR, λ_t = log(ᾱ_t / (1 − ᾱ_t)), for a scheduler's ``trained_betas``.

They are built here and handed to `DDPMFromScratchScheduler` (or diffusers' `DDPMScheduler`) as plain numbers, so a
saved scheduler never needs this module.
"""

import torch

from .scheduling_ddpm import linear_betas


def betas_from_log_snr(log_snr: torch.Tensor) -> torch.Tensor:
    """β_0..β_{T−1} (float64) of the schedule with log SNR `log_snr`: ᾱ_t = sigmoid(λ_t), β_t = 1 − ᾱ_t / ᾱ_{t−1}
    (ᾱ_{−1} = 1)."""
    alphas_cumprod = torch.sigmoid(log_snr.to(torch.float64))
    previous = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]])
    return 1 - alphas_cumprod / previous


def log_snr_linear_betas(num_train_timesteps: int, log_snr_max: float, log_snr_min: float) -> torch.Tensor:
    """β_0..β_{T−1} (float64) whose log SNR_t = log(ᾱ_t / (1 − ᾱ_t)) falls linearly from `log_snr_max` to `log_snr_min`.

    ᾱ_t = sigmoid(log SNR_t) and β_t = 1 − ᾱ_t / ᾱ_{t−1} (ᾱ_{−1} = 1). Equal steps in log SNR share the
    bound's bits evenly over a short chain, and `log_snr_max` sets the first step's noise σ² ≈ e^{−log_snr_max},
    the decoder's resolution. Pass the result as ``trained_betas``.
    """
    if not log_snr_max > log_snr_min:
        raise ValueError(f"log_snr_max must exceed log_snr_min, got {log_snr_max} and {log_snr_min}")
    return betas_from_log_snr(torch.linspace(log_snr_max, log_snr_min, num_train_timesteps, dtype=torch.float64))


def _linear_log_snr_below(num_train_timesteps: int, beta_start: float, beta_end: float,
                          log_snr_max: float) -> torch.Tensor:
    """λ_lin(t) = log(ᾱ_t / (1 − ᾱ_t)) of the linear schedule (float64), checked to start below `log_snr_max`."""
    base = linear_betas(num_train_timesteps, beta_start, beta_end).to(torch.float64)
    alphas_cumprod = torch.cumprod(1 - base, dim=0)
    log_snr = torch.log(alphas_cumprod) - torch.log1p(-alphas_cumprod)
    if not log_snr_max > log_snr[0]:
        raise ValueError(f"log_snr_max={log_snr_max} must exceed the linear schedule's own first log SNR "
                         f"{float(log_snr[0]):.2f}")
    return log_snr


def high_snr_head_betas(num_train_timesteps: int, log_snr_max: float, head_steps: int, beta_start: float = 0.0001,
                        beta_end: float = 0.02) -> torch.Tensor:
    """β_0..β_{T−1} (float64): the linear schedule, with its first `head_steps` steps replaced by a fall in log SNR
    that is linear from `log_snr_max` to the linear schedule's own log SNR at step `head_steps`.

    log SNR_t = λ_max + (λ_lin(n) − λ_max)·t/n for t < n = `head_steps`, λ_lin(t) from there on. The linear
    schedule starts at λ_lin(0) ≈ −log β_1 (9.2 for β_1 = 1e-4), too noisy for the decoder to resolve the 8-bit grid,
    and falls from there in few, large steps; the head reaches a higher SNR in steps small enough for the bound,
    and every later step, where the samples' structure is learnt, is the linear schedule's. Pass the result as
    ``trained_betas``.
    """
    if not 0 < head_steps < num_train_timesteps:
        raise ValueError(f"head_steps must lie in (0, {num_train_timesteps}), got {head_steps}")
    log_snr = _linear_log_snr_below(num_train_timesteps, beta_start, beta_end, log_snr_max)
    steps = torch.arange(head_steps, dtype=torch.float64)
    log_snr[:head_steps] = log_snr_max + (log_snr[head_steps] - log_snr_max) * steps / head_steps
    return betas_from_log_snr(log_snr)


def high_snr_prefix_betas(num_train_timesteps: int, log_snr_max: float, prefix_steps: int,
                          beta_start: float = 0.0001, beta_end: float = 0.02) -> torch.Tensor:
    """β_0..β_{N+T−1} (float64): `prefix_steps` = N new steps of high SNR, then the whole linear schedule of
    `num_train_timesteps` = T steps, unchanged in ᾱ.

    log SNR_t = λ_max + (λ_lin(0) − λ_max)·t/N for t < N, and ᾱ_{N+s} = ᾱ_lin(s) for s = 0..T−1, so the step from
    N − 1 into N continues the prefix's spacing. Unlike `high_snr_head_betas`, which replaces the linear
    schedule's first steps, every step of the linear schedule (where the samples' structure is learnt, and what
    the samplers' step counts were tuned on) is kept; the prefix only adds the high-SNR end that lets the decoder
    resolve the 8-bit grid. The chain then has N + T timesteps. Pass the result as ``trained_betas``.
    """
    if not prefix_steps > 0:
        raise ValueError(f"prefix_steps must be positive, got {prefix_steps}")
    log_snr = _linear_log_snr_below(num_train_timesteps, beta_start, beta_end, log_snr_max)
    steps = torch.arange(prefix_steps, dtype=torch.float64)
    prefix = log_snr_max + (log_snr[0] - log_snr_max) * steps / prefix_steps
    return betas_from_log_snr(torch.cat([prefix, log_snr]))
