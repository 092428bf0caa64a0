"""Figures of the toy problems: heartbeat samples and K during training; the Swiss roll's Figure 1.

As in `chain_figures`, each figure has a function for the arrays it shows (checked by the tests) and
one that draws them and returns the matplotlib `Figure`.
"""

from __future__ import annotations

from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from ..pipelines.pipeline_utils import output_for_scheduler, scheduler_reads_variance, step_kwargs  # noqa: E402


def heartbeat_figure(data: torch.Tensor, samples: torch.Tensor, held_out: Sequence[tuple[int, float]],
                     paper_bits: float, optimum_bits: float, num_rows: int = 24) -> Figure:
    """Left: `num_rows` data sequences and `num_rows` samples as black/white rows. Right: the held-out K
    during training (`held_out`: (step, K) pairs), with the paper's K and the optimum log2(1/5) as lines."""
    figure = plt.figure(figsize=(12, 4.2), layout="constrained")
    grid = figure.add_gridspec(1, 3)
    for column, (title, rows) in enumerate((("data", data), ("samples", samples))):
        ax = figure.add_subplot(grid[0, column])
        ax.imshow(np.asarray(rows[:num_rows], dtype=np.float32), cmap="gray_r", vmin=0, vmax=1,
                  interpolation="nearest", aspect="auto")
        ax.set_title(title)
        ax.set_xlabel("position")
        ax.set_yticks([])
    ax = figure.add_subplot(grid[0, 2])
    if held_out:
        steps, values = zip(*held_out)
        ax.plot(steps, values, "o-", label="K on held-out sequences")
    ax.axhline(optimum_bits, color="black", linestyle="--", label=f"optimum log2(1/5) = {optimum_bits:.3f}")
    ax.axhline(paper_bits, color="tab:red", linestyle=":", label=f"Sohl-Dickstein et al. {paper_bits}")
    ax.set_ylim(optimum_bits - 0.6, optimum_bits + 0.1)
    ax.set_xlabel("training step")
    ax.set_ylabel("K, bits per sequence")
    ax.legend(fontsize=7, loc="lower right")
    figure.suptitle("Binary heartbeat, binomial diffusion")
    return figure


@torch.no_grad()
def reverse_points(pipeline, num_points: int, timesteps: Sequence[int], generator: torch.Generator | None = None):
    """Run the pipeline's reverse chain (its own scheduler, all T steps) and keep the points at `timesteps`.

    Returns ``{t: (N, D) tensor}`` with the sample *at* timestep t (before the step from t), plus key −1 for
    the final samples. The draws follow the pipeline's order, so key −1 equals ``pipeline(...)``'s samples.
    """
    scheduler = pipeline.scheduler
    scheduler.set_timesteps(scheduler.config.num_train_timesteps)
    from diffusers.utils.torch_utils import randn_tensor

    sample = randn_tensor((num_points, pipeline.unet.config.in_features), generator=generator,
                          dtype=pipeline.unet.dtype) * scheduler.init_noise_sigma
    kept = {}
    dims, reads_variance = sample.shape[1], scheduler_reads_variance(scheduler)
    extra_step_kwargs = step_kwargs(scheduler, generator)
    for t in scheduler.timesteps:
        if int(t) in timesteps:
            kept[int(t)] = sample.clone()
        output = pipeline.unet(scheduler.scale_model_input(sample, t), t).sample
        output = output_for_scheduler(output, dims, reads_variance)
        sample = scheduler.step(output, t, sample, **extra_step_kwargs).prev_sample
    kept[-1] = sample
    return kept


@torch.no_grad()
def drift(pipeline, points: torch.Tensor, timestep: int) -> torch.Tensor:
    """f_μ(x_t, t) − x_t: the reverse step's mean μ_θ (the scheduler's `p_mean_variance`) less the point."""
    scheduler = pipeline.scheduler
    scheduler.set_timesteps(scheduler.config.num_train_timesteps)
    timesteps = torch.full((len(points),), timestep, dtype=torch.long)
    output = pipeline.unet(points, timesteps).sample
    mean = scheduler.p_mean_variance(output, points, timesteps, clip_denoised=False).mean
    return mean - points


def swiss_roll_figure(pipeline, data: torch.Tensor, generator: torch.Generator | None = None,
                      num_points: int = 2000, limit: float = 3.0) -> Figure:
    """Sohl-Dickstein et al.'s Figure 1: q(x_t) (top), p(x_t) (middle) at t = 0, T/2, T, and the drift
    f_μ(x_t, t) − x_t on a grid (bottom) at t = 1, T/2, T. Paper indexing: t = T is timestep T − 1."""
    scheduler = pipeline.scheduler
    T = scheduler.config.num_train_timesteps
    columns = [("t = 0", None, -1), (f"t = T/2 = {T // 2}", T // 2 - 1, T // 2 - 1), (f"t = T = {T}", T - 1, T - 1)]
    data = data[:num_points]
    reverse = reverse_points(pipeline, num_points, {T // 2 - 1, T - 1}, generator)
    axis = torch.linspace(-limit, limit, 17)
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="xy"), -1).reshape(-1, 2)
    figure, axes = plt.subplots(3, 3, figsize=(10, 10), layout="constrained")
    for c, (title, forward_t, reverse_t) in enumerate(columns):
        if forward_t is None:
            forward = data
        else:
            noise = torch.randn(data.shape, generator=generator)
            forward = scheduler.add_noise(data, noise, torch.full((len(data),), forward_t, dtype=torch.long))
        axes[0, c].scatter(*forward.T.numpy(), s=1, alpha=0.5)
        axes[0, c].set_title(f"q(x_t), {title}")
        axes[1, c].scatter(*reverse[reverse_t].T.numpy(), s=1, alpha=0.5, color="tab:orange")
        axes[1, c].set_title(f"p(x_t), {title}")
        drift_t = 0 if forward_t is None else forward_t
        arrows = drift(pipeline, grid, drift_t)
        axes[2, c].quiver(*grid.T.numpy(), *arrows.T.numpy(), angles="xy")
        axes[2, c].set_title(f"f_μ(x_t, t) − x_t, t = {drift_t + 1}")
        for r in range(3):
            axes[r, c].set_xlim(-limit, limit)
            axes[r, c].set_ylim(-limit, limit)
            axes[r, c].set_aspect("equal")
    figure.suptitle("Swiss roll, Gaussian diffusion (after Sohl-Dickstein et al. 2015, Figure 1)")
    return figure
