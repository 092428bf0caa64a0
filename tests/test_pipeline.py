"""DDPMFromScratchPipeline: the sampling loop, its outputs, and saving/loading."""

import inspect

import numpy as np
import pytest
import torch
from analytic_models import GaussianOptimalDenoiser, linear_alphas_cumprod
from diffusers import (
    DDIMScheduler,
    DDPMPipeline,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    UniPCMultistepScheduler,
)
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from ddpm_from_scratch.pipelines.pipeline_ddpm import DDPMFromScratchPipeline
from ddpm_from_scratch.schedulers.scheduling_ddpm import DDPMFromScratchScheduler
from ddpm_from_scratch.models.unet import DDPMFromScratchUNet

DATA_MEAN, DATA_STD = 0.15, 0.2


def gaussian_pipeline(**scheduler_config) -> DDPMFromScratchPipeline:
    model = GaussianOptimalDenoiser(mean=DATA_MEAN, std=DATA_STD, sample_size=16, in_channels=1)
    scheduler = DDPMFromScratchScheduler(clip_sample=False, **scheduler_config)
    pipe = DDPMFromScratchPipeline(unet=model, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_unet_pipeline(in_channels: int = 1) -> DDPMFromScratchPipeline:
    torch.manual_seed(0)
    unet = DDPMFromScratchUNet(
        sample_size=8,
        in_channels=in_channels,
        out_channels=in_channels,
        base_channels=8,
        channel_multipliers=(1, 2),
        num_res_blocks=1,
        attention_levels=(1,),
        norm_num_groups=4,
    ).eval()
    pipe = DDPMFromScratchPipeline(unet=unet, scheduler=DDPMFromScratchScheduler(num_train_timesteps=20))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def exact_output_moments(num_inference_steps: int, variance_type: str, num_train_timesteps: int = 1000):
    """Mean and standard deviation of the sampler's output for Gaussian data, by exact recursion.

    With the optimal ε-predictor every reverse step is affine in x_t plus Gaussian noise,
    x_prev = A x_t + B + σ z, so the moments follow μ ← Aμ + B, v ← A²v + σ², starting
    from x_T ~ N(0, 1). Written from MATH.md with "leading" respacing, independently of
    the package's scheduler.
    """
    alphas_cumprod = linear_alphas_cumprod(num_train_timesteps)
    stride = num_train_timesteps // num_inference_steps
    m, s = DATA_MEAN, DATA_STD
    mean, var = 0.0, 1.0
    for t in (np.arange(num_inference_steps) * stride)[::-1]:
        abar_t = alphas_cumprod[t]
        abar_prev = alphas_cumprod[t - stride] if t - stride >= 0 else 1.0
        beta = 1 - abar_t / abar_prev
        # ε* = k (x_t − √ᾱ_t m)  ⇒  x̂_0 = (x_t − √(1−ᾱ_t) ε*) / √ᾱ_t = a x_t + b
        k = np.sqrt(1 - abar_t) / (abar_t * s**2 + 1 - abar_t)
        a = (1 - np.sqrt(1 - abar_t) * k) / np.sqrt(abar_t)
        b = np.sqrt(1 - abar_t) * k * m
        # μ̃ = c0 x̂_0 + ct x_t
        c0 = np.sqrt(abar_prev) * beta / (1 - abar_t)
        ct = np.sqrt(1 - beta) * (1 - abar_prev) / (1 - abar_t)
        if t == 0:
            sigma2 = 0.0
        elif variance_type == "fixed_small":
            sigma2 = (1 - abar_prev) / (1 - abar_t) * beta
        else:
            sigma2 = beta
        mean = (c0 * a + ct) * mean + c0 * b
        var = (c0 * a + ct) ** 2 * var + sigma2
    return mean, np.sqrt(var)


def test_exact_recursion_recovers_the_data_distribution_at_1000_steps():
    mean, std = exact_output_moments(1000, "fixed_small")
    assert mean == pytest.approx(DATA_MEAN, abs=1e-3)
    assert std == pytest.approx(DATA_STD, abs=0.01)


@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large"])
@pytest.mark.parametrize("num_inference_steps", [1000, 50, 13])
def test_sample_moments_match_the_exact_recursion(num_inference_steps, variance_type):
    pipe = gaussian_pipeline(variance_type=variance_type)
    images = pipe(
        batch_size=256, generator=torch.Generator().manual_seed(0),
        num_inference_steps=num_inference_steps, output_type="pt",
    ).images
    x = (images.double() * 2 - 1).flatten()  # back to model space; iid pixels
    n = x.numel()
    expected_mean, expected_std = exact_output_moments(num_inference_steps, variance_type)
    # Five standard errors: mean's is σ/√n, the standard deviation's about σ/√(2n).
    assert x.mean().item() == pytest.approx(expected_mean, abs=5 * expected_std / np.sqrt(n))
    assert x.std().item() == pytest.approx(expected_std, abs=5 * expected_std / np.sqrt(2 * n))


def test_few_step_moments_differ_from_the_data_so_the_recursion_matters():
    # Guards the test above against passing trivially: 13 steps visibly shrink the spread.
    _, std = exact_output_moments(13, "fixed_small")
    assert abs(std - DATA_STD) > 0.05


def scheduler_cls_takes_generator(scheduler) -> bool:
    return "generator" in inspect.signature(scheduler.step).parameters


def sample_by_hand(model, scheduler, shape, seed, num_inference_steps):
    """The sampling loop written out with diffusers' scheduler protocol, as the reference."""
    generator = torch.Generator().manual_seed(seed)
    scheduler.set_timesteps(num_inference_steps)  # init_noise_sigma of σ-space schedulers depends on it
    x = randn_tensor(shape, generator=generator) * scheduler.init_noise_sigma
    stochastic = scheduler_cls_takes_generator(scheduler)
    for t in scheduler.timesteps:
        eps = model(scheduler.scale_model_input(x, t), t).sample
        x = scheduler.step(eps, t, x, generator=generator).prev_sample if stochastic else scheduler.step(eps, t, x).prev_sample
    return (x / 2 + 0.5).clamp(0, 1)


@pytest.mark.parametrize("spacing", ["leading", "linspace"])
@pytest.mark.parametrize(
    "scheduler_cls",
    [DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler, UniPCMultistepScheduler, DDPMScheduler],
)
def test_swapped_in_diffusers_scheduler_samples_like_the_hand_written_loop(scheduler_cls, spacing):
    # Spacing set explicitly, as in any config that was saved and loaded: with "leading",
    # Euler's init_noise_sigma changes in set_timesteps.
    pipe = gaussian_pipeline(timestep_spacing=spacing)
    config = pipe.scheduler.config
    pipe.scheduler = scheduler_cls.from_config(config)
    images = pipe(batch_size=4, generator=torch.Generator().manual_seed(3), num_inference_steps=20, output_type="pt").images
    expected = sample_by_hand(pipe.unet, scheduler_cls.from_config(config), (4, 1, 16, 16), 3, 20)
    torch.testing.assert_close(images, expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("spacing", ["leading", "linspace"])
def test_euler_samples_have_the_data_moments(spacing):
    # Euler lives in σ-space: skipping init_noise_sigma or scale_model_input, or reading
    # init_noise_sigma before set_timesteps, ruins these moments.
    pipe = gaussian_pipeline(timestep_spacing=spacing)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    images = pipe(batch_size=64, generator=torch.Generator().manual_seed(0), num_inference_steps=200, output_type="pt").images
    x = images.double() * 2 - 1
    assert x.mean().item() == pytest.approx(DATA_MEAN, abs=0.01)
    assert x.std().item() == pytest.approx(DATA_STD, abs=0.02)


def test_one_channel_model_gives_mode_L_pil_images():
    images = tiny_unet_pipeline(in_channels=1)(batch_size=2, num_inference_steps=3).images
    assert len(images) == 2
    assert all(isinstance(im, Image.Image) and im.mode == "L" and im.size == (8, 8) for im in images)


def test_three_channel_model_gives_rgb_pil_images():
    images = tiny_unet_pipeline(in_channels=3)(batch_size=1, num_inference_steps=3).images
    assert images[0].mode == "RGB"


def test_output_type_np_is_channels_last_in_unit_interval():
    images = tiny_unet_pipeline(in_channels=3)(batch_size=2, num_inference_steps=3, output_type="np").images
    assert isinstance(images, np.ndarray) and images.shape == (2, 8, 8, 3)
    assert images.min() >= 0 and images.max() <= 1


def test_output_type_pt_is_channels_first_tensor():
    images = tiny_unet_pipeline(in_channels=3)(batch_size=2, num_inference_steps=3, output_type="pt").images
    assert isinstance(images, torch.Tensor) and images.shape == (2, 3, 8, 8)


def test_unknown_output_type_is_refused_by_name():
    with pytest.raises(ValueError, match="output_type.*'jpeg'"):
        tiny_unet_pipeline()(num_inference_steps=3, output_type="jpeg")


def test_return_dict_false_returns_a_tuple():
    result = tiny_unet_pipeline()(num_inference_steps=3, output_type="pt", return_dict=False)
    assert isinstance(result, tuple) and result[0].shape == (1, 1, 8, 8)


def test_same_seed_gives_the_same_images():
    pipe = tiny_unet_pipeline()
    first = pipe(batch_size=2, generator=torch.Generator().manual_seed(7), num_inference_steps=5, output_type="pt").images
    second = pipe(batch_size=2, generator=torch.Generator().manual_seed(7), num_inference_steps=5, output_type="pt").images
    assert torch.equal(first, second)


def test_list_of_generators_seeds_each_image_on_its_own():
    pipe = tiny_unet_pipeline()
    batch = pipe(
        batch_size=2, generator=[torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)],
        num_inference_steps=5, output_type="pt",
    ).images
    alone = pipe(batch_size=1, generator=[torch.Generator().manual_seed(2)], num_inference_steps=5, output_type="pt").images
    torch.testing.assert_close(batch[1:], alone, atol=1e-6, rtol=0)


def test_generator_list_of_the_wrong_length_is_refused():
    with pytest.raises(ValueError, match="batch_size"):
        tiny_unet_pipeline()(batch_size=3, generator=[torch.Generator()], num_inference_steps=3)


def test_non_positive_batch_size_is_refused():
    with pytest.raises(ValueError, match="batch_size"):
        tiny_unet_pipeline()(batch_size=0, num_inference_steps=3)


def test_progress_bar_is_shown(capsys):
    pipe = tiny_unet_pipeline()
    pipe.set_progress_bar_config(disable=False)
    pipe(num_inference_steps=4, output_type="pt")
    assert "4/4" in capsys.readouterr().err


def test_save_and_load_round_trip_is_bit_identical(tmp_path):
    pipe = tiny_unet_pipeline()
    pipe.save_pretrained(tmp_path)
    assert (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").exists()
    loaded = DDPMFromScratchPipeline.from_pretrained(tmp_path)
    assert isinstance(loaded.unet, DDPMFromScratchUNet)
    assert isinstance(loaded.scheduler, DDPMFromScratchScheduler)
    saved, restored = pipe.unet.state_dict(), loaded.unet.state_dict()
    assert saved.keys() == restored.keys()
    assert all(torch.equal(saved[k], restored[k]) for k in saved)
    public = lambda config: {k: v for k, v in config.items() if not k.startswith("_")}  # noqa: E731
    assert public(loaded.scheduler.config) == public(pipe.scheduler.config)


def test_from_pretrained_takes_a_replacement_scheduler(tmp_path):
    tiny_unet_pipeline().save_pretrained(tmp_path)
    ddim = DDIMScheduler(num_train_timesteps=20)
    loaded = DDPMFromScratchPipeline.from_pretrained(tmp_path, scheduler=ddim)
    assert loaded.scheduler is ddim
    loaded.set_progress_bar_config(disable=True)
    assert loaded(num_inference_steps=4, output_type="pt").images.shape == (1, 1, 8, 8)


def test_with_components_swaps_the_scheduler_and_keeps_the_unet_and_settings():
    pipe = tiny_unet_pipeline()
    pipe = DDPMFromScratchPipeline(unet=pipe.unet, scheduler=pipe.scheduler, id2label={0: "zero"},
                                   log_snr_prefix_steps=5)
    ddim = DDIMScheduler(num_train_timesteps=20)
    swapped = pipe.with_components(scheduler=ddim)
    assert swapped.scheduler is ddim and swapped.unet is pipe.unet
    assert (swapped.id2label, swapped.log_snr_prefix_steps) == ({0: "zero"}, 5)
    assert isinstance(pipe.scheduler, DDPMFromScratchScheduler)


def test_with_components_refuses_a_component_the_pipeline_does_not_have():
    with pytest.raises(ValueError, match="no component 'vae'.*'scheduler', 'unet'"):
        tiny_unet_pipeline().with_components(vae=None)


@pytest.mark.parametrize("num_inference_steps", [20, 7])
def test_samples_equal_diffusers_ddpm_pipeline_with_the_same_unet_and_seed(num_inference_steps):
    pipe = tiny_unet_pipeline()
    theirs = DDPMPipeline(unet=pipe.unet, scheduler=DDPMScheduler.from_config(pipe.scheduler.config))
    theirs.set_progress_bar_config(disable=True)
    ours = pipe(batch_size=3, generator=torch.Generator().manual_seed(5), num_inference_steps=num_inference_steps,
                output_type="pt").images
    expected = theirs(batch_size=3, generator=torch.Generator().manual_seed(5),
                      num_inference_steps=num_inference_steps, output_type="pt").images
    torch.testing.assert_close(ours, expected, atol=1e-6, rtol=0)


def test_from_pretrained_takes_a_replacement_unet(tmp_path):
    tiny_unet_pipeline().save_pretrained(tmp_path)
    replacement = tiny_unet_pipeline(in_channels=1).unet
    with torch.no_grad():
        next(replacement.parameters()).add_(1.0)
    loaded = DDPMFromScratchPipeline.from_pretrained(tmp_path, unet=replacement)
    assert loaded.unet is replacement


def test_output_tensors_can_enter_autograd():
    # diffusers' pipelines run under no_grad, not inference_mode: their outputs are ordinary tensors.
    images = tiny_unet_pipeline()(num_inference_steps=2, output_type="pt").images
    weight = torch.ones(1, requires_grad=True)
    (images * weight).sum().backward()
    assert weight.grad is not None


def test_variational_bound_method_is_the_likelihood_module_on_the_pipelines_components():
    from ddpm_from_scratch.likelihood import variational_bound

    pipe = tiny_unet_pipeline()
    images = torch.randint(0, 256, (2, 1, 8, 8)).float() / 127.5 - 1
    via_pipe = pipe.variational_bound(images, generator=torch.Generator().manual_seed(0), progress=False)
    direct = variational_bound(pipe.unet, pipe.scheduler, images, generator=torch.Generator().manual_seed(0),
                               progress=False)
    torch.testing.assert_close(via_pipe.bits_per_dim, direct.bits_per_dim, atol=0, rtol=0)
