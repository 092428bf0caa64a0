"""The bound of a pipeline whose scheduler is diffusers' own: the same numbers as with our scheduler."""

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, EulerDiscreteScheduler

from ddpm_from_scratch import DDPMFromScratchPipeline, DDPMFromScratchScheduler
from ddpm_from_scratch.likelihood import ddpm_chain, variational_bound


def images(n=3):
    grid = torch.arange(256, dtype=torch.float32) / 127.5 - 1
    return grid[torch.randint(0, 256, (n, 1, 8, 8), generator=torch.Generator().manual_seed(0))]


@pytest.mark.parametrize("config", [{}, {"variance_type": "fixed_large", "beta_schedule": "squaredcos_cap_v2"},
                                    {"prediction_type": "v_prediction", "clip_sample": False}])
def test_a_ddpmscheduler_gives_exactly_the_bound_of_our_scheduler_with_its_config(tiny_pipeline_dir, config):
    pipe = DDPMFromScratchPipeline.from_pretrained(tiny_pipeline_dir)
    theirs = DDPMScheduler(num_train_timesteps=50, **config)
    ours = DDPMFromScratchScheduler(num_train_timesteps=50, **config)
    want = variational_bound(pipe.unet, ours, images(), generator=torch.Generator().manual_seed(1), progress=False)
    got = variational_bound(pipe.unet, theirs, images(), generator=torch.Generator().manual_seed(1), progress=False)
    torch.testing.assert_close(got.bits_per_dim, want.bits_per_dim, rtol=0, atol=0)
    torch.testing.assert_close(got.terms_bits_per_dim, want.terms_bits_per_dim, rtol=0, atol=0)


def test_pipe_variational_bound_works_with_a_diffusers_scheduler_swapped_in(tiny_pipeline_dir):
    pipe = DDPMFromScratchPipeline.from_pretrained(tiny_pipeline_dir)
    want = pipe.variational_bound(images(), generator=torch.Generator().manual_seed(2), progress=False)
    pipe.scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    got = pipe.variational_bound(images(), generator=torch.Generator().manual_seed(2), progress=False)
    torch.testing.assert_close(got.bits_per_dim, want.bits_per_dim, rtol=0, atol=0)


@pytest.mark.parametrize("scheduler_class", [DDIMScheduler, EulerDiscreteScheduler])
def test_other_schedulers_map_by_their_beta_schedule(scheduler_class):
    mapped = ddpm_chain(scheduler_class(num_train_timesteps=100, beta_schedule="scaled_linear"))
    ours = DDPMFromScratchScheduler(num_train_timesteps=100, beta_schedule="scaled_linear")
    torch.testing.assert_close(mapped.alphas_cumprod, ours.alphas_cumprod)


def test_a_config_our_scheduler_refuses_is_named_with_the_class():
    theirs = DDPMScheduler(num_train_timesteps=10, beta_schedule="linear", beta_start=0.5, beta_end=0.2)
    with pytest.raises(ValueError, match="DDPMScheduler's config cannot give one: .*beta_end"):
        ddpm_chain(theirs)
