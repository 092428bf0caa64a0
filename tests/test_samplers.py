"""Samplers by name: the project's short names and diffusers' scheduler classes, built from the DDPM config."""

import importlib.util

import diffusers
import numpy as np
import pytest
import torch
from script_modules import load_script

from ddpm_from_scratch import DDPMFromScratchScheduler
from ddpm_from_scratch.sampling.samplers import (
    DIFFUSERS_SCHEDULERS,
    SAMPLER_NAMES,
    default_num_inference_steps,
    sampler_name,
    scheduler_for,
)

HAS_TORCHSDE = importlib.util.find_spec("torchsde") is not None
BUILDABLE = [name for name in DIFFUSERS_SCHEDULERS if HAS_TORCHSDE or name != "DPMSolverSDEScheduler"]


@pytest.mark.parametrize("name", BUILDABLE)
def test_a_diffusers_scheduler_by_class_name_has_the_trained_noise_levels(name):
    ours = DDPMFromScratchScheduler(num_train_timesteps=200, beta_schedule="squaredcos_cap_v2")
    scheduler = scheduler_for(name, ours.config)
    assert type(scheduler) is getattr(diffusers, name)
    np.testing.assert_allclose(scheduler.alphas_cumprod.double().numpy(), ours.alphas_cumprod.double().numpy(),
                               rtol=1e-6)


def test_every_listed_class_is_one_diffusers_declares_compatible_with_a_ddpm_config():
    assert set(DIFFUSERS_SCHEDULERS) <= set(diffusers.DDPMScheduler._compatibles)


def test_class_names_match_without_regard_to_case():
    assert sampler_name("eulerdiscretescheduler") == "EulerDiscreteScheduler"
    assert sampler_name("ddim") == "ddim"


def test_an_unknown_sampler_is_refused_with_the_list_of_names():
    with pytest.raises(ValueError) as error:
        sampler_name("EulerScheduler")
    assert "EulerScheduler" in str(error.value)
    assert all(name in str(error.value) for name in SAMPLER_NAMES)


@pytest.mark.skipif(HAS_TORCHSDE, reason="only meaningful where torchsde is missing")
def test_a_scheduler_whose_package_is_missing_says_which_package():
    with pytest.raises(ImportError, match="torchsde"):
        scheduler_for("DPMSolverSDEScheduler", DDPMFromScratchScheduler().config)


@pytest.mark.parametrize("name, steps", [("ddpm", 1000), ("DDPMScheduler", 1000), ("dpm-solver", 25),
                                         ("UniPCMultistepScheduler", 25), ("EulerDiscreteScheduler", 50),
                                         ("ddim", 50)])
def test_each_sampler_has_its_usual_step_count(name, steps):
    assert default_num_inference_steps(name) == steps


def test_the_sample_script_help_lists_the_diffusers_class_names(capsys):
    with pytest.raises(SystemExit) as exit_:
        load_script("sample").parse_args(["--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert all(name in text for name in DIFFUSERS_SCHEDULERS)


@pytest.mark.parametrize("script", ["sample", "evaluate"])
def test_the_scripts_refuse_an_unknown_scheduler_with_the_list(capsys, script):
    with pytest.raises(SystemExit) as exit_:
        load_script(script).parse_args(["some-pipeline", "--scheduler", "Euler"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "unknown sampler 'Euler'" in err and "EulerDiscreteScheduler" in err


@pytest.mark.parametrize("name", BUILDABLE)
def test_the_pipeline_draws_finite_images_with_any_listed_scheduler(name, tiny_pipeline_dir):
    from ddpm_from_scratch import DDPMFromScratchPipeline
    from ddpm_from_scratch.sampling.samplers import generate

    pipe = DDPMFromScratchPipeline.from_pretrained(tiny_pipeline_dir)
    pipe.set_progress_bar_config(disable=True)
    images = generate(pipe, 2, name, 4, seed=0, batch_size=2)
    assert images.shape == (2, 1, 8, 8)
    assert torch.isfinite(images).all() and images.std() > 0


def test_the_sample_script_takes_a_class_name(tmp_path, tiny_pipeline_dir):
    images = load_script("sample").main([str(tiny_pipeline_dir), "--num_images", "2", "--scheduler",
                                         "UniPCMultistepScheduler", "--output", str(tmp_path / "grid.png")])
    assert len(images) == 2 and (tmp_path / "grid.png").is_file()


def test_sampling_by_class_name_is_sampling_with_that_scheduler(tiny_pipeline_dir):
    from ddpm_from_scratch import DDPMFromScratchPipeline
    from ddpm_from_scratch.sampling.samplers import generate

    pipe = DDPMFromScratchPipeline.from_pretrained(tiny_pipeline_dir)
    by_name = generate(pipe, 2, "EulerDiscreteScheduler", 5, seed=7, batch_size=2)
    pipe.scheduler = diffusers.EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    direct = pipe(batch_size=2, generator=[torch.Generator().manual_seed(7 + i) for i in range(2)],
                  num_inference_steps=5, output_type="pt").images
    torch.testing.assert_close(by_name, direct)
