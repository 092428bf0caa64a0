"""The bound of a respaced chain: `variational_bound(..., num_inference_steps=K | timesteps=...)`."""

import numpy as np
import pytest
import torch
from analytic_models import GaussianOptimalDenoiser

from ddpm_from_scratch import DDPMFromScratchScheduler
from ddpm_from_scratch.likelihood import bound_timesteps, variational_bound

T = 100


def grid_images(num_images: int = 6, size: int = 4, seed: int = 0) -> torch.Tensor:
    levels = torch.randint(60, 200, (num_images, 1, size, size), generator=torch.Generator().manual_seed(seed))
    return levels.float() / 127.5 - 1


class ChainAsTrainingChain(torch.nn.Module):
    """A network on the K-step chain's own indices 0..K−1, calling the original network at τ_k."""

    def __init__(self, unet, chain_ascending):
        super().__init__()
        self.unet, self.chain = unet, torch.tensor(chain_ascending)

    def forward(self, sample, timesteps):
        return self.unet(sample, self.chain[torch.as_tensor(timesteps).long()])


def respaced_as_training_chain(scheduler, chain_descending):
    """improved-diffusion's respacing: a K-step chain whose β'_k = 1 − ᾱ_{τ_k}/ᾱ_{τ_{k−1}} (float64, ᾱ_{τ_0} = 1)."""
    ac = scheduler.alphas_cumprod.double().numpy()[chain_descending[::-1]]
    betas = 1 - ac / np.concatenate([[1.0], ac[:-1]])
    return DDPMFromScratchScheduler(num_train_timesteps=len(ac), trained_betas=betas,
                                    variance_type=scheduler.config.variance_type, clip_sample=False)


def bound(unet, scheduler, images, **kwargs):
    return variational_bound(unet, scheduler, images, generator=torch.Generator().manual_seed(3), clip_denoised=False,
                             progress=False, **kwargs)


@pytest.mark.parametrize("chain", ["num_inference_steps", "timesteps"])
def test_full_length_chain_is_the_training_chain_bit_for_bit(chain):
    unet, scheduler, x0 = GaussianOptimalDenoiser(sample_size=4, num_train_timesteps=T), \
        DDPMFromScratchScheduler(num_train_timesteps=T), grid_images()
    kwargs = {"num_inference_steps": T} if chain == "num_inference_steps" else {"timesteps": list(range(T - 1, -1, -1))}
    full, default = bound(unet, scheduler, x0, **kwargs), bound(unet, scheduler, x0)
    assert torch.equal(full.bits_per_dim, default.bits_per_dim)
    assert torch.equal(full.terms_bits_per_dim, default.terms_bits_per_dim)


@pytest.mark.parametrize("spacing", ["leading", "trailing"])
@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large"])
def test_respaced_bound_is_the_bound_of_the_shorter_chain_built_as_a_training_chain(spacing, variance_type):
    unet = GaussianOptimalDenoiser(sample_size=4, num_train_timesteps=T)
    scheduler = DDPMFromScratchScheduler(num_train_timesteps=T, timestep_spacing=spacing, variance_type=variance_type)
    chain = bound_timesteps(scheduler, num_inference_steps=10)
    x0 = grid_images()
    respaced = bound(unet, scheduler, x0, num_inference_steps=10)
    independent = bound(ChainAsTrainingChain(unet, chain[::-1]), respaced_as_training_chain(scheduler, chain), x0)
    assert respaced.timesteps.tolist() == chain[::-1]
    torch.testing.assert_close(respaced.terms_bits_per_dim, independent.terms_bits_per_dim, rtol=2e-4, atol=1e-7)
    torch.testing.assert_close(respaced.prior_bits_per_dim, independent.prior_bits_per_dim, rtol=1e-3, atol=1e-9)


def test_bound_chain_follows_the_schedulers_spacing():
    scheduler = DDPMFromScratchScheduler(num_train_timesteps=T, timestep_spacing="trailing")
    scheduler.set_timesteps(10)
    assert bound_timesteps(scheduler, num_inference_steps=10) == scheduler.timesteps.tolist()


def test_fewer_steps_cost_bits_for_the_exact_denoiser_with_the_posterior_variance():
    # With σ² = β̃ the short chain's KL terms grow as its steps do (Bao et al.'s 74.95 bits/dim at K = 10).
    unet, scheduler, x0 = GaussianOptimalDenoiser(sample_size=4, num_train_timesteps=T), \
        DDPMFromScratchScheduler(num_train_timesteps=T), grid_images()
    assert bound(unet, scheduler, x0, num_inference_steps=5).bits_per_dim.mean() > bound(
        unet, scheduler, x0).bits_per_dim.mean()


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"num_inference_steps": 0}, "num_inference_steps"),
    ({"num_inference_steps": T + 1}, "num_inference_steps"),
    ({"num_inference_steps": 2.5}, "num_inference_steps"),
    ({"num_inference_steps": 1}, "at least 2 timesteps"),
    ({"timesteps": [50, 60, 0]}, "strictly descending"),
    ({"timesteps": [T, 50, 0]}, "timesteps must lie in"),
    ({"timesteps": [50, -1]}, "timesteps must lie in"),
    ({"num_inference_steps": 10, "timesteps": [50, 0]}, "not both"),
])
def test_bad_chain_is_refused_naming_the_argument(kwargs, message):
    unet, scheduler = GaussianOptimalDenoiser(sample_size=4, num_train_timesteps=T), \
        DDPMFromScratchScheduler(num_train_timesteps=T)
    with pytest.raises(ValueError, match=message):
        bound(unet, scheduler, grid_images(), **kwargs)
