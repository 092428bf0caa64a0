"""Pictures of the chains: the noise schedule, the forward process, the reverse process and the bound.

Each figure has two functions: one that computes the arrays the figure shows (usable on its own,
and what the tests check against the theory) and one that draws them with matplotlib and returns
the `Figure`. In a notebook::

    from ddpm_from_scratch.chain_figures import forward_process_figure
    forward_process_figure(pipeline.scheduler, images)

``scripts/explain.py PIPELINE`` writes all four as PNGs.

Timesteps are diffusers' indices t = 0, …, T−1: index t is the paper's step t + 1, so x at
index 0 carries one step of noise (ᾱ_0 = 1 − β_1) and the data x_0 is shown separately.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # figures are written to files; no display is assumed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from diffusers.utils.torch_utils import randn_tensor  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from ..schedulers.scheduling_ddpm import DDPMFromScratchScheduler  # noqa: E402
from ..pipelines.pipeline_utils import output_for_scheduler, scheduler_reads_variance  # noqa: E402

# The timesteps of the forward and reverse figures, for T = 1000 (scaled to other T).
FIGURE_TIMESTEPS = (0, 50, 100, 250, 500, 750, 999)
# The schedules every pipeline's is compared with: Ho et al.'s linear and Nichol & Dhariwal's cosine.
REFERENCE_SCHEDULES = {"linear": "linear", "cosine": "squaredcos_cap_v2"}
FIGURE_FILES = {"schedule": "schedule.png", "forward": "forward_process.png", "reverse": "reverse_process.png",
                "bound": "bound.png"}


def figure_timesteps(num_train_timesteps: int, timesteps: Sequence[int] = FIGURE_TIMESTEPS) -> list[int]:
    """`timesteps` (given for T = 1000) scaled to a chain of `num_train_timesteps`, without repeats."""
    scaled = (round(t * (num_train_timesteps - 1) / 999) for t in timesteps)
    return sorted(set(scaled))


# ------------------------------------------------------------------------------------- (a) schedule


def schedule_curves(scheduler) -> dict[str, dict[str, np.ndarray]]:
    """β_t, ᾱ_t and log SNR_t = log(ᾱ_t / (1 − ᾱ_t)) of `scheduler` and of the reference schedules.

    Returns ``{name: {"t", "betas", "alphas_cumprod", "log_snr"}}`` with float64 arrays; the first
    name is ``"this pipeline (<beta_schedule>)"``, then ``"linear"`` and ``"cosine"`` with the same T.
    """
    config = scheduler.config
    schedules = {f"this pipeline ({config.get('beta_schedule', 'trained_betas')})": scheduler}
    for name, beta_schedule in REFERENCE_SCHEDULES.items():
        schedules[name] = DDPMFromScratchScheduler(num_train_timesteps=config.num_train_timesteps,
                                                   beta_schedule=beta_schedule)
    curves = {}
    for name, chain in schedules.items():
        alphas_cumprod = chain.alphas_cumprod.double().cpu().numpy()
        curves[name] = {
            "t": np.arange(len(alphas_cumprod)),
            "betas": chain.betas.double().cpu().numpy(),
            "alphas_cumprod": alphas_cumprod,
            "log_snr": np.log(alphas_cumprod) - np.log1p(-alphas_cumprod),
        }
    return curves


def schedule_figure(scheduler) -> Figure:
    """Three panels against t: β_t (log scale), ᾱ_t, and log SNR, for `scheduler`, linear and cosine."""
    curves = schedule_curves(scheduler)
    figure, axes = plt.subplots(1, 3, figsize=(13, 3.6), layout="constrained")
    panels = (("betas", "β_t (noise added at step t)", "log"), ("alphas_cumprod", "ᾱ_t (signal kept, √ᾱ_t x_0)",
              "linear"), ("log_snr", "log SNR_t = log ᾱ_t / (1 − ᾱ_t)", "linear"))
    for ax, (key, title, yscale) in zip(axes, panels):
        for index, (name, curve) in enumerate(curves.items()):
            style = {"linewidth": 2.5, "color": "black"} if index == 0 else {"linewidth": 1.2, "linestyle": "--"}
            ax.plot(curve["t"], curve[key], label=name, **style)
        ax.set_title(title)
        ax.set_xlabel("timestep t")
        ax.set_yscale(yscale)
    axes[0].legend(fontsize=8)
    figure.suptitle("The noise schedule")
    return figure


# ------------------------------------------------------------------------------------- (b) forward


def forward_samples(scheduler, images: torch.Tensor, timesteps: Sequence[int],
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """x_t ~ q(x_t | x_0) = N(√ᾱ_t x_0, (1 − ᾱ_t) I) for each image and each t: shape (N, len(timesteps), C, H, W).

    One independent ε per image and timestep, drawn through `generator`.
    """
    rows = []
    for t in timesteps:
        noise = randn_tensor(images.shape, generator=generator, device=images.device, dtype=images.dtype)
        rows.append(scheduler.add_noise(images, noise, torch.full((len(images),), t, dtype=torch.long)))
    return torch.stack(rows, dim=1)


def _show(ax, image: torch.Tensor) -> None:
    """Draw a (C, H, W) image on [−1, 1]: one channel as grey with values as they are (the colour map
    saturates outside [−1, 1]), three channels mapped to [0, 1] and clipped (as imshow requires)."""
    image = image.detach().float().cpu()
    if image.shape[0] == 1:
        ax.imshow(image[0].numpy(), cmap="gray", vmin=-1.0, vmax=1.0, interpolation="nearest")
    else:
        ax.imshow(((image + 1) / 2).clamp(0, 1).permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def _image_table(rows: list[tuple[str, torch.Tensor]], column_titles: list[str], title: str) -> Figure:
    """A table of images: one row per (label, (K, C, H, W)) entry, one column per title."""
    columns = len(column_titles)
    figure, axes = plt.subplots(len(rows), columns, figsize=(1.5 * columns, 1.5 * len(rows) + 0.6),
                                squeeze=False, layout="constrained")
    for r, (label, images) in enumerate(rows):
        for c in range(columns):
            _show(axes[r, c], images[c])
            if r == 0:
                axes[r, c].set_title(column_titles[c], fontsize=8)
        axes[r, 0].set_ylabel(label, fontsize=8)
    figure.suptitle(title)
    return figure


def forward_process_figure(scheduler, images: torch.Tensor, timesteps: Sequence[int] | None = None,
                           generator: torch.Generator | None = None) -> Figure:
    """Each image (a row) as the data x_0, then x_t ~ q(x_t | x_0) at each t (columns)."""
    timesteps = figure_timesteps(scheduler.config.num_train_timesteps) if timesteps is None else list(timesteps)
    noisy = forward_samples(scheduler, images, timesteps, generator)
    alphas_cumprod = scheduler.alphas_cumprod
    titles = ["data x_0"] + [f"t={t}\nᾱ={alphas_cumprod[t].item():.4g}" for t in timesteps]
    rows = [(f"image {i}", torch.cat([images[i:i + 1], noisy[i]])) for i in range(len(images))]
    return _image_table(rows, titles, "Forward process: x_t ~ q(x_t | x_0) = N(√ᾱ_t x_0, (1 − ᾱ_t) I)")


# ------------------------------------------------------------------------------------- (c) reverse


def reverse_chain(pipeline, num_images: int, timesteps: Sequence[int],
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run the DDPM reverse chain over all T steps and keep x_t and the network's x̂_0 at `timesteps`.

    The chain is Algorithm 2 of Ho et al.: x_T ~ N(0, I), then for t = T−1, …, 0 the scheduler's step
    x_{t−1} = μ_θ(x_t, t) + σ_t z, with the pipeline's U-Net and this package's DDPM scheduler built
    from the pipeline's scheduler config (a learned variance is read as the pipeline reads it). The
    noise is drawn through `generator` in the pipeline's order, so the final images are the pipeline's
    own samples for the same generator.

    Returns:
        ``(x_t, x̂_0, x_0)``: x_t and x̂_0 of shape (N, len(timesteps), C, H, W), in the order of
        `timesteps` (ascending), and the chain's final sample (N, C, H, W) on [−1, 1] unclipped.
    """
    scheduler = DDPMFromScratchScheduler.from_config(pipeline.scheduler.config)
    scheduler.set_timesteps(scheduler.config.num_train_timesteps)
    unet = pipeline.unet
    device = pipeline._execution_device
    sample = randn_tensor(pipeline._image_shape(num_images), generator=generator, device=device, dtype=unet.dtype)
    wanted = set(timesteps)
    kept_sample, kept_original = {}, {}
    channels, reads_variance = sample.shape[1], scheduler_reads_variance(scheduler)
    for t in pipeline.progress_bar(scheduler.timesteps):
        with torch.no_grad():
            model_output = output_for_scheduler(unet(sample, t).sample, channels, reads_variance)
        output = scheduler.step(model_output, t, sample, generator=generator)
        if int(t) in wanted:
            kept_sample[int(t)] = sample.cpu()
            kept_original[int(t)] = output.pred_original_sample.cpu()
        sample = output.prev_sample
    order = sorted(wanted)
    return (torch.stack([kept_sample[t] for t in order], 1), torch.stack([kept_original[t] for t in order], 1),
            sample.cpu())


def reverse_process_figure(pipeline, num_images: int = 3, timesteps: Sequence[int] | None = None,
                           generator: torch.Generator | None = None) -> Figure:
    """For each image, a row of x_t and a row of the network's x̂_0 as the reverse chain runs from t = T−1 to 0."""
    T = pipeline.scheduler.config.num_train_timesteps
    timesteps = figure_timesteps(T) if timesteps is None else list(timesteps)
    samples, originals, _ = reverse_chain(pipeline, num_images, timesteps, generator)
    # Time runs right to left in the chain; the columns follow it: T−1 first.
    order = list(range(len(timesteps)))[::-1]
    titles = [f"t={timesteps[k]}" for k in order]
    rows = []
    for i in range(num_images):
        rows.append((f"x_t, image {i}", samples[i, order]))
        rows.append((f"x̂_0, image {i}", originals[i, order]))
    return _image_table(rows, titles, "Reverse process: x_t and the network's x̂_0 = (x_t − √(1−ᾱ_t) ε_θ) / √ᾱ_t")


# ------------------------------------------------------------------------------------- (d) bound


def bound_per_timestep(pipeline, images: torch.Tensor, generator: torch.Generator | None = None,
                       progress: bool = True) -> dict[str, np.ndarray | float]:
    """The bound's terms averaged over `images`, in bits/dim.

    Returns ``{"t", "terms", "prior", "decoder", "total"}``: ``terms[t]`` is the mean of column t of
    `variational_bound`'s ``terms_bits_per_dim`` (L_0 at t = 0, L_{t} = KL(q(x_{t−1}|x_t,x_0) ‖ p_θ) above),
    ``prior`` is L_T, ``decoder`` is ``terms[0]``, ``total`` the mean bits/dim (= prior + Σ terms).
    """
    bound = pipeline.variational_bound(images, generator=generator, progress=progress)
    terms = bound.terms_bits_per_dim.mean(0).cpu().numpy()
    return {"t": np.arange(len(terms)), "terms": terms, "prior": bound.prior_bits_per_dim.mean().item(),
            "decoder": float(terms[0]), "total": bound.bits_per_dim.mean().item()}


def bound_figure(pipeline, images: torch.Tensor, generator: torch.Generator | None = None,
                 progress: bool = True) -> Figure:
    """Bits/dim spent at each timestep (log scale), with L_0 (the decoder, t = 0) and L_T (the prior) marked."""
    bound = bound_per_timestep(pipeline, images, generator, progress)
    T = len(bound["t"])
    figure, ax = plt.subplots(figsize=(8, 4.2), layout="constrained")
    ax.plot(bound["t"][1:], bound["terms"][1:], linewidth=1.2, label="L_{t−1} = KL(q(x_{t−1}|x_t,x_0) ‖ p_θ(x_{t−1}|x_t))")
    ax.plot([0], [bound["decoder"]], "o", color="tab:red", markersize=8,
            label=f"L_0 = −log p_θ(x_0|x_1): {bound['decoder']:.3f}")
    ax.plot([T], [bound["prior"]], "s", color="tab:green", markersize=8,
            label=f"L_T = KL(q(x_T|x_0) ‖ N(0,I)): {bound['prior']:.2e}")
    ax.set_yscale("log")
    ax.set_xlabel("timestep t")
    ax.set_ylabel("bits/dim")
    ax.set_title(f"Where the bound's bits go: {bound['total']:.3f} bits/dim in all, {len(images)} images")
    ax.legend(fontsize=8)
    return figure


# ------------------------------------------------------------------------------------- all four


def write_figures(pipeline, images: torch.Tensor, output_dir: str | Path, num_reverse_images: int = 3,
                  seed: int = 0, progress: bool = True) -> dict[str, Path]:
    """Write the four figures as PNGs into `output_dir` (see `FIGURE_FILES`); returns their paths.

    `images` (N, C, H, W) on the 8-bit grid of [−1, 1] are the forward process's rows (the first four)
    and the bound's data (all). Every random draw goes through a generator seeded from `seed`.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    figures = {
        "schedule": lambda: schedule_figure(pipeline.scheduler),
        "forward": lambda: forward_process_figure(pipeline.scheduler, images[:4],
                                                  generator=torch.Generator().manual_seed(seed)),
        "reverse": lambda: reverse_process_figure(pipeline, num_reverse_images,
                                                  generator=torch.Generator().manual_seed(seed)),
        "bound": lambda: bound_figure(pipeline, images, generator=torch.Generator().manual_seed(seed),
                                      progress=progress),
    }
    paths = {}
    for name, draw in figures.items():
        figure = draw()
        paths[name] = output_dir / FIGURE_FILES[name]
        figure.savefig(paths[name], dpi=110)
        plt.close(figure)
    return paths
