# Copyright 2025 The ddpm-from-scratch authors. Licensed under the Apache License, Version 2.0.
"""The training losses of a DDPM, one formula each, per sample (Ho et al. 2020; Nichol & Dhariwal 2021).

- ``simple``: L_simple = ‖target − f_θ(x_t, t)‖² averaged over dimensions, target ε (or x_0, or v,
  by the scheduler's ``prediction_type``); trains the mean only (`simple_loss`).
- ``vlb``: L_vlb = T · L_t, the one-timestep Monte-Carlo estimate of the bound's sum Σ_t L_t in bits
  per dimension, with L_t the KL term of `likelihood.vb_terms_bits_per_dim` (the decoder −log p_θ(x_0|x_1)
  at t = 0); trains mean and variance (`vlb_loss`).
- ``hybrid``: L_hybrid = L_simple + λ · L_vlb, with the mean inside L_vlb computed from a stop-gradient
  copy of the prediction, so that the mean learns only from L_simple and the variance only from
  L_vlb (`hybrid_loss`). λ = 0.001 with L_vlb = T · L_t is improved-diffusion's ``vb · T/1000``.

The KL and the decoder term are not written here: they are `likelihood.py`'s, the same functions the
reported bound uses, so that training minimises exactly what evaluation measures. Every loss is
returned per sample, unweighted; the caller multiplies by the importance weights of its timestep
sampler (see `timestep_sampling`) and averages.
"""

from __future__ import annotations

import torch

from ..likelihood import vb_terms_bits_per_dim

LOSS_TYPES = ("simple", "hybrid", "vlb")
# Nichol & Dhariwal's λ: small enough that L_vlb's noisy gradients do not swamp the mean's.
DEFAULT_VLB_WEIGHT = 0.001


def mean_flat(x: torch.Tensor) -> torch.Tensor:
    """The mean over every dimension but the batch: ``(B, …)`` → ``(B,)``."""
    return x.flatten(1).mean(1)


def simple_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L_simple per sample: mean over dimensions of (target − prediction)², in float32, ``(B,)``.

    ``prediction`` holds the sample's channels only (split a learned variance off first).
    """
    return mean_flat((target.float() - prediction.float()) ** 2)


def vlb_loss(
    scheduler,
    model_output: torch.Tensor,
    noisy_samples: torch.Tensor,
    original_samples: torch.Tensor,
    timesteps: torch.Tensor,
    stop_gradient_mean: bool = False,
    decoder: str = "discretized",
) -> torch.Tensor:
    """L_vlb per sample = T · L_t in bits per dimension, float64, ``(B,)``:

        L_t = KL(q(x_{t−1} | x_t, x_0) ‖ p_θ(x_{t−1} | x_t))   for t ≥ 1,
        L_0 = −log p_θ(x_0 | x_1)                              (the discretised decoder),

    from `likelihood.vb_terms_bits_per_dim` with x̂_0 unclipped (the training chain's mean, as in
    improved-diffusion's training losses). With t uniform, E_t[T · L_t] = Σ_t L_t, the bound less its
    parameter-free prior term L_T. ``stop_gradient_mean`` detaches the prediction channels, so only the
    variance channels receive this loss's gradient (L_hybrid). ``decoder="continuous"`` scores L_0 as a
    Gaussian density, for real-valued data (`likelihood.continuous_decoder_nll`).
    """
    prediction, predicted_variance = scheduler.split_model_output(model_output.float(), noisy_samples)
    if predicted_variance is None:
        raise ValueError(
            f"L_vlb needs the model's variance: scheduler variance_type={scheduler.config.variance_type!r} and a"
            f" model output of {model_output.shape[1]} channels for {noisy_samples.shape[1]}-channel samples"
            " (a learned variance needs variance_type='learned_range' and twice the sample's channels)"
        )
    if stop_gradient_mean:
        prediction = prediction.detach()
    frozen = torch.cat([prediction, predicted_variance], dim=1)
    terms = vb_terms_bits_per_dim(
        scheduler, frozen, noisy_samples.float(), original_samples.float(), timesteps, clip_denoised=False,
        decoder=decoder,
    )
    return scheduler.config.num_train_timesteps * terms


def hybrid_loss(
    scheduler,
    model_output: torch.Tensor,
    target: torch.Tensor,
    noisy_samples: torch.Tensor,
    original_samples: torch.Tensor,
    timesteps: torch.Tensor,
    vlb_weight: float = DEFAULT_VLB_WEIGHT,
    decoder: str = "discretized",
) -> dict[str, torch.Tensor]:
    """L_hybrid = L_simple + λ · L_vlb per sample (Nichol & Dhariwal 2021, §3.1), the mean stopped in L_vlb.

    Returns ``{"loss", "mse", "vlb"}``, each ``(B,)``; ``loss`` is float64 (L_vlb's precision).
    """
    prediction, _ = scheduler.split_model_output(model_output, noisy_samples)
    mse = simple_loss(prediction, target)
    vlb = vlb_loss(scheduler, model_output, noisy_samples, original_samples, timesteps, stop_gradient_mean=True,
                   decoder=decoder)
    return {"loss": mse + vlb_weight * vlb, "mse": mse, "vlb": vlb}


def training_losses(
    loss_type: str,
    scheduler,
    model_output: torch.Tensor,
    target: torch.Tensor,
    noisy_samples: torch.Tensor,
    original_samples: torch.Tensor,
    timesteps: torch.Tensor,
    vlb_weight: float = DEFAULT_VLB_WEIGHT,
    decoder: str = "discretized",
) -> dict[str, torch.Tensor]:
    """The per-sample loss of ``loss_type`` (``simple``, ``hybrid`` or ``vlb``) and its parts.

    Returns a dict with ``"loss"`` (what to weight, average and minimise) and, where they are computed,
    ``"mse"`` (L_simple) and ``"vlb"`` (T · L_t), each ``(B,)``.
    """
    if loss_type == "simple":
        prediction, predicted_variance = scheduler.split_model_output(model_output, noisy_samples)
        if predicted_variance is not None or model_output.shape[1] != noisy_samples.shape[1]:
            raise ValueError(
                f"loss 'simple' trains ε only, but the model outputs {model_output.shape[1]} channels for"
                f" {noisy_samples.shape[1]}-channel samples: use 'hybrid' or 'vlb' to train its variance"
            )
        mse = simple_loss(prediction, target)
        return {"loss": mse, "mse": mse}
    if loss_type == "hybrid":
        return hybrid_loss(scheduler, model_output, target, noisy_samples, original_samples, timesteps, vlb_weight,
                           decoder)
    if loss_type == "vlb":
        vlb = vlb_loss(scheduler, model_output, noisy_samples, original_samples, timesteps, decoder=decoder)
        return {"loss": vlb, "vlb": vlb}
    raise ValueError(f"loss must be one of {LOSS_TYPES}, got {loss_type!r}")
