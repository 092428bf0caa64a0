"""Sampling past a high-SNR prefix: a chain of N + T timesteps whose first N were added below a schedule.

``scripts/train.py --log_snr_max 13 --log_snr_prefix_steps N`` trains on a chain whose timestep N + s has the linear
schedule's ᾱ_s (``schedulers.log_snr_schedules.high_snr_prefix_betas``): the N extra timesteps, of higher SNR than
the linear schedule ever reaches, let the bound's decoder resolve the 8-bit grid. The network and the bound use the
whole chain. A sampler, though, is better off on the linear part alone: left to space its K steps over all N + T
timesteps, DPM-Solver++ ends with one second-order step across the prefix's whole rise in log SNR, where its
extrapolation overshoots (classifier FID 1.29 against 1.03 on the digits). So samplers run on

    the chain past the prefix: timesteps s = 0..T−1 with ᾱ'_s = ᾱ_{N+s},

with their own spacing of K steps, and the network is asked at timestep s + N. That is the linear model's grid
exactly, for any diffusers scheduler, including those whose ``set_timesteps`` takes no explicit timesteps.

This module is shipped beside ``pipeline.py`` in saved folders and Hub repositories; it imports only torch (and the standard library).
"""

from __future__ import annotations

import operator

import torch


def check_prefix_steps(prefix_steps: int, num_train_timesteps: int) -> int:
    """`prefix_steps` as an int, refused in one line naming ``log_snr_prefix_steps`` unless it leaves a chain of at
    least two timesteps."""
    try:
        steps = None if isinstance(prefix_steps, bool) else operator.index(prefix_steps)
    except TypeError:
        steps = None
    if steps is None or not 0 <= steps < num_train_timesteps - 1:
        raise ValueError(f"log_snr_prefix_steps must be an integer in [0, {num_train_timesteps - 1}) for a chain of "
                         f"{num_train_timesteps} timesteps, got {prefix_steps!r}")
    return steps


def scheduler_past_prefix(scheduler, prefix_steps: int):
    """A scheduler of `scheduler`'s class and settings for the chain's last T − N timesteps alone: its timestep s is
    timestep N + s of `scheduler`, with the same ᾱ (to float32 rounding).

    Its β are β'_0 = 1 − ᾱ_N and β'_s = β_{N+s} (s ≥ 1), passed as ``trained_betas``; any other per-timestep table in
    the config (Analytic-DPM's Γ) keeps its last T − N entries; ``rescale_betas_zero_snr`` is kept. With N = 0 it is
    `scheduler` itself.
    """
    total = scheduler.config.num_train_timesteps
    prefix_steps = check_prefix_steps(prefix_steps, total)
    if prefix_steps == 0:
        return scheduler
    betas = scheduler.betas.detach().cpu().to(torch.float64)
    first = 1 - scheduler.alphas_cumprod.detach().cpu().to(torch.float64)[prefix_steps]
    config = {key: value for key, value in scheduler.config.items() if not key.startswith("_")}
    for key, value in config.items():
        if isinstance(value, (list, tuple)) and len(value) == total:
            config[key] = list(value)[prefix_steps:]
    config.update(
        num_train_timesteps=total - prefix_steps,
        trained_betas=torch.cat([first.reshape(1), betas[prefix_steps + 1:]]).tolist(),
    )
    # With rescale_betas_zero_snr the betas are already rescaled, ending in β = 1; rescaling them again is the
    # identity, and keeping the flag keeps each scheduler's own care of ᾱ = 0 (Euler's and DPM-Solver's 2⁻²⁴ floor).
    return type(scheduler).from_config(config)


def timesteps_past_prefix(scheduler, num_inference_steps: int, prefix_steps: int) -> list:
    """The timesteps (of the whole chain) that `scheduler`'s sampler takes in `num_inference_steps` steps on the chain
    past the prefix: its own grid there, + N. For an explicit ``timesteps=`` or the bound of the same chain."""
    past = scheduler_past_prefix(scheduler, prefix_steps)
    past.set_timesteps(num_inference_steps)
    return [t + prefix_steps for t in past.timesteps.tolist()]
