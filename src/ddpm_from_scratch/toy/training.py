"""Training the toy problems' networks on the bound itself (Sohl-Dickstein et al. trained on K).

One step draws a batch of data, a timestep per sample from a `timestep_sampling` sampler (uniform,
or loss-aware: the importance weights keep the estimate of Σ_t L_t unbiased), x_t ~ q(x_t | x_0), and
minimises T · L_t per sample: the binomial KL of `BinomialDiffusionScheduler.vb_term`, or the Gaussian
`losses.vlb_loss` with the continuous decoder. Every draw goes through one generator seeded by `seed`.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from ..training.losses import training_losses
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


def train_toy(model, scheduler, data: torch.Tensor, batch_loss: Callable, max_train_steps: int, batch_size: int,
              learning_rate: float, seed: int, timestep_sampler: str = "loss-aware", ema_decay: float = 0.999,
              callback: Callable[[int], None] | None = None, callback_every: int = 1,
              progress: bool = True) -> list[float]:
    """Adam on the weighted mean of `batch_loss` over batches of `data` (with replacement); the learning rate
    decays linearly to zero over the last half. The model ends with the exponential moving average of its
    weights (``ema_decay``; 0 keeps the last weights), which `callback(step)` also sees, every `callback_every`
    steps and after the last. Returns the mean loss (bits per sample) of each step."""
    generator = torch.Generator().manual_seed(seed)
    sampler = create_timestep_sampler(timestep_sampler, scheduler.config.num_train_timesteps)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    half = max_train_steps // 2
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 1.0 if step < half else max(0.0, (max_train_steps - step) / (max_train_steps - half)))
    history = []
    # No average to keep (or swap in for the callback) when the last weights are what is wanted.
    average = [p.detach().clone() for p in model.parameters()] if ema_decay else None
    model.train()
    steps = range(max_train_steps)
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc="training", mininterval=2.0)
    for step in steps:
        rows = torch.randint(len(data), (batch_size,), generator=generator)
        timesteps, weights = sampler.sample(batch_size, generator)
        losses = batch_loss(model, scheduler, data[rows], timesteps, generator)
        loss = (losses * weights).mean()
        value = loss.item()
        if not math.isfinite(value):
            raise FloatingPointError(f"the loss became {value} at step {step}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        sampler.update(timesteps, losses.detach())
        history.append(value)
        if average is not None:
            with torch.no_grad():
                for kept, current in zip(average, model.parameters()):
                    kept.lerp_(current, 1 - ema_decay)
        done = step + 1
        if callback is not None and (done % callback_every == 0 or done == max_train_steps):
            with _swapped(model, average):
                callback(done)
    if average is not None:
        with torch.no_grad():
            for kept, current in zip(average, model.parameters()):
                current.copy_(kept)
    model.eval()
    return history


class _swapped:
    """Within the block the model holds `weights` (None: its own); its own come back after."""

    def __init__(self, model, weights):
        self.model, self.weights = model, weights

    def __enter__(self):
        if self.weights is None:  # the model's own weights are the ones to use
            return
        self.saved = [p.detach().clone() for p in self.model.parameters()]
        with torch.no_grad():
            for p, w in zip(self.model.parameters(), self.weights):
                p.copy_(w)

    def __exit__(self, *exc):
        if self.weights is None:
            return
        with torch.no_grad():
            for p, w in zip(self.model.parameters(), self.saved):
                p.copy_(w)
