"""A learned reverse variance (variance_type="learned_range") in the bound and on respaced chains.

Independent answers: the KL of two Gaussians with equal means in closed form, and the respaced
step recomputed here in float64 from the β schedule's definition (β'_t = 1 − ᾱ_t/ᾱ_{t'},
β̃'_t = (1 − ᾱ_{t'})/(1 − ᾱ_t) β'_t), not from the scheduler's tables.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from diffusers.models.unets.unet_2d import UNet2DOutput

from ddpm_from_scratch.likelihood import variational_bound
from ddpm_from_scratch.schedulers.scheduling_ddpm import DDPMFromScratchScheduler

T, BETA_START, BETA_END = 20, 5e-3, 0.2
LN2 = math.log(2.0)


def schedule() -> tuple[np.ndarray, np.ndarray]:
    """β_t and ᾱ_t of the linear schedule, float64, from its definition."""
    betas = np.linspace(BETA_START, BETA_END, T, dtype=np.float64)
    return betas, np.cumprod(1 - betas)


class ExactNoiseLearnedRange(torch.nn.Module):
    """Knows the images it scores, so returns the exact ε of x_t, followed by a constant v (2C channels)."""

    def __init__(self, images: torch.Tensor, alphas_cumprod: torch.Tensor, v: float):
        super().__init__()
        self.images, self.abar, self.v = images, alphas_cumprod.double(), v

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor) -> UNet2DOutput:
        x0 = self.images.double().repeat(sample.shape[0] // self.images.shape[0], 1, 1, 1)
        abar = self.abar[timestep].reshape(-1, 1, 1, 1)
        eps = ((sample.double() - abar.sqrt() * x0) / (1 - abar).sqrt()).to(sample.dtype)
        return UNet2DOutput(sample=torch.cat([eps, torch.full_like(eps, self.v)], dim=1))


def images(batch: int = 3) -> torch.Tensor:
    k = np.random.default_rng(0).integers(1, 255, size=(batch, 1, 4, 4))
    return torch.tensor(k / 127.5 - 1, dtype=torch.float32)


def learned_range_bound(v: float):
    scheduler = DDPMFromScratchScheduler(num_train_timesteps=T, beta_start=BETA_START, beta_end=BETA_END,
                                         variance_type="learned_range")
    x0 = images()
    model = ExactNoiseLearnedRange(x0, scheduler.alphas_cumprod, v)
    return variational_bound(model, scheduler, x0, generator=torch.Generator().manual_seed(0), progress=False,
                             clip_denoised=False)


def test_exact_noise_with_v_minus_one_has_zero_kl_at_every_step_after_the_first():
    """v = −1 is σ_t² = β̃_t, the true posterior variance; with the exact mean every KL vanishes."""
    terms = learned_range_bound(-1.0).terms_bits_per_dim[:, 1:]
    assert terms.abs().max().item() < 1e-5


def test_exact_noise_with_v_plus_one_pays_the_variance_kl_in_closed_form():
    """v = +1 is σ_t² = β_t: KL = ½(log(β_t/β̃_t) + β̃_t/β_t − 1) per dimension, for every t ≥ 1."""
    betas, abar = schedule()
    tilde = (1 - abar[:-1]) / (1 - abar[1:]) * betas[1:]
    expected = 0.5 * (np.log(betas[1:] / tilde) + tilde / betas[1:] - 1) / LN2
    terms = learned_range_bound(1.0).terms_bits_per_dim[:, 1:].numpy()
    # ᾱ is float32 in the scheduler (as in diffusers): 1 − ᾱ_t carries ~1e-5 relative error.
    np.testing.assert_allclose(terms, np.broadcast_to(expected, terms.shape), rtol=1e-3, atol=1e-7)


def test_exact_noise_decoder_with_v_plus_one_is_the_bin_mass_of_n_x0_beta0():
    """At t = 0 the mean is x_0 exactly and σ² = β_0: every interior pixel has mass erf((1/255)/(σ√2))."""
    sigma = math.sqrt(BETA_START)
    expected = -math.log(math.erf((1 / 255) / (sigma * math.sqrt(2)))) / LN2
    decoder = learned_range_bound(1.0).decoder_bits_per_dim
    torch.testing.assert_close(decoder, torch.full_like(decoder, expected), rtol=1e-4, atol=0)


# ----------------------------------------------------------------------------- respaced chains


def respaced_step_float64(x, eps, v, t, t_prev, z, abar):
    """x_{t'} of one learned_range step t → t', everything from ᾱ in float64 (ᾱ_{−1} = 1)."""
    ac_t, ac_prev = abar[t], (abar[t_prev] if t_prev >= 0 else 1.0)
    beta = 1 - ac_t / ac_prev
    tilde = max((1 - ac_prev) / (1 - ac_t) * beta, 1e-20)
    x0 = ((x - math.sqrt(1 - ac_t) * eps) / math.sqrt(ac_t)).clamp(-1, 1)
    mean = math.sqrt(ac_prev) * beta / (1 - ac_t) * x0 + math.sqrt(1 - beta) * (1 - ac_prev) / (1 - ac_t) * x
    frac = (v + 1) / 2
    log_variance = frac * math.log(beta) + (1 - frac) * math.log(tilde)
    # The step into x_0 (t' = −1) returns the mean, as Algorithm 2 does, whatever t is.
    return mean + (torch.exp(torch.as_tensor(0.5 * log_variance)) * z if t_prev >= 0 else 0), log_variance


@pytest.mark.parametrize(("spacing", "steps"), [("leading", 13), ("trailing", 50), ("linspace", 7)])
def test_a_respaced_chain_interpolates_between_its_own_beta_and_posterior_variance(spacing, steps):
    scheduler = DDPMFromScratchScheduler(variance_type="learned_range", timestep_spacing=spacing)
    scheduler.set_timesteps(steps)
    abar = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0).tolist()
    chain = scheduler.timesteps.tolist()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 1, 4, 4, generator=gen, dtype=torch.float64)
    for i, t in enumerate(chain):
        eps = torch.randn(x.shape, generator=gen, dtype=torch.float64)
        v = 2 * torch.rand(x.shape, generator=gen, dtype=torch.float64) - 1
        step_gen = torch.Generator().manual_seed(100 + i)
        got = scheduler.step(torch.cat([eps, v], 1), t, x, generator=step_gen).prev_sample
        z = torch.randn(x.shape, generator=torch.Generator().manual_seed(100 + i), dtype=torch.float64)
        t_prev = chain[i + 1] if i + 1 < len(chain) else -1
        expected, _ = respaced_step_float64(x, eps, v, t, t_prev, z, abar)
        # The scheduler's ᾱ is float32 (as diffusers'): ~1e-5 relative; the wrong β would be off by ×10–100.
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
        x = expected


def test_the_training_chains_beta_would_give_another_variance_on_a_respaced_chain():
    """The check above can fail: at 13 steps the first step's β'_t is over 10× the training chain's β_t."""
    scheduler = DDPMFromScratchScheduler(variance_type="learned_range")
    scheduler.set_timesteps(13)
    betas = np.linspace(1e-4, 0.02, 1000)
    abar = np.cumprod(1 - betas)
    t, t_prev = scheduler.timesteps.tolist()[:2]
    respaced_beta = 1 - abar[t] / abar[t_prev]
    assert respaced_beta / betas[t] > 10
    got = scheduler.model_log_variance(t, torch.ones(1), prev_timesteps=t_prev)  # v = +1: log β'_t
    assert got.item() == pytest.approx(math.log(respaced_beta), rel=1e-5)
    assert abs(got.item() - math.log(betas[t])) > 1.0


def test_model_log_variance_with_prev_timesteps_is_the_respaced_interpolation():
    scheduler = DDPMFromScratchScheduler(variance_type="learned_range")
    abar = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0).tolist()
    t, t_prev = torch.tensor([999, 500, 77]), torch.tensor([899, 250, -1])
    v = torch.tensor([-0.5, 0.2, 0.9], dtype=torch.float64).reshape(3, 1, 1, 1)
    got = scheduler.model_log_variance(t, v, prev_timesteps=t_prev)
    for i in range(3):
        _, expected = respaced_step_float64(torch.zeros(1), torch.zeros(1), v[i].item(), t[i].item(),
                                            t_prev[i].item(), torch.zeros(1), abar)
        assert got[i].item() == pytest.approx(expected, rel=1e-5)
