"""DDPMFromScratchPipeline with a network that predicts ε and v (2·C output channels, Nichol & Dhariwal 2021).

References: diffusers' own DDPMPipeline + DDPMScheduler(variance_type="learned_range") on the same U-Net
and seed, and the sampling loop written out by hand with other diffusers schedulers fed ε alone.
"""

import warnings

import pytest
import torch
from diffusers import DDIMScheduler, DDPMPipeline, DDPMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler
from diffusers.utils.torch_utils import randn_tensor

from ddpm_from_scratch.pipelines.pipeline_ddpm import DDPMFromScratchPipeline
from ddpm_from_scratch.schedulers.scheduling_ddpm import DDPMFromScratchScheduler
from ddpm_from_scratch.models.unet import DDPMFromScratchUNet


def learned_variance_unet() -> DDPMFromScratchUNet:
    """A tiny ε-and-v U-Net (1 → 2 channels) with every weight random, so no zero- or identity-initialised
    layer hides a wiring mistake: ε has std ≈ 1 and v lies in about [−0.5, 0.9], inside learned_range's
    [−1, 1] and away from its ends, so σ_t² is a real mix of β̃_t and β_t (and no extrapolation)."""
    unet = DDPMFromScratchUNet(sample_size=8, in_channels=1, out_channels=2, base_channels=8,
                               channel_multipliers=(1, 2), num_res_blocks=1, attention_levels=(1,),
                               norm_num_groups=4).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in unet.named_parameters():
            noise = torch.randn(parameter.shape, generator=generator)
            # GroupNorm scales near 1, so activations keep their size through the network.
            parameter.copy_(1 + 0.2 * noise if "norm" in name and name.endswith("weight") else 0.2 * noise)
        unet.conv_out.weight[1].mul_(0.3)  # the v channel: scaled down into [−1, 1]
        unet.conv_out.bias.copy_(torch.tensor([0.0, 0.2]))
    return unet


def learned_variance_pipeline(num_train_timesteps: int = 1000, **scheduler_config) -> DDPMFromScratchPipeline:
    unet = learned_variance_unet()
    scheduler = DDPMFromScratchScheduler(num_train_timesteps=num_train_timesteps, variance_type="learned_range",
                                         **scheduler_config)
    pipe = DDPMFromScratchPipeline(unet=unet, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def sample_feeding_epsilon_only(unet, scheduler, seed: int, steps: int) -> torch.Tensor:
    """The sampling loop by hand, handing the scheduler the first C (ε) channels of the output."""
    generator = torch.Generator().manual_seed(seed)
    scheduler.set_timesteps(steps)
    x = randn_tensor((2, 1, 8, 8), generator=generator) * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        eps = unet(scheduler.scale_model_input(x, t), t).sample[:, :1]
        x = scheduler.step(eps, t, x, generator=generator).prev_sample
    return (x / 2 + 0.5).clamp(0, 1)


@pytest.mark.parametrize(
    ("num_train_timesteps", "num_inference_steps"), [(50, 50), (1000, 20)], ids=["full_chain", "respaced"]
)
def test_samples_equal_diffusers_ddpm_pipeline_with_a_learned_range_scheduler(num_train_timesteps,
                                                                              num_inference_steps):
    pipe = learned_variance_pipeline(num_train_timesteps)
    theirs = pipe.to_diffusers()
    assert theirs.scheduler.config.variance_type == "learned_range"
    theirs.set_progress_bar_config(disable=True)
    ours = pipe(batch_size=2, generator=torch.Generator().manual_seed(4), num_inference_steps=num_inference_steps,
                output_type="pt").images
    expected = theirs(batch_size=2, generator=torch.Generator().manual_seed(4),
                      num_inference_steps=num_inference_steps, output_type="pt").images
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)


def test_the_learned_variance_changes_the_samples():
    """The same network sampled with the fixed β̃_t: different images, so the variance channels are used."""
    learned = learned_variance_pipeline(50)
    fixed = DDPMFromScratchPipeline(unet=learned.unet, scheduler=DDPMFromScratchScheduler(num_train_timesteps=50))
    fixed.set_progress_bar_config(disable=True)
    a = learned(batch_size=2, generator=torch.Generator().manual_seed(4), num_inference_steps=50, output_type="pt").images
    b = fixed(batch_size=2, generator=torch.Generator().manual_seed(4), num_inference_steps=50, output_type="pt").images
    assert (a - b).abs().max() > 1e-2


@pytest.mark.parametrize(
    ("scheduler_cls", "overrides"),
    [
        (DDIMScheduler, {}),  # does not split: would read both channels as ε
        # keeps model_output[:, :3] for a learned variance: of a 1-channel model's 2 outputs, both
        (DPMSolverMultistepScheduler, {}),
        (EulerDiscreteScheduler, {}),
        (DDPMScheduler, {"variance_type": "fixed_small"}),  # a fixed variance: the v channel is unused
    ],
    ids=["DDIM", "DPMSolverMultistep", "EulerDiscrete", "DDPM-fixed_small"],
)
def test_other_schedulers_are_handed_epsilon_only(scheduler_cls, overrides):
    pipe = learned_variance_pipeline(1000)
    config = {**pipe.scheduler.config, **overrides}
    pipe.scheduler = scheduler_cls.from_config(config)
    images = pipe(batch_size=2, generator=torch.Generator().manual_seed(3), num_inference_steps=10,
                  output_type="pt").images
    expected = sample_feeding_epsilon_only(pipe.unet, scheduler_cls.from_config(config), 3, 10)
    torch.testing.assert_close(images, expected, atol=1e-6, rtol=0)


def test_diffusers_ddpm_scheduler_with_learned_range_is_handed_the_variance_channels():
    """Our loop with diffusers' own learned_range scheduler against diffusers' DDPMPipeline, which passes the
    whole output on (DDPMScheduler.step splits off v itself)."""
    unet = learned_variance_unet()
    scheduler = DDPMScheduler(num_train_timesteps=1000, variance_type="learned_range")
    ours = DDPMFromScratchPipeline(unet=unet, scheduler=scheduler)
    theirs = DDPMPipeline(unet=unet, scheduler=DDPMScheduler.from_config(scheduler.config))
    for pipe in (ours, theirs):
        pipe.set_progress_bar_config(disable=True)
    images = ours(batch_size=2, generator=torch.Generator().manual_seed(6), num_inference_steps=20,
                  output_type="pt").images
    expected = theirs(batch_size=2, generator=torch.Generator().manual_seed(6), num_inference_steps=20,
                      output_type="pt").images
    torch.testing.assert_close(images, expected, atol=1e-5, rtol=0)


def test_a_learned_variance_scheduler_with_an_epsilon_only_unet_is_refused_before_sampling():
    pipe = learned_variance_pipeline(50)
    unet = DDPMFromScratchUNet(sample_size=8, in_channels=1, out_channels=1, base_channels=8,
                               channel_multipliers=(1,), num_res_blocks=1, attention_levels=(), norm_num_groups=4)
    pipe = DDPMFromScratchPipeline(unet=unet, scheduler=pipe.scheduler)
    with pytest.raises(ValueError, match="variance_type='learned_range'.*out_channels=1"):
        pipe(batch_size=1)


def test_diffusers_ddpm_scheduler_with_learned_range_and_an_epsilon_only_unet_is_refused_before_sampling():
    unet = DDPMFromScratchUNet(sample_size=8, in_channels=1, out_channels=1, base_channels=8,
                               channel_multipliers=(1,), num_res_blocks=1, attention_levels=(), norm_num_groups=4)
    pipe = DDPMFromScratchPipeline(unet=unet, scheduler=DDPMScheduler(variance_type="learned_range"))
    unet.register_forward_pre_hook(lambda *_: pytest.fail("sampling started before the check"))
    with pytest.raises(ValueError, match="variance_type='learned_range'.*out_channels=1"):
        pipe(batch_size=1)


def test_to_diffusers_warns_when_the_exported_scheduler_would_read_the_variance_as_epsilon():
    pipe = learned_variance_pipeline(50)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    with pytest.warns(UserWarning, match="DDIMScheduler"):
        pipe.to_diffusers()


def test_to_diffusers_of_a_learned_variance_model_gives_a_plain_ddpm_pipeline():
    pipe = learned_variance_pipeline(50).to_diffusers()
    assert type(pipe) is DDPMPipeline
    assert pipe.unet.config.out_channels == 2


def test_to_diffusers_of_a_learned_range_model_does_not_warn():
    pipe = learned_variance_pipeline(50)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pipe.to_diffusers()


@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large_log"])
def test_to_diffusers_refuses_a_fixed_variance_scheduler_for_a_learned_variance_unet(variance_type):
    pipe = learned_variance_pipeline(50)
    pipe.scheduler = DDPMFromScratchScheduler(num_train_timesteps=50, variance_type=variance_type)
    with pytest.raises(ValueError, match=f"out_channels=2.*variance_type='{variance_type}'"):
        pipe.to_diffusers()
