"""Training the toy problems' networks on the bound itself (Sohl-Dickstein et al. trained on K).

One step draws a batch of data, a timestep per sample from a `timestep_sampling` sampler (uniform,
or loss-aware: the importance weights keep the estimate of Σ_t L_t unbiased), x_t ~ q(x_t | x_0), and
minimises T · L_t per sample: the binomial KL of `BinomialDiffusionScheduler.vb_term`, or the Gaussian
`losses.vlb_loss` with the continuous decoder. The loop is the images' (`training.loop`): every draw
comes from the micro-batch's generator, seeded from `seed` and the step.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from ..training.loop import Hook, LossFunction, TensorSamples, TrainingConfig, build_accelerator, train_loop
from ..training.losses import training_losses
from ..training.step import BatchLoss
from ..training.timestep_sampling import create_timestep_sampler
from .likelihood import binomial_vlb_loss_bits


def binomial_batch_loss(model, scheduler, sequences: torch.Tensor, timesteps: torch.Tensor,
                        generator: torch.Generator, cross_entropy_weight: float = 0.0) -> torch.Tensor:
    """T · L_t in bits for each binary sequence at its timestep, ``(B,)``, plus, with ``cross_entropy_weight`` λ
    (``prediction_type="sample"`` only), λ · Σ_i CE(x_0^i, x̂_0^i) in bits.

    Why the cross-entropy: at large t the KL term depends on x̂_0 only through the small difference of the
    two posteriors, so its gradient reaches the network's estimate of P(x_0 | x_t) only faintly, yet those
    steps carry most of the bound. The cross-entropy is a proper scoring rule with the same minimiser
    x̂_0 = P(x_0 = 1 | x_t) as the KL (f_b is increasing and linear in x̂_0), so it sharpens the estimate
    without moving the optimum (D3PM's auxiliary loss, Austin et al. 2021). Measured on the heartbeat (held-out
    K): under the loss-aware timestep sampler it helped (−2.421 bits without it after 8,000 steps, −2.377 with
    λ = 1 after 4,000); with t uniform, which `toy_tasks` uses, it adds nothing (−2.3330 with λ = 3, −2.3336
    without, 8,000 steps), so it is off there.
    """
    noisy = scheduler.add_noise(sequences, timesteps, generator=generator)
    output = model(noisy, timesteps).sample
    loss = binomial_vlb_loss_bits(output, scheduler, noisy, sequences, timesteps)
    if cross_entropy_weight:
        if scheduler.config.prediction_type != "sample":
            raise ValueError("cross_entropy_weight needs prediction_type='sample' (the output must be x̂_0's logits)")
        cross_entropy = F.binary_cross_entropy_with_logits(output.double(), sequences.double(), reduction="none")
        loss = loss + cross_entropy_weight * cross_entropy.sum(1) / math.log(2.0)
    return loss


def point_batch_loss(model, scheduler, points: torch.Tensor, timesteps: torch.Tensor,
                     generator: torch.Generator) -> torch.Tensor:
    """T · L_t in bits for each point at its timestep (L_vlb with the continuous decoder), ``(B,)``."""
    noise = torch.randn(points.shape, generator=generator)
    noisy = scheduler.add_noise(points, noise, timesteps)
    losses = training_losses("vlb", scheduler, model(noisy, timesteps).sample, noise, noisy, points, timesteps,
                             decoder="continuous")
    return losses["loss"] * points[0].numel()


def toy_loss(per_timestep_loss: Callable, scheduler) -> LossFunction:
    """A per-timestep toy loss (`binomial_batch_loss`, `point_batch_loss`) as `training.loop.train_loop` calls one:
    t drawn from the timestep sampler first, then the loss, weighted by the sampler's importance weights."""

    def loss_fn(model, samples: torch.Tensor, generator: torch.Generator, timestep_sampler) -> BatchLoss:
        timesteps, weights = timestep_sampler.sample(samples.shape[0], generator)
        per_sample = per_timestep_loss(model, scheduler, samples, timesteps, generator)
        return BatchLoss((weights * per_sample).mean(), timesteps, per_sample.detach(), {})

    return loss_fn


def train_toy(model, scheduler, data: torch.Tensor, batch_loss: Callable, max_train_steps: int, batch_size: int,
              learning_rate: float, seed: int, timestep_sampler: str = "loss-aware", ema_decay: float = 0.999,
              callback: Callable[[int, torch.nn.Module], None] | None = None, callback_every: int = 1,
              progress: bool = True, **loop_options) -> list[float]:
    """Train a toy model on T · L_t with the package's one loop (`training.loop.train_loop`, on the CPU).

    Adam on the weighted mean of ``batch_loss`` over batches of ``data`` drawn a shuffled epoch at a time,
    the learning rate decaying linearly to zero; no gradient clipping. The model ends with diffusers'
    `EMAModel` average of its weights (``ema_decay`` its decay, reached as (1 + step)/(10 + step) grows to it;
    0 keeps the last weights), which ``callback(step, model)`` also sees, every ``callback_every`` steps and after
    the last. ``loop_options`` go to `TrainingConfig` (e.g. ``output_dir``, ``checkpointing_steps`` and
    ``resume_from`` to checkpoint and resume). Returns the mean loss (bits per sample) of each step.
    """
    config = TrainingConfig(
        seed=seed, train_batch_size=batch_size, max_train_steps=max_train_steps, drop_last=True,
        learning_rate=learning_rate, lr_scheduler="linear", lr_warmup_steps=0, max_grad_norm=None,
        use_ema=ema_decay > 0, ema_max_decay=ema_decay, ema_warmup=False, progress=progress, **loop_options,
    )
    # The process's accelerator settings (accelerate allows one per process), the CPU on a machine without a GPU.
    accelerator = build_accelerator(config, mixed_precision="no")
    sampler = create_timestep_sampler(timestep_sampler, scheduler.config.num_train_timesteps)
    hooks = () if callback is None else (Hook(callback_every, callback),)
    result = train_loop(model, toy_loss(batch_loss, scheduler), TensorSamples(data), config, accelerator, sampler,
                        hooks=hooks)
    if result.model is not model:
        model.load_state_dict(result.model.state_dict())
    model.to(data.device)  # back beside the data the tasks evaluate it on
    model.eval()
    return result.losses
