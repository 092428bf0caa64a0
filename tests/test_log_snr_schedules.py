"""Specification of ddpm_from_scratch.schedulers.log_snr_schedules: schedules given by their log SNR."""

import pytest
import torch
from diffusers import DDPMScheduler

from ddpm_from_scratch.schedulers.log_snr_schedules import high_snr_head_betas, high_snr_prefix_betas
from ddpm_from_scratch.schedulers.scheduling_ddpm import DDPMFromScratchScheduler, linear_betas


def _log_snr(betas: torch.Tensor) -> torch.Tensor:
    alphas_cumprod = torch.cumprod(1 - betas.double(), dim=0)
    return torch.log(alphas_cumprod / (1 - alphas_cumprod))


def test_high_snr_head_falls_linearly_in_log_snr_then_is_the_linear_schedule():
    T, n, top = 1000, 300, 13.0
    linear = _log_snr(torch.linspace(1e-4, 0.02, T, dtype=torch.float32))
    head = _log_snr(high_snr_head_betas(T, top, n))
    expected = top + (linear[n] - top) * torch.arange(n, dtype=torch.float64) / n
    torch.testing.assert_close(head[:n], expected, rtol=0, atol=1e-9)
    torch.testing.assert_close(head[n:], linear[n:], rtol=0, atol=1e-9)


def test_high_snr_head_betas_give_a_scheduler_diffusers_agrees_with():
    betas = high_snr_head_betas(1000, 13.0, 300).tolist()
    ours, theirs = DDPMFromScratchScheduler(trained_betas=betas), DDPMScheduler(trained_betas=betas)
    assert torch.equal(ours.alphas_cumprod, theirs.alphas_cumprod)
    assert bool((ours.alphas_cumprod[1:] < ours.alphas_cumprod[:-1]).all())


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(log_snr_max=9.0, head_steps=300), "must exceed the linear schedule's own first log SNR 9.21"),
    (dict(log_snr_max=13.0, head_steps=0), r"head_steps must lie in \(0, 1000\)"),
    (dict(log_snr_max=13.0, head_steps=1000), r"head_steps must lie in \(0, 1000\)"),
])
def test_high_snr_head_refuses_what_is_no_head(kwargs, message):
    with pytest.raises(ValueError, match=message):
        high_snr_head_betas(1000, **kwargs)


def test_high_snr_prefix_falls_linearly_in_log_snr_to_the_linear_schedules_first_value():
    T, n, top = 1000, 50, 13.0
    linear = _log_snr(torch.linspace(1e-4, 0.02, T, dtype=torch.float32))
    prefixed = _log_snr(high_snr_prefix_betas(T, top, n))
    expected = top + (linear[0] - top) * torch.arange(n, dtype=torch.float64) / n
    assert prefixed.shape == (n + T,)
    torch.testing.assert_close(prefixed[:n], expected, rtol=0, atol=1e-9)


def test_high_snr_prefix_keeps_every_step_of_the_linear_schedule():
    T, n = 1000, 50
    betas = high_snr_prefix_betas(T, 13.0, n, beta_start=2e-4, beta_end=0.03)
    linear = linear_betas(T, 2e-4, 0.03).double()
    torch.testing.assert_close(torch.cumprod(1 - betas, 0)[n:], torch.cumprod(1 - linear, 0), rtol=0, atol=1e-12)
    torch.testing.assert_close(betas[n + 1:], linear[1:], rtol=0, atol=1e-12)


def test_high_snr_prefix_betas_give_a_scheduler_diffusers_agrees_with():
    betas = high_snr_prefix_betas(1000, 13.0, 50).tolist()
    ours = DDPMFromScratchScheduler(num_train_timesteps=1050, trained_betas=betas)
    theirs = DDPMScheduler(num_train_timesteps=1050, trained_betas=betas)
    assert torch.equal(ours.alphas_cumprod, theirs.alphas_cumprod)
    assert bool((ours.alphas_cumprod[1:] < ours.alphas_cumprod[:-1]).all())


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(log_snr_max=9.0, prefix_steps=50), "must exceed the linear schedule's own first log SNR 9.21"),
    (dict(log_snr_max=13.0, prefix_steps=0), "prefix_steps must be positive, got 0"),
])
def test_high_snr_prefix_refuses_what_is_no_prefix(kwargs, message):
    with pytest.raises(ValueError, match=message):
        high_snr_prefix_betas(1000, **kwargs)
