"""One training step's pieces: the batch loss for each `--loss`, per-step seeding, and the checks that a
model suits its loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..data.labels import drop_class_labels
from .losses import DEFAULT_VLB_WEIGHT, training_losses
from ..schedulers.scheduling_ddpm import LEARNED_VARIANCE_TYPES
from .timestep_sampling import UniformSampler


def step_seed(seed: int, micro_step: int, process_index: int) -> int:
    """The seed of one micro-batch's random draws (timesteps, noise, dropout).

    Deriving it from the run's seed and the position in training, rather than
    carrying one generator along, makes a resumed run draw exactly what an
    uninterrupted one would, with no RNG state to save; the process index keeps
    ranks from drawing the same noise.
    """
    return (seed * 1_000_003 + micro_step) * 1024 + process_index


def compile_for_training(unet: torch.nn.Module) -> torch.nn.Module:
    """Compile ``unet`` in place with TorchInductor for training (``scripts/train.py --compile``).

    The compiled network computes the same function, but its dropout masks are a different
    (still seeded) stream: Inductor may reorder the independent random draws of the blocks,
    so the same seed gives other masks than the eager network draws. Runs stay reproducible
    from ``--seed`` and resumable, since every draw still comes from the generator that
    :func:`step_seed` seeds. On a CPU the random kernels fall back to PyTorch's own
    (``fallback_random``): Inductor's generated ones measured 20 % slower per training step.
    Shapes are static (see :func:`~ddpm_from_scratch.fast_sampling.compile_for_sampling`).

    Returns:
        ``unet`` itself (same class, config and state dict; checkpoints are unchanged).
    """
    on_cpu = next(unet.parameters()).device.type == "cpu"
    unet.compile(dynamic=False, options={"fallback_random": on_cpu})
    return unet


def training_target(scheduler, clean_images: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """What the network learns to predict, by the scheduler's `prediction_type`.

    ε for ``epsilon`` (L_simple of Ho et al.), x_0 for ``sample``, and
    v = √ᾱ_t ε − √(1−ᾱ_t) x_0 for ``v_prediction``.
    """
    prediction_type = scheduler.config.prediction_type
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "sample":
        return clean_images
    if prediction_type == "v_prediction":
        return scheduler.get_velocity(clean_images, noise, timesteps)
    raise ValueError(f"Unknown prediction_type {prediction_type!r}.")


@dataclass
class BatchLoss:
    """One micro-batch's loss: what to back-propagate, and what the timestep sampler learns from.

    Attributes:
        loss: the scalar to minimise, mean over the batch of importance weight × per-sample loss.
        timesteps: ``(B,)`` the timesteps drawn.
        per_sample: ``(B,)`` the unweighted per-sample losses (detached), for the sampler's history.
        terms: the per-sample parts (``"mse"``, ``"vlb"``) of :func:`losses.training_losses`, detached.
    """

    loss: torch.Tensor
    timesteps: torch.Tensor
    per_sample: torch.Tensor
    terms: dict[str, torch.Tensor]


def batch_loss(
    model,
    scheduler,
    clean_images: torch.Tensor,
    generator: torch.Generator,
    loss_type: str = "simple",
    vlb_weight: float = DEFAULT_VLB_WEIGHT,
    timestep_sampler: UniformSampler | None = None,
    class_labels: torch.Tensor | None = None,
    class_dropout_prob: float = 0.0,
    null_class_label: int | None = None,
) -> BatchLoss:
    r"""Draw (t, ε), noise the batch and score the model: E_t[w_t · loss_t(x_0, ε)] over the batch.

    t comes from ``timestep_sampler`` (uniform by default) with importance weights w_t = 1/(T p(t)),
    then ε ~ N(0, I), x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε, and the per-sample loss of ``loss_type``
    (:func:`losses.training_losses`: ``simple`` = L_simple, ``hybrid`` = L_simple + λ·L_vlb with the
    mean stopped in L_vlb, ``vlb`` = L_vlb). Every draw goes through ``generator``, timesteps first.
    The forward process runs in float32 whatever the model's precision (in half precision
    1 − ᾱ_t rounds at small t and the noise vanishes), and so do the losses.

    A class-conditional model gets ``class_labels``, each replaced by ``null_class_label`` with probability
    ``class_dropout_prob`` (classifier-free guidance's training, drawn after t and ε, so an unconditional run
    draws exactly what it drew before).
    """
    clean_images = clean_images.float()
    batch_size = clean_images.shape[0]
    sampler = timestep_sampler or UniformSampler(scheduler.config.num_train_timesteps)
    timesteps, weights = sampler.sample(batch_size, generator)
    timesteps, weights = timesteps.to(clean_images.device), weights.to(clean_images.device)
    noise = torch.randn(clean_images.shape, generator=generator, device=generator.device).to(clean_images.device)
    noisy_images = scheduler.add_noise(clean_images, noise, timesteps)
    if class_labels is None:
        model_output = model(noisy_images, timesteps).sample.float()
    else:
        if class_dropout_prob:
            class_labels = drop_class_labels(class_labels, null_class_label, class_dropout_prob, generator)
        model_output = model(noisy_images, timesteps, class_labels=class_labels).sample.float()
    target = training_target(scheduler, clean_images, noise, timesteps)
    terms = training_losses(loss_type, scheduler, model_output, target, noisy_images, clean_images, timesteps,
                            vlb_weight)
    per_sample = terms.pop("loss")
    loss = (weights * per_sample).mean().float()
    return BatchLoss(loss, timesteps, per_sample.detach(), {k: v.detach() for k, v in terms.items()})


def denoising_loss(scheduler, loss_type: str = "simple", vlb_weight: float = DEFAULT_VLB_WEIGHT,
                   class_dropout_prob: float = 0.0, null_class_label: int | None = None):
    """`batch_loss` with this scheduler and loss, as `loop.train_loop` calls a loss function:
    ``loss_fn(model, clean_images, generator, timestep_sampler, class_labels=None) -> BatchLoss``."""

    def loss_fn(model, clean_images: torch.Tensor, generator: torch.Generator, timestep_sampler,
                class_labels: torch.Tensor | None = None) -> BatchLoss:
        return batch_loss(model, scheduler, clean_images, generator, loss_type, vlb_weight, timestep_sampler,
                          class_labels, class_dropout_prob, null_class_label)

    return loss_fn


# ----------------------------------------------------------------------------- model and scheduler for a loss


def variance_type_for_loss(loss_type: str) -> str | None:
    """The scheduler variance a loss trains for: ``learned_range`` for hybrid/vlb, None (keep) for simple."""
    return None if loss_type == "simple" else "learned_range"


def check_model_for_loss(unet, scheduler, loss_type: str) -> None:
    """Refuse a network/scheduler pair that ``loss_type`` cannot train, naming what is wrong.

    hybrid/vlb need 2·C output channels (ε and v) and a ``learned_range`` scheduler; simple needs C
    output channels (it would leave a variance head untrained) and a fixed variance.
    """
    channels, outputs = unet.config.in_channels, unet.config.out_channels
    variance_type = scheduler.config.variance_type
    if loss_type == "simple":
        if outputs != channels or variance_type in LEARNED_VARIANCE_TYPES:
            raise ValueError(
                f"--loss simple trains ε only, but the U-Net has out_channels={outputs} for in_channels={channels}"
                f" and the scheduler variance_type={variance_type!r}: use --loss hybrid or --loss vlb to train a"
                " learned variance"
            )
        return
    if outputs != 2 * channels:
        raise ValueError(
            f"--loss {loss_type} learns the variance and needs a U-Net with out_channels = 2 × in_channels ="
            f" {2 * channels} (ε and v), but this one has out_channels={outputs}; start from a preset or config"
            " (it is widened for you) rather than a pretrained ε-only network"
        )
    if variance_type != "learned_range":
        raise ValueError(
            f"--loss {loss_type} needs a scheduler with variance_type='learned_range', got {variance_type!r}"
        )


def all_finite(module: torch.nn.Module) -> bool:
    """Whether every parameter of `module` is finite (a checkpoint is never written otherwise)."""
    return all(torch.isfinite(p).all() for p in module.parameters())
