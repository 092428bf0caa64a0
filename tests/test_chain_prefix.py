"""Sampling past a high-SNR prefix: a pipeline with ``log_snr_prefix_steps=N`` samples the linear model's chain, with
the network asked N timesteps later; the prefix saves and loads with the pipeline."""

import json
import warnings

import pytest
import torch
from diffusers import DiffusionPipeline

from ddpm_from_scratch import DDPMFromScratchPipeline, DDPMFromScratchScheduler, DDPMFromScratchUNet
from ddpm_from_scratch.likelihood import variational_bound
from ddpm_from_scratch.pipelines.chain_prefix import scheduler_past_prefix, timesteps_past_prefix
from ddpm_from_scratch.sampling.samplers import scheduler_for
from ddpm_from_scratch.schedulers.log_snr_schedules import high_snr_prefix_betas
from ddpm_from_scratch.schedulers.scheduling_analytic_dpm import AnalyticDPMScheduler

LINEAR_T, PREFIX = 100, 10


def linear_scheduler() -> DDPMFromScratchScheduler:
    return DDPMFromScratchScheduler(num_train_timesteps=LINEAR_T)


def prefixed_scheduler(**config) -> DDPMFromScratchScheduler:
    betas = high_snr_prefix_betas(LINEAR_T, 13.0, PREFIX).tolist()
    return DDPMFromScratchScheduler(num_train_timesteps=LINEAR_T + PREFIX, trained_betas=betas, **config)


def tiny_unet() -> DDPMFromScratchUNet:
    torch.manual_seed(0)
    return DDPMFromScratchUNet(sample_size=8, in_channels=1, out_channels=1, base_channels=8, channel_multipliers=(1, 2),
                               num_res_blocks=1, attention_levels=(1,), norm_num_groups=4).eval()


class ShiftedClock(torch.nn.Module):
    """The same network asked `shift` timesteps later: what the linear model's sampler should call."""

    def __init__(self, unet: DDPMFromScratchUNet, shift: int):
        super().__init__()
        self.unet, self.shift, self.config = unet, shift, unet.config

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    @property
    def device(self) -> torch.device:
        return self.unet.device

    def forward(self, sample, timestep, **kwargs):
        return self.unet(sample, timestep + self.shift, **kwargs)


def pipeline(unet, scheduler, **config) -> DDPMFromScratchPipeline:
    pipe = DDPMFromScratchPipeline(unet=unet, scheduler=scheduler, **config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def draw(pipe, **kwargs) -> torch.Tensor:
    generators = [torch.Generator().manual_seed(3 + i) for i in range(2)]
    return pipe(batch_size=2, generator=generators, output_type="pt", **kwargs).images


def test_the_chain_past_the_prefix_has_the_linear_schedules_alphas_cumprod():
    past = scheduler_past_prefix(prefixed_scheduler(), PREFIX)
    assert past.config.num_train_timesteps == LINEAR_T
    torch.testing.assert_close(past.alphas_cumprod.double(), linear_scheduler().alphas_cumprod.double(),
                               rtol=1e-6, atol=0)


@pytest.mark.parametrize("name", ["dpm-solver", "EulerDiscreteScheduler"])
def test_a_diffusers_schedulers_chain_past_the_prefix_is_of_its_own_class(name):
    sampler = scheduler_for(name, prefixed_scheduler().config)
    past = scheduler_past_prefix(sampler, PREFIX)
    assert type(past) is type(sampler)
    torch.testing.assert_close(past.alphas_cumprod.double(), linear_scheduler().alphas_cumprod.double(),
                               rtol=1e-6, atol=0)


def test_the_chain_past_the_prefix_keeps_the_last_entries_of_analytic_dpms_table():
    gamma = torch.linspace(0.1, 0.9, LINEAR_T + PREFIX).tolist()
    scheduler = AnalyticDPMScheduler(gamma=gamma, num_train_timesteps=LINEAR_T + PREFIX,
                                     trained_betas=prefixed_scheduler().config.trained_betas)
    assert scheduler_past_prefix(scheduler, PREFIX).config.gamma == pytest.approx(gamma[PREFIX:])


@pytest.mark.parametrize("name", ["ddpm", "dpm-solver", "UniPCMultistepScheduler", "EulerDiscreteScheduler"])
def test_a_zero_terminal_snr_chain_past_the_prefix_keeps_the_rescaled_alphas_cumprod(name):
    sampler = scheduler_for(name, prefixed_scheduler(rescale_betas_zero_snr=True).config)
    past = scheduler_past_prefix(sampler, PREFIX)
    assert past.config.rescale_betas_zero_snr
    torch.testing.assert_close(past.alphas_cumprod.double(), sampler.alphas_cumprod[PREFIX:].double(),
                               rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("name", ["ddpm", "dpm-solver", "UniPCMultistepScheduler", "EulerDiscreteScheduler"])
def test_a_zero_terminal_snr_prefixed_pipeline_samples_finite_images(name):
    sampler = scheduler_for(name, prefixed_scheduler(rescale_betas_zero_snr=True).config)
    images = draw(pipeline(tiny_unet(), sampler, log_snr_prefix_steps=PREFIX), num_inference_steps=10)
    assert torch.isfinite(images).all()


@pytest.mark.parametrize("name", ["ddpm", "ddim", "dpm-solver", "UniPCMultistepScheduler", "EulerDiscreteScheduler"])
def test_a_prefixed_pipeline_samples_the_linear_models_chain_with_the_network_asked_later(name):
    unet = tiny_unet()
    reference = pipeline(ShiftedClock(unet, PREFIX), scheduler_for(name, linear_scheduler().config))
    prefixed = pipeline(unet, scheduler_for(name, prefixed_scheduler().config), log_snr_prefix_steps=PREFIX)
    torch.testing.assert_close(draw(prefixed, num_inference_steps=10), draw(reference, num_inference_steps=10),
                               rtol=1e-4, atol=1e-4)


def test_more_steps_than_the_chain_past_the_prefix_sample_the_whole_chain():
    unet, scheduler = tiny_unet(), prefixed_scheduler()
    whole = pipeline(unet, scheduler)
    prefixed = pipeline(unet, scheduler, log_snr_prefix_steps=PREFIX)
    steps = LINEAR_T + PREFIX // 2
    torch.testing.assert_close(draw(prefixed, num_inference_steps=steps), draw(whole, num_inference_steps=steps),
                               rtol=0, atol=0)


def test_explicit_timesteps_are_taken_as_they_are():
    unet, scheduler = tiny_unet(), prefixed_scheduler()
    chain = [100, 60, 30, 5, 0]
    prefixed = pipeline(unet, scheduler, log_snr_prefix_steps=PREFIX)
    torch.testing.assert_close(draw(prefixed, timesteps=chain), draw(pipeline(unet, scheduler), timesteps=chain),
                               rtol=0, atol=0)


def test_the_bound_of_k_steps_is_the_bound_of_the_chain_the_pipeline_samples():
    unet, scheduler = tiny_unet(), prefixed_scheduler()
    images = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0)).mul(255).round().div(127.5).sub(1)
    linear = linear_scheduler()
    linear.set_timesteps(10)
    chain = [int(t) + PREFIX for t in linear.timesteps]
    expected = variational_bound(unet, scheduler, images, torch.Generator().manual_seed(1), progress=False,
                                 timesteps=chain)
    got = pipeline(unet, scheduler, log_snr_prefix_steps=PREFIX).variational_bound(
        images, torch.Generator().manual_seed(1), progress=False, num_inference_steps=10)
    torch.testing.assert_close(got.bits_per_dim, expected.bits_per_dim, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["EulerDiscreteScheduler", "PNDMScheduler"])
def test_the_bound_of_k_steps_past_the_prefix_is_that_of_the_ddpm_chain_whatever_the_sampler(name):
    unet, scheduler = tiny_unet(), prefixed_scheduler()
    images = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0)).mul(255).round().div(127.5).sub(1)

    def bound(sampler):
        return pipeline(unet, sampler, log_snr_prefix_steps=PREFIX).variational_bound(
            images, torch.Generator().manual_seed(1), progress=False, num_inference_steps=10).bits_per_dim

    torch.testing.assert_close(bound(scheduler_for(name, scheduler.config)), bound(scheduler), rtol=0, atol=0)


def test_timesteps_past_the_prefix_are_the_linear_grid_moved_by_the_prefix():
    linear = linear_scheduler()
    linear.set_timesteps(10)
    assert timesteps_past_prefix(prefixed_scheduler(), 10, PREFIX) == [int(t) + PREFIX for t in linear.timesteps]


@pytest.mark.parametrize("name", ["dpm-solver", "ddim", "ddpm"])
def test_the_default_runs_prefix_puts_the_linear_schedules_grid_on_the_prefixed_chain(name):
    linear = DDPMFromScratchScheduler()
    prefixed = DDPMFromScratchScheduler(num_train_timesteps=1050,
                                        trained_betas=high_snr_prefix_betas(1000, 13.0, 50).tolist())
    reference = scheduler_for(name, linear.config)
    reference.set_timesteps(25)
    timesteps = timesteps_past_prefix(scheduler_for(name, prefixed.config), 25, 50)
    assert timesteps == [int(t) + 50 for t in reference.timesteps]
    torch.testing.assert_close(prefixed.alphas_cumprod[timesteps].double(),
                               linear.alphas_cumprod[reference.timesteps].double(), rtol=0, atol=1e-6)


def test_the_prefix_is_saved_in_model_index_and_loaded_back(tmp_path):
    pipeline(tiny_unet(), prefixed_scheduler(), log_snr_prefix_steps=PREFIX).save_pretrained(tmp_path)
    assert json.loads((tmp_path / "model_index.json").read_text())["log_snr_prefix_steps"] == PREFIX
    assert (tmp_path / "chain_prefix.py").is_file()  # the shipped pipeline code imports it
    assert DDPMFromScratchPipeline.from_pretrained(tmp_path).log_snr_prefix_steps == PREFIX
    assert DiffusionPipeline.from_pretrained(tmp_path, trust_remote_code=True).log_snr_prefix_steps == PREFIX


def test_a_pipeline_without_a_prefix_writes_none():
    pipe = pipeline(tiny_unet(), linear_scheduler())
    assert pipe.log_snr_prefix_steps == 0 and "log_snr_prefix_steps" not in pipe.config


@pytest.mark.parametrize("value", [-1, LINEAR_T + PREFIX - 1, 2.5, True, "10"])
def test_a_prefix_that_leaves_no_chain_is_refused_naming_it(value):
    with pytest.raises(ValueError, match=f"log_snr_prefix_steps must be an integer in \\[0, {LINEAR_T + PREFIX - 1}\\)"
                                         f" for a chain of {LINEAR_T + PREFIX} timesteps, got {value!r}"):
        DDPMFromScratchPipeline(unet=tiny_unet(), scheduler=prefixed_scheduler(), log_snr_prefix_steps=value)


def test_to_diffusers_says_in_one_line_that_ddpmpipeline_samples_the_prefix_too():
    pipe = pipeline(tiny_unet(), prefixed_scheduler(), log_snr_prefix_steps=PREFIX)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pipe.to_diffusers()
    messages = [str(w.message) for w in caught if "log_snr_prefix_steps" in str(w.message)]
    assert len(messages) == 1 and "\n" not in messages[0]
