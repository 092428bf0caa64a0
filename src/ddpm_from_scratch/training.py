"""The pieces `scripts/train.py` puts together: the batch loss, per-step seeding and crash-safe checkpoints.

Checkpoints are folders ``checkpoint-N`` (N = optimiser steps taken) under the output
folder. Each is written as ``.checkpoint-N.tmp`` and renamed into place only when
complete, so a process killed at any instant leaves every ``checkpoint-N`` loadable.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from .losses import DEFAULT_VLB_WEIGHT, training_losses
from .pipeline_utils import LEARNED_VARIANCE_TYPES
from .timestep_sampling import UniformSampler

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
TRAINING_STATE_NAME = "training_state.json"
EMA_FOLDER = "unet_ema"


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
) -> BatchLoss:
    r"""Draw (t, ε), noise the batch and score the model: E_t[w_t · loss_t(x_0, ε)] over the batch.

    t comes from ``timestep_sampler`` (uniform by default) with importance weights w_t = 1/(T p(t)),
    then ε ~ N(0, I), x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε, and the per-sample loss of ``loss_type``
    (:func:`losses.training_losses`: ``simple`` = L_simple, ``hybrid`` = L_simple + λ·L_vlb with the
    mean stopped in L_vlb, ``vlb`` = L_vlb). Every draw goes through ``generator``, timesteps first.
    The forward process runs in float32 whatever the model's precision (in half precision
    1 − ᾱ_t rounds at small t and the noise vanishes), and so do the losses.
    """
    clean_images = clean_images.float()
    batch_size = clean_images.shape[0]
    sampler = timestep_sampler or UniformSampler(scheduler.config.num_train_timesteps)
    timesteps, weights = sampler.sample(batch_size, generator)
    timesteps, weights = timesteps.to(clean_images.device), weights.to(clean_images.device)
    noise = torch.randn(clean_images.shape, generator=generator, device=generator.device).to(clean_images.device)
    noisy_images = scheduler.add_noise(clean_images, noise, timesteps)
    model_output = model(noisy_images, timesteps).sample.float()
    target = training_target(scheduler, clean_images, noise, timesteps)
    terms = training_losses(loss_type, scheduler, model_output, target, noisy_images, clean_images, timesteps,
                            vlb_weight)
    per_sample = terms.pop("loss")
    loss = (weights * per_sample).mean().float()
    return BatchLoss(loss, timesteps, per_sample.detach(), {k: v.detach() for k, v in terms.items()})


def l_simple_loss(model, scheduler, clean_images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    r"""L_simple = E_{t, ε} ‖ε − ε_θ(√ᾱ_t x_0 + √(1−ᾱ_t) ε, t)‖², t uniform over all training timesteps."""
    return batch_loss(model, scheduler, clean_images, generator).loss


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


def list_checkpoints(output_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """The complete checkpoints under `output_dir`, as (step, path), oldest first.

    Half-written ``.checkpoint-N.tmp`` folders never match, so they are never resumed from.
    """
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = []
    for path in output_dir.iterdir():
        match = CHECKPOINT_PATTERN.match(path.name)
        if match and path.is_dir() and (path / TRAINING_STATE_NAME).is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def resolve_resume_checkpoint(output_dir: str | os.PathLike, resume_from_checkpoint: str | None) -> Path | None:
    """The checkpoint folder that ``--resume_from_checkpoint`` names: ``latest``, a path, or None.

    ``latest`` with no checkpoint yet starts from scratch, so the same command both
    starts and resumes a run; an explicit path that is not a complete checkpoint is an error.
    """
    if resume_from_checkpoint is None:
        return None
    if resume_from_checkpoint == "latest":
        checkpoints = list_checkpoints(output_dir)
        return checkpoints[-1][1] if checkpoints else None
    path = Path(resume_from_checkpoint)
    if not (path / TRAINING_STATE_NAME).is_file():
        raise FileNotFoundError(
            f"--resume_from_checkpoint {resume_from_checkpoint!r} is not a complete checkpoint folder "
            f"(no {TRAINING_STATE_NAME} in it)."
        )
    return path


def read_training_state(checkpoint: Path) -> dict:
    return json.loads((checkpoint / TRAINING_STATE_NAME).read_text())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(accelerator, output_dir: str | os.PathLike, global_step: int, ema_model=None,
                    total_limit: int | None = None, extra_state: dict | None = None) -> Path:
    """Write ``checkpoint-{global_step}`` atomically; keep at most `total_limit` checkpoints.

    Every process writes its share (accelerate saves one RNG file per rank) into
    the temporary folder; the main process then records the training state, syncs
    and renames; `extra_state` (JSON, e.g. the LR schedule's state) goes into
    ``training_state.json`` beside the step. The rename is the commit point: before it the checkpoint does not
    exist, after it it is complete.
    """
    output_dir = Path(output_dir)
    final = output_dir / f"checkpoint-{global_step}"
    tmp = output_dir / f".checkpoint-{global_step}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()

    accelerator.save_state(str(tmp))
    if accelerator.is_main_process:
        if ema_model is not None:
            ema_model.save_pretrained(str(tmp / EMA_FOLDER))
        (tmp / TRAINING_STATE_NAME).write_text(json.dumps({"global_step": global_step, **(extra_state or {})}))
        for root, _, files in os.walk(tmp):
            for name in files:
                with open(os.path.join(root, name), "rb+") as f:
                    os.fsync(f.fileno())
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
        _fsync_dir(output_dir)
        if total_limit is not None:
            for _, old in list_checkpoints(output_dir)[:-total_limit]:
                shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


def remove_stale_temporaries(output_dir: str | os.PathLike) -> None:
    """Delete ``.checkpoint-N.tmp`` folders a killed run left behind."""
    output_dir = Path(output_dir)
    if output_dir.is_dir():
        for path in output_dir.glob(".checkpoint-*.tmp"):
            shutil.rmtree(path, ignore_errors=True)
