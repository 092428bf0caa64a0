# Copyright 2025 The ddpm-from-scratch authors. Licensed under the Apache License, Version 2.0.
"""How training draws its timesteps: uniformly, or by importance with the loss-aware resampler.

A sampler draws t ~ p(t) for each sample of a batch and returns importance weights
w_t = 1 / (T · p(t)), so that for any per-timestep loss L_t

    E_{t ~ p}[w_t · L_t] = Σ_t p(t) · L_t / (T p(t)) = (1/T) Σ_t L_t = E_{t ~ uniform}[L_t]:

the weighted loss is an unbiased estimate of the uniform one, whatever p is (Nichol & Dhariwal 2021,
§3.3). Only the variance of the estimate changes; L_vlb's terms span orders of magnitude over t, and
sampling t where the loss is large lowers it.

Samplers are deterministic given the ``torch.Generator`` they are handed, and their whole state (the
loss history) is a JSON-serialisable dict, so a resumed training run draws what an uninterrupted one
would. With several processes every rank must call `update` with the same (gathered) values in the
same order; then every rank holds the same history and draws from the same p.
"""

from __future__ import annotations

import torch

TIMESTEP_SAMPLERS = ("uniform", "loss-aware")


class UniformSampler:
    """t uniform on {0, …, T−1}, every weight 1: the sampler of Ho et al. (2020)."""

    def __init__(self, num_timesteps: int):
        if isinstance(num_timesteps, bool) or not isinstance(num_timesteps, int) or num_timesteps < 1:
            raise ValueError(f"num_timesteps must be a positive integer, got {num_timesteps!r}")
        self.num_timesteps = num_timesteps

    def probabilities(self) -> torch.Tensor:
        """p(t) for t = 0..T−1, float64, ``(T,)``."""
        return torch.full((self.num_timesteps,), 1.0 / self.num_timesteps, dtype=torch.float64)

    def sample(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``batch_size`` timesteps (long) and their importance weights 1/(T p(t)) (float32), on the generator's device."""
        timesteps = torch.randint(0, self.num_timesteps, (batch_size,), generator=generator, device=generator.device)
        return timesteps, torch.ones(batch_size, device=generator.device)

    def update(self, timesteps: torch.Tensor, losses: torch.Tensor) -> None:
        """Record per-sample losses at their timesteps (nothing to record for a uniform sampler)."""

    def state_dict(self) -> dict:
        return {"type": "uniform", "num_timesteps": self.num_timesteps}

    def load_state_dict(self, state: dict) -> None:
        _check_state(self, state)


class LossSecondMomentResampler(UniformSampler):
    """p(t) ∝ √E[L_t²], the loss-aware sampler of Nichol & Dhariwal (2021, §3.3, improved-diffusion's
    ``LossSecondMomentResampler``).

    It keeps the last ``history_per_term`` losses of every timestep. Until every t has that many it
    samples uniformly (weights 1); from then on

        p(t) = (1 − u) · √(mean of L_t²) / Σ_s √(mean of L_s²) + u / T,    u = ``uniform_prob``,

    the uniform floor u keeping every p(t) > 0, so that every t is still visited and its history kept
    current, and every weight 1/(T p(t)) ≤ 1/u finite.
    """

    def __init__(self, num_timesteps: int, history_per_term: int = 10, uniform_prob: float = 0.001):
        super().__init__(num_timesteps)
        if isinstance(history_per_term, bool) or not isinstance(history_per_term, int) or history_per_term < 1:
            raise ValueError(f"history_per_term must be a positive integer, got {history_per_term!r}")
        if not 0 < uniform_prob <= 1:
            raise ValueError(f"uniform_prob must lie in (0, 1], got {uniform_prob!r}")
        self.history_per_term = history_per_term
        self.uniform_prob = uniform_prob
        self.history = torch.zeros(num_timesteps, history_per_term, dtype=torch.float64)
        self.counts = torch.zeros(num_timesteps, dtype=torch.long)

    def warmed_up(self) -> bool:
        """Whether every timestep has a full history of losses."""
        return bool((self.counts == self.history_per_term).all())

    def probabilities(self) -> torch.Tensor:
        if not self.warmed_up():
            return super().probabilities()
        root_mean_square = self.history.pow(2).mean(dim=1).sqrt()
        p = root_mean_square / root_mean_square.sum()
        return p * (1 - self.uniform_prob) + self.uniform_prob / self.num_timesteps

    def sample(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.warmed_up():
            return super().sample(batch_size, generator)
        p = self.probabilities()
        timesteps = torch.multinomial(p.to(generator.device), batch_size, replacement=True, generator=generator)
        weights = 1.0 / (self.num_timesteps * p.to(generator.device)[timesteps])
        return timesteps, weights.float()

    def update(self, timesteps: torch.Tensor, losses: torch.Tensor) -> None:
        """Append each loss to its timestep's history, dropping the oldest once ``history_per_term`` are kept.

        Values are taken in the order given; every rank must pass the same gathered tensors.
        """
        timesteps = timesteps.detach().reshape(-1).cpu().tolist()
        losses = losses.detach().reshape(-1).double().cpu().tolist()
        if len(timesteps) != len(losses):
            raise ValueError(f"update got {len(timesteps)} timesteps but {len(losses)} losses")
        for t, loss in zip(timesteps, losses):
            count = int(self.counts[t])
            if count == self.history_per_term:
                self.history[t, :-1] = self.history[t, 1:].clone()
                self.history[t, -1] = loss
            else:
                self.history[t, count] = loss
                self.counts[t] = count + 1

    def state_dict(self) -> dict:
        # Python floats round-trip float64 exactly through JSON, so a resumed run draws the same p.
        return {
            "type": "loss-aware",
            "num_timesteps": self.num_timesteps,
            "history_per_term": self.history_per_term,
            "uniform_prob": self.uniform_prob,
            "history": self.history.tolist(),
            "counts": self.counts.tolist(),
        }

    def load_state_dict(self, state: dict) -> None:
        _check_state(self, state)
        if state["history_per_term"] != self.history_per_term or state["uniform_prob"] != self.uniform_prob:
            raise ValueError(
                f"the saved loss-aware sampler kept {state['history_per_term']} losses per timestep with"
                f" uniform_prob={state['uniform_prob']}; this one keeps {self.history_per_term} with"
                f" uniform_prob={self.uniform_prob}"
            )
        self.history = torch.tensor(state["history"], dtype=torch.float64)
        self.counts = torch.tensor(state["counts"], dtype=torch.long)


def _check_state(sampler: UniformSampler, state: dict) -> None:
    kind = "loss-aware" if isinstance(sampler, LossSecondMomentResampler) else "uniform"
    if state.get("type") != kind or state.get("num_timesteps") != sampler.num_timesteps:
        raise ValueError(
            f"the saved timestep sampler is {state.get('type')!r} over {state.get('num_timesteps')} timesteps;"
            f" this run uses {kind!r} over {sampler.num_timesteps}"
        )


def create_timestep_sampler(name: str, num_timesteps: int) -> UniformSampler:
    """The sampler called ``name`` (``uniform`` or ``loss-aware``) over ``num_timesteps`` timesteps."""
    if name == "uniform":
        return UniformSampler(num_timesteps)
    if name == "loss-aware":
        return LossSecondMomentResampler(num_timesteps)
    raise ValueError(f"timestep sampler must be one of {TIMESTEP_SAMPLERS}, got {name!r}")
