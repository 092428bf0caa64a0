# Copyright 2026 The ddpm-from-scratch authors. Licensed under the Apache License, Version 2.0.
"""Analytic-DPM for any ε-model the package loads: estimate Γ, build the scheduler, find the optimal trajectory.

- `estimate_gamma`: Γ_t = E_{x_0, ε} ‖ε_θ(√ᾱ_t x_0 + √(1 − ᾱ_t) ε, t)‖² / d on training images, every training
  timestep (Bao et al. 2022, eq. 8: 10–100 images per timestep suffice).
- `analytic_scheduler`: an [`AnalyticDPMScheduler`] with a pipeline's chain and that Γ.
- `optimal_trajectory`: the K timesteps T − 1 = τ_K > … > τ_1 = 0 that minimise the bound of the K-step chain
  under σ*² (Bao et al. §4, dynamic programming over the same Γ; no network calls).

σ*² itself lives in `scheduling_analytic_dpm.analytic_variance` (the shipped scheduler file), the one place it is
written; the trajectory's cost is built from it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..likelihood import _call_model, _draw_noise, ddpm_chain
from .scheduling_analytic_dpm import AnalyticDPMScheduler, analytic_variance
from .scheduling_ddpm import DDPMFromScratchScheduler


def check_epsilon_model(scheduler: Any) -> None:
    """Refuse, naming ``prediction_type``, a chain whose network does not predict ε."""
    prediction_type = scheduler.config.get("prediction_type", "epsilon")
    if prediction_type != "epsilon":
        raise ValueError(f"Analytic-DPM needs an ε-model (Γ is E‖ε_θ‖²/d), but the scheduler has "
                         f"prediction_type={prediction_type!r}")


# How Γ_t is estimated from (x_0, ε, ε_θ): both have the same expectation for the Bayes-optimal ε-model.
GAMMA_ESTIMATORS = ("norm", "error")


@torch.no_grad()
def estimate_gamma(
    unet: Any,
    scheduler: Any,
    images: torch.Tensor,
    generator: torch.Generator | None = None,
    max_batch_size: int = 512,
    progress: bool = True,
    estimator: str = "error",
) -> list[float]:
    """Γ_t for t = 0..T−1, from ``images`` (one noise draw each) and their dimensions:

        "norm":  Γ_t = mean ε_θ(x_t, t)²                (Bao et al. 2022, eq. 8: needs no x_0 or ε)
        "error": Γ_t = 1 − mean (ε − ε_θ(x_t, t))²      (the default)

    For the optimal ε* = E[ε | x_t] the two agree in expectation (E‖ε − ε*‖² = 1 − E‖ε*‖², ε* being a projection
    of ε), and σ*² reads Γ only through the x̂_0 error (β̄_t/ᾱ_t)(1 − Γ_t). "norm" gets that error as a difference
    of two numbers near 1 and multiplies it by β̄_t/ᾱ_t (10⁴ at the end of the linear schedule): on the digits, 100
    images leave Γ_t ≥ 1 at a quarter of the timesteps past t = 450, i.e. a zero x̂_0 error, and the optimal
    trajectory then takes one free-looking jump from t ≈ 450 to 0 (1,780 bits/dim at K = 10). "error" measures
    the x̂_0 error directly (never negative: Γ ≤ 1), and for a model that is not optimal it is the error that
    the bound's KL term actually pays, so σ*² = β̃ + E‖μ̃ − μ_θ‖²/d holds for that model.

    ``images`` are training images in [−1, 1], ``(M, C, H, W)``; the noise is drawn through ``generator``, one
    ``(M, C, H, W)`` tensor per timestep in ascending t. A network with a learned variance (2C output channels) is
    read on its first C channels, its ε. Put the network in eval mode first. Returns T float64 values.

    Raises:
        ValueError: the scheduler's ``prediction_type`` is not ``"epsilon"``; ``images`` not ``(M, C, H, W)``;
            an unknown ``estimator``.
    """
    check_epsilon_model(scheduler)
    if estimator not in GAMMA_ESTIMATORS:
        raise ValueError(f"estimator must be one of {GAMMA_ESTIMATORS}, got {estimator!r}")
    chain = ddpm_chain(scheduler)
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[0] == 0:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a (M, C, H, W) tensor of training images, got {shape}")
    x0 = images.float()
    num_images, channels, device = x0.shape[0], x0.shape[1], x0.device
    T = chain.config.num_train_timesteps
    per_call = max(1, max_batch_size // num_images)
    gamma = np.zeros(T, dtype=np.float64)
    with tqdm(total=T, disable=not progress, desc="Analytic-DPM Γ", unit="step") as bar:
        for start in range(0, T, per_call):
            chunk = list(range(start, min(start + per_call, T)))
            timesteps = torch.tensor(chunk, dtype=torch.long, device=device).repeat_interleave(num_images)
            noise = torch.cat([_draw_noise(x0.shape, generator, x0.dtype, device) for _ in chunk])
            sample = chain.add_noise(x0.repeat(len(chunk), 1, 1, 1), noise, timesteps)
            epsilon = _call_model(unet, sample, timesteps)[:, :channels].double()
            if estimator == "norm":
                moment = epsilon.pow(2).reshape(len(chunk), -1).mean(1)
            else:
                moment = 1 - (noise.double() - epsilon).pow(2).reshape(len(chunk), -1).mean(1)
            gamma[chunk] = moment.cpu().numpy()
            bar.update(len(chunk))
    return gamma.tolist()


def analytic_scheduler(scheduler: Any, gamma: list[float] | np.ndarray) -> AnalyticDPMScheduler:
    """An [`AnalyticDPMScheduler`] on ``scheduler``'s chain (β schedule, clipping, spacing) with the table Γ.

    A learned ``variance_type`` of the source is replaced by ``"fixed_small"``: σ*² replaces the variance, and the
    network's ε channels are what Γ was estimated on.
    """
    check_epsilon_model(scheduler)
    config = {key: value for key, value in dict(ddpm_chain(scheduler).config).items() if not key.startswith("_")}
    config.pop("gamma", None)
    config["variance_type"] = "fixed_small"
    return AnalyticDPMScheduler(gamma=gamma, **config)


def trajectory_costs(scheduler: AnalyticDPMScheduler) -> np.ndarray:
    """C[s, t] = log σ*²_{t|s} − log β̃_{t|s} for 0 ≤ s < t < T (∞ elsewhere), float64.

    At the optimal variance the bound's KL term of the step t → s is (d/2) C[s, t] (KL(N(μ̃, β̃) ‖ N(μ_θ, σ*²)) =
    ½ d log(σ*²/β̃) when σ*² = β̃ + E‖μ̃ − μ_θ‖²/d), so the chain's KL terms sum to (d/2) Σ_k C[τ_{k−1}, τ_k].
    """
    T = scheduler.config.num_train_timesteps
    ac = scheduler.alphas_cumprod.double()
    gamma = torch.as_tensor(scheduler.config.gamma, dtype=torch.float64)
    s, t = torch.meshgrid(torch.arange(T), torch.arange(T), indexing="ij")
    valid = s < t
    ac_s, ac_t = ac[s.clamp(max=T - 1)], ac[t]
    ac_s = torch.where(valid, ac_s, torch.ones_like(ac_s) * 0.5)  # any ᾱ_s > ᾱ_t keeps the invalid cells finite
    ac_t = torch.where(valid, ac_t, torch.full_like(ac_t, 0.25))
    sigma2 = analytic_variance(ac_t, ac_s, gamma[t])
    tilde_beta = (1 - ac_s) / (1 - ac_t) * (1 - ac_t / ac_s)
    cost = torch.log(sigma2) - torch.log(tilde_beta)
    return torch.where(valid, cost, torch.full_like(cost, math.inf)).numpy()


def optimal_trajectory(scheduler: AnalyticDPMScheduler, num_inference_steps: int) -> list[int]:
    """The K descending timesteps T − 1 = τ_K > … > τ_1 = 0 that minimise Σ_k C[τ_{k−1}, τ_k] (`trajectory_costs`).

    Dynamic programming over the K layers: D_1(0) = 0, D_k(t) = min_{s<t} D_{k−1}(s) + C[s, t]; O(K·T²), a few
    seconds for T = 1000. Pass the result as ``timesteps=`` to the pipeline, `set_timesteps` or the bound.

    Raises:
        ValueError: K not an integer in [2, T].
    """
    T = scheduler.config.num_train_timesteps
    K = num_inference_steps
    if isinstance(K, bool) or not isinstance(K, (int, np.integer)) or not 2 <= K <= T:
        raise ValueError(f"num_inference_steps must be an integer between 2 and num_train_timesteps={T} for a "
                         f"trajectory from T - 1 to 0, got {K!r}")
    if K == T:
        return list(range(T - 1, -1, -1))
    cost = trajectory_costs(scheduler)
    best = np.full(T, math.inf)
    best[0] = 0.0
    parents = np.zeros((K, T), dtype=np.int64)
    for k in range(1, K):
        total = best[:, None] + cost  # total[s, t]: reach s with k nodes, then step t → s
        parents[k] = np.argmin(total, axis=0)
        best = total[parents[k], np.arange(T)]
    path = [T - 1]
    for k in range(K - 1, 0, -1):
        path.append(int(parents[k][path[-1]]))
    return path


def to_analytic(pipeline: Any, images: torch.Tensor, generator: torch.Generator | None = None,
                progress: bool = True, estimator: str = "error") -> Any:
    """The same pipeline (class, U-Net and settings such as ``id2label`` or ``log_snr_prefix_steps``) with an
    [`AnalyticDPMScheduler`] whose Γ is estimated on ``images`` (training images in [−1, 1])."""
    unet = pipeline.unet
    was_training = unet.training
    unet.eval()
    try:
        gamma = estimate_gamma(unet, pipeline.scheduler, images.to(pipeline.device), generator=generator,
                               progress=progress, estimator=estimator)
    finally:
        unet.train(was_training)
    return pipeline.with_components(scheduler=analytic_scheduler(pipeline.scheduler, gamma))


__all__ = ["AnalyticDPMScheduler", "DDPMFromScratchScheduler", "analytic_scheduler", "estimate_gamma",
           "optimal_trajectory", "to_analytic", "trajectory_costs"]
