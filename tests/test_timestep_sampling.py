"""Specification of ddpm_from_scratch.training.timestep_sampling: uniform and loss-aware draws of t.

The expected probabilities are computed here from the definition p(t) ∝ √(mean of the last 10 L_t²)
mixed with a uniform floor; unbiasedness is checked by Monte Carlo against the uniform mean of a
known per-timestep loss.
"""

from __future__ import annotations

import json

import pytest
import torch

from ddpm_from_scratch.training.timestep_sampling import (
    LossSecondMomentResampler,
    UniformSampler,
    create_timestep_sampler,
)

T = 8


def warmed_up(losses_per_t=lambda t: float(t + 1), history=10) -> LossSecondMomentResampler:
    sampler = LossSecondMomentResampler(T, history_per_term=history)
    for _ in range(history):
        sampler.update(torch.arange(T), torch.tensor([losses_per_t(t) for t in range(T)]))
    return sampler


def test_uniform_sampler_draws_every_timestep_with_weight_one():
    timesteps, weights = UniformSampler(T).sample(4000, torch.Generator().manual_seed(0))
    counts = torch.bincount(timesteps, minlength=T)
    assert counts.min() > 400 and counts.max() < 600  # 500 expected each
    assert torch.equal(weights, torch.ones(4000))


def test_loss_aware_sampler_is_uniform_until_every_timestep_has_a_full_history():
    sampler = LossSecondMomentResampler(T)
    for _ in range(10):
        sampler.update(torch.arange(T - 1), torch.full((T - 1,), 5.0))  # the last timestep never seen
    assert not sampler.warmed_up()
    torch.testing.assert_close(sampler.probabilities(), torch.full((T,), 1 / T, dtype=torch.float64))
    _, weights = sampler.sample(16, torch.Generator().manual_seed(0))
    assert torch.equal(weights, torch.ones(16))


def test_loss_aware_probabilities_follow_the_root_mean_square_loss_with_a_uniform_floor():
    sampler = warmed_up(lambda t: float(t + 1))
    rms = torch.arange(1, T + 1, dtype=torch.float64)  # constant histories: √E[L²] = L
    expected = 0.999 * rms / rms.sum() + 0.001 / T
    torch.testing.assert_close(sampler.probabilities(), expected)


def test_loss_aware_history_keeps_only_the_last_ten_losses():
    sampler = warmed_up(lambda t: 100.0)
    for value in range(1, 11):  # ten fresh losses at t = 0 push the 100s out
        sampler.update(torch.tensor([0]), torch.tensor([float(value)]))
    rms_0 = (torch.arange(1, 11, dtype=torch.float64) ** 2).mean().sqrt()
    rms = torch.tensor([rms_0.item()] + [100.0] * (T - 1), dtype=torch.float64)
    torch.testing.assert_close(sampler.probabilities(), 0.999 * rms / rms.sum() + 0.001 / T)


def test_importance_weights_are_one_over_T_p():
    sampler = warmed_up()
    timesteps, weights = sampler.sample(64, torch.Generator().manual_seed(1))
    p = sampler.probabilities()
    torch.testing.assert_close(weights.double(), 1 / (T * p[timesteps]), rtol=1e-6, atol=0)


def test_weighted_loss_is_an_unbiased_estimate_of_the_uniform_mean():
    """E_{t~p}[w_t L_t] = (1/T) Σ_t L_t for a per-timestep loss spanning two orders of magnitude."""
    losses = torch.logspace(-1, 1, T, dtype=torch.float64)
    sampler = warmed_up(lambda t: losses[t].item())
    timesteps, weights = sampler.sample(200_000, torch.Generator().manual_seed(2))
    estimate = (weights.double() * losses[timesteps]).mean().item()
    assert estimate == pytest.approx(losses.mean().item(), rel=0.01)
    # … and its variance is lower than uniform sampling's, the point of the resampler.
    uniform_t, _ = UniformSampler(T).sample(200_000, torch.Generator().manual_seed(2))
    assert (weights.double() * losses[timesteps]).var() < losses[uniform_t].var()


def test_state_round_trips_through_json_and_draws_the_same():
    sampler = warmed_up(lambda t: 0.1 * (t + 1) ** 1.7)
    restored = LossSecondMomentResampler(T)
    restored.load_state_dict(json.loads(json.dumps(sampler.state_dict())))
    a = sampler.sample(32, torch.Generator().manual_seed(3))
    b = restored.sample(32, torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_a_saved_state_of_another_sampler_is_refused():
    with pytest.raises(ValueError, match="'uniform' over 8 timesteps"):
        LossSecondMomentResampler(T).load_state_dict(UniformSampler(T).state_dict())
    with pytest.raises(ValueError, match="over 8 timesteps"):
        LossSecondMomentResampler(2 * T).load_state_dict(LossSecondMomentResampler(T).state_dict())


def test_an_unknown_sampler_name_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="'importance'"):
        create_timestep_sampler("importance", T)
