"""Specification of ddpm_from_scratch.training.losses and training.batch_loss: L_simple, L_vlb, L_hybrid.

Expected values are closed forms evaluated here in float64 (the KL of two Gaussians whose means
agree, the derivative of a mean of squares) or the same quantity computed by hand from the same
random draws; nothing is compared with output recorded from the code itself.
"""

from __future__ import annotations

import math

import pytest
import torch

from ddpm_from_scratch.training.losses import hybrid_loss, simple_loss, training_losses, vlb_loss
from ddpm_from_scratch.schedulers.scheduling_ddpm import DDPMFromScratchScheduler
from ddpm_from_scratch.training.step import batch_loss, check_model_for_loss
from ddpm_from_scratch.models.unet import DDPMFromScratchUNet

T = 20
SHAPE = (6, 1, 4, 4)


def scheduler(variance_type: str = "learned_range") -> DDPMFromScratchScheduler:
    return DDPMFromScratchScheduler(num_train_timesteps=T, beta_end=0.2, variance_type=variance_type)


def schedule_float64():
    """β_t and ᾱ_t of the scheduler's linear schedule, recomputed in float64 from its definition."""
    betas = torch.linspace(1e-4, 0.2, T, dtype=torch.float64)
    return betas, torch.cumprod(1 - betas, 0)


def exact_noise_batch(timesteps: torch.Tensor, seed: int = 0):
    """x_0 on the 8-bit grid, ε, and x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε: ε is what a perfect model predicts."""
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.randint(0, 256, SHAPE, generator=gen).float() / 127.5 - 1
    noise = torch.randn(SHAPE, generator=gen)
    return x0, noise, scheduler().add_noise(x0, noise, timesteps)


def test_simple_loss_is_the_per_sample_mean_squared_error():
    gen = torch.Generator().manual_seed(1)
    prediction, target = torch.randn(SHAPE, generator=gen), torch.randn(SHAPE, generator=gen)
    expected = [((prediction[i].double() - target[i].double()) ** 2).sum().item() / 16 for i in range(SHAPE[0])]
    torch.testing.assert_close(simple_loss(prediction, target).double(), torch.tensor(expected, dtype=torch.float64))


def test_vlb_of_an_exact_model_with_the_posterior_variance_is_zero_after_the_first_step():
    timesteps = torch.tensor([1, 2, 5, 10, 15, 19])
    x0, noise, xt = exact_noise_batch(timesteps)
    output = torch.cat([noise, -torch.ones_like(noise)], dim=1)  # v = −1: σ² = β̃_t, the true posterior
    assert vlb_loss(scheduler(), output, xt, x0, timesteps).abs().max().item() < 1e-4


def test_vlb_is_T_times_the_gaussian_kl_of_the_variances_when_the_means_agree():
    """With exact ε and v = +1 (σ² = β_t): KL = ½(log(β_t/β̃_t) + β̃_t/β_t − 1) per dimension, times T, in bits."""
    timesteps = torch.tensor([1, 2, 5, 10, 15, 19])
    x0, noise, xt = exact_noise_batch(timesteps)
    output = torch.cat([noise, torch.ones_like(noise)], dim=1)
    betas, alphas_cumprod = schedule_float64()
    t = timesteps
    tilde = (1 - alphas_cumprod[t - 1]) / (1 - alphas_cumprod[t]) * betas[t]
    kl_nats = 0.5 * (torch.log(betas[t] / tilde) + tilde / betas[t] - 1)
    expected = T * kl_nats / math.log(2)
    torch.testing.assert_close(vlb_loss(scheduler(), output, xt, x0, timesteps), expected, rtol=1e-4, atol=1e-4)


def test_vlb_at_timestep_zero_is_the_decoder_negative_log_likelihood():
    """x_0 ± 1/255 bin mass under N(μ, σ²) with the exact mean μ = x_0: every pixel has the same likelihood."""
    timesteps = torch.zeros(SHAPE[0], dtype=torch.long)
    x0, noise, xt = exact_noise_batch(timesteps)
    x0 = torch.zeros_like(x0) + (128 / 127.5 - 1)  # an interior grid value, so every bin is closed
    xt = scheduler().add_noise(x0, noise, timesteps)
    output = torch.cat([noise, torch.ones_like(noise)], dim=1)  # v = +1: σ² = β_0 at the decoder
    sigma = math.sqrt(1e-4)
    mass = math.erf((1 / 255) / (sigma * math.sqrt(2)))  # P(|Z σ| < 1/255)
    expected = T * -math.log2(mass)
    got = vlb_loss(scheduler(), output, xt, x0, timesteps)
    torch.testing.assert_close(got, torch.full_like(got, expected), rtol=1e-4, atol=1e-4)


def test_hybrid_sends_no_vlb_gradient_to_the_mean():
    """∂L_hybrid/∂ε_θ is exactly ∂L_simple/∂ε_θ = 2(ε_θ − ε)/D; the variance channels get λ ∂L_vlb/∂v."""
    timesteps = torch.tensor([1, 2, 5, 10, 15, 19])
    x0, noise, xt = exact_noise_batch(timesteps)
    gen = torch.Generator().manual_seed(3)
    output = torch.cat([noise + 0.3 * torch.randn(SHAPE, generator=gen), torch.zeros_like(noise)], 1).requires_grad_()
    hybrid_loss(scheduler(), output, noise, xt, x0, timesteps, vlb_weight=0.5)["loss"].sum().backward()
    expected_mean_grad = 2 * (output[:, :1].detach() - noise) / 16
    torch.testing.assert_close(output.grad[:, :1], expected_mean_grad)
    assert output.grad[:, 1:].abs().sum() > 0


def test_vlb_alone_trains_the_mean_too():
    timesteps = torch.tensor([1, 2, 5, 10, 15, 19])
    x0, noise, xt = exact_noise_batch(timesteps)
    output = torch.cat([noise + 0.3, torch.zeros_like(noise)], 1).requires_grad_()
    vlb_loss(scheduler(), output, xt, x0, timesteps).sum().backward()
    assert output.grad[:, :1].abs().sum() > 0


def test_hybrid_is_simple_plus_lambda_times_vlb():
    timesteps = torch.tensor([0, 2, 5, 10, 15, 19])
    x0, noise, xt = exact_noise_batch(timesteps)
    output = torch.cat([noise + 0.1, 0.5 * torch.ones_like(noise)], dim=1)
    parts = hybrid_loss(scheduler(), output, noise, xt, x0, timesteps, vlb_weight=0.25)
    by_hand = ((0.1**2) + 0.25 * vlb_loss(scheduler(), output, xt, x0, timesteps)).float()
    torch.testing.assert_close(parts["loss"].float(), by_hand)


def test_vlb_without_variance_channels_is_refused_naming_the_variance_type():
    timesteps = torch.tensor([1] * SHAPE[0])
    x0, noise, xt = exact_noise_batch(timesteps)
    with pytest.raises(ValueError, match="variance_type='fixed_small'"):
        vlb_loss(scheduler("fixed_small"), noise, xt, x0, timesteps)


def test_simple_loss_refuses_a_model_that_outputs_a_variance():
    timesteps = torch.tensor([1] * SHAPE[0])
    x0, noise, xt = exact_noise_batch(timesteps)
    with pytest.raises(ValueError, match="'hybrid' or 'vlb'"):
        training_losses("simple", scheduler(), torch.cat([noise, noise], 1), noise, xt, x0, timesteps)


def test_an_unknown_loss_is_refused_by_name():
    timesteps = torch.tensor([1] * SHAPE[0])
    x0, noise, xt = exact_noise_batch(timesteps)
    with pytest.raises(ValueError, match="'l2'"):
        training_losses("l2", scheduler(), noise, noise, xt, x0, timesteps)


# ---- training.batch_loss: the draws and the weighting ------------------------------------------------


class EchoNoise(torch.nn.Module):
    """A stand-in network that returns a fixed output, recording its inputs."""

    def __init__(self, output_channels: int):
        super().__init__()
        self.output_channels = output_channels

    def forward(self, sample, timesteps):
        self.seen = (sample, timesteps)
        out = torch.cat([0.5 * sample] * (self.output_channels // sample.shape[1]), dim=1)
        return type("Out", (), {"sample": out})()


def test_batch_loss_with_the_uniform_sampler_is_l_simple_on_the_generators_draws():
    clean = exact_noise_batch(torch.zeros(SHAPE[0], dtype=torch.long))[0]
    model = EchoNoise(1)
    got = batch_loss(model, scheduler("fixed_small"), clean, torch.Generator().manual_seed(7))
    gen = torch.Generator().manual_seed(7)
    timesteps = torch.randint(0, T, (SHAPE[0],), generator=gen)  # timesteps first, then the noise
    noise = torch.randn(SHAPE, generator=gen)
    _, alphas_cumprod = schedule_float64()
    a = alphas_cumprod[timesteps].reshape(-1, 1, 1, 1)
    xt = a.sqrt() * clean.double() + (1 - a).sqrt() * noise.double()
    expected = ((0.5 * xt - noise.double()) ** 2).mean()
    assert torch.equal(got.timesteps, timesteps)
    assert got.loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_batch_loss_weights_each_sample_by_its_importance_weight():
    class FixedDraws:
        def sample(self, batch_size, generator):
            return torch.arange(batch_size), torch.linspace(0.5, 2.0, batch_size)

    clean = exact_noise_batch(torch.zeros(SHAPE[0], dtype=torch.long))[0]
    got = batch_loss(EchoNoise(2), scheduler(), clean, torch.Generator().manual_seed(0), "vlb",
                     timestep_sampler=FixedDraws())
    expected = (torch.linspace(0.5, 2.0, SHAPE[0]).double() * got.per_sample).mean()
    assert got.loss.item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize(
    ("loss", "out_channels", "variance_type", "message"),
    [
        ("hybrid", 1, "learned_range", "out_channels = 2 × in_channels"),
        ("vlb", 2, "fixed_small", "variance_type='learned_range'"),
        ("simple", 2, "learned_range", "--loss hybrid or --loss vlb"),
    ],
)
def test_a_network_the_loss_cannot_train_is_refused(loss, out_channels, variance_type, message):
    unet = DDPMFromScratchUNet(sample_size=8, in_channels=1, out_channels=out_channels, base_channels=16,
                               channel_multipliers=(1,), num_res_blocks=1, attention_levels=(), norm_num_groups=8)
    with pytest.raises(ValueError, match=message):
        check_model_for_loss(unet, scheduler(variance_type), loss)
