"""The opt-in sampling fast paths: a compiled U-Net with frozen weights, and mixed precision.

The reference is diffusers: the compiled network must still predict what diffusers'
UNet2DModel with the same weights predicts, and a bf16 pipeline must still give the
images diffusers' DDPMPipeline gives in float32, to within bf16's rounding.
"""

import numpy as np
import pytest
import torch
from diffusers import DDPMPipeline, DDPMScheduler

from ddpm_from_scratch import DDPMFromScratchPipeline, DDPMFromScratchScheduler, DDPMFromScratchUNet
from ddpm_from_scratch.sampling.fast import compile_for_sampling, sampling_autocast

# Two levels, attention at the lower one and in the middle: every kind of block, small enough to compile quickly.
TINY = dict(sample_size=8, in_channels=1, out_channels=1, base_channels=16, channel_multipliers=(1, 2),
            num_res_blocks=1, attention_levels=(1,), norm_num_groups=4)


def tiny_unet(seed: int = 0) -> DDPMFromScratchUNet:
    torch.manual_seed(seed)
    return DDPMFromScratchUNet(**TINY).eval()


def inputs(batch: int = 4):
    g = torch.Generator().manual_seed(1)
    return torch.randn(batch, 1, 8, 8, generator=g), torch.tensor(417)


def test_compiled_unet_predicts_what_diffusers_unet2d_predicts():
    ours = tiny_unet()
    theirs = ours.to_unet2d().eval()
    x, t = inputs()
    with torch.no_grad():
        expected = theirs(x, t).sample
        compile_for_sampling(ours)
        got = ours(x, t).sample
    assert expected.abs().mean() > 0.1  # a non-trivial prediction
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_compiled_unet_keeps_its_class_config_and_weights():
    unet = tiny_unet()
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    compiled = compile_for_sampling(unet)
    assert compiled is unet and type(unet) is DDPMFromScratchUNet
    assert unet.config.base_channels == TINY["base_channels"]
    assert unet.state_dict().keys() == before.keys()
    assert all(torch.equal(unet.state_dict()[k], v) for k, v in before.items())


def test_compiled_pipeline_gives_diffusers_ddpm_pipeline_images():
    unet = tiny_unet()
    scheduler = DDPMFromScratchScheduler(num_train_timesteps=50)
    theirs = DDPMPipeline(unet=unet.to_unet2d().eval(), scheduler=DDPMScheduler.from_config(scheduler.config))
    ours = DDPMFromScratchPipeline(unet=compile_for_sampling(unet), scheduler=scheduler)
    for pipe in (ours, theirs):
        pipe.set_progress_bar_config(disable=True)
    kwargs = dict(batch_size=3, num_inference_steps=10, output_type="np")
    expected = theirs(generator=torch.Generator().manual_seed(5), **kwargs).images
    got = ours(generator=torch.Generator().manual_seed(5), **kwargs).images
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def test_bf16_autocast_pipeline_stays_within_bf16_rounding_of_diffusers_float32():
    unet = tiny_unet()
    scheduler = DDPMFromScratchScheduler(num_train_timesteps=50)
    theirs = DDPMPipeline(unet=unet.to_unet2d().eval(), scheduler=DDPMScheduler.from_config(scheduler.config))
    ours = DDPMFromScratchPipeline(unet=unet, scheduler=scheduler)
    for pipe in (ours, theirs):
        pipe.set_progress_bar_config(disable=True)
    kwargs = dict(batch_size=4, num_inference_steps=10, output_type="np")
    expected = theirs(generator=torch.Generator().manual_seed(5), **kwargs).images
    with sampling_autocast("cpu", "bf16"):
        got = ours(generator=torch.Generator().manual_seed(5), **kwargs).images
    difference = np.abs(got - expected)
    # bf16 keeps 8 significant bits: ε_θ is off by ~2⁻⁸ relative, and the chain carries that into the images.
    assert 0 < difference.max() < 0.02
    assert difference.mean() < 4e-3


def test_bf16_autocast_runs_the_unet_in_bf16_and_the_scheduler_in_float32():
    unet = tiny_unet()
    scheduler = DDPMFromScratchScheduler(num_train_timesteps=50)
    x, _ = inputs()
    t = torch.tensor(37)
    with torch.no_grad(), sampling_autocast("cpu", "bf16"):
        eps = unet(x, t).sample
        step = scheduler.step(eps, t, x, generator=torch.Generator().manual_seed(0))
    assert eps.dtype == torch.bfloat16
    assert step.prev_sample.dtype == torch.float32


def test_no_mixed_precision_is_plain_float32():
    unet = tiny_unet()
    x, t = inputs()
    with torch.no_grad():
        expected = unet(x, t).sample
        with sampling_autocast("cpu", "no"):
            got = unet(x, t).sample
    assert torch.equal(got, expected)


def test_an_unknown_precision_is_refused_by_name():
    with pytest.raises(ValueError, match="mixed_precision='fp8'"):
        sampling_autocast("cpu", "fp8")
