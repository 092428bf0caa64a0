"""Bring your diffusers model: a DDPMPipeline saved by diffusers itself, its bound, and its exact conversion."""

import json

import numpy as np
import pytest
import torch
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
from script_modules import load_script

from ddpm_from_scratch import DDPMFromScratchPipeline, DDPMFromScratchScheduler, DDPMFromScratchUNet
from ddpm_from_scratch.evaluation.digit_classifier import load_digits_tensors

# UNet2DModel's own defaults (cosines first, freq_shift 0, symmetric padding, 8-wide heads) at digit size.
DIGITS_UNET2D = dict(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(16, 32),
                     down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
                     layers_per_block=1, norm_num_groups=8)


@pytest.fixture(scope="module")
def diffusers_folder(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("diffusers") / "ddpm"
    DDPMPipeline(unet=UNet2DModel(**DIGITS_UNET2D), scheduler=DDPMScheduler(num_train_timesteps=40)).save_pretrained(
        folder)
    return folder


def diffusers_samples(folder, seed=0, n=3):
    pipe = DDPMPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    return pipe(batch_size=n, generator=torch.Generator().manual_seed(seed), num_inference_steps=40,
                output_type="np").images


def test_from_diffusers_draws_the_same_samples_for_a_seed(diffusers_folder):
    ours = DDPMFromScratchPipeline.from_diffusers(DDPMPipeline.from_pretrained(diffusers_folder))
    assert type(ours.unet) is DDPMFromScratchUNet and type(ours.scheduler) is DDPMFromScratchScheduler
    ours.set_progress_bar_config(disable=True)
    got = ours(batch_size=3, generator=torch.Generator().manual_seed(0), num_inference_steps=40,
               output_type="np").images
    np.testing.assert_allclose(got, diffusers_samples(diffusers_folder), atol=1e-5)


def test_the_bound_through_the_diffusers_folder_equals_the_converted_pipelines(diffusers_folder, tmp_path):
    images = load_digits_tensors("test")[0][:4]
    loaded = DDPMFromScratchPipeline.from_pretrained(diffusers_folder)  # UNet2DModel + DDPMScheduler as they are
    assert type(loaded.scheduler) is DDPMScheduler
    direct = loaded.variational_bound(images, generator=torch.Generator().manual_seed(1), progress=False)
    load_script("convert_from_diffusers").main([str(diffusers_folder), str(tmp_path / "converted")])
    converted = DDPMFromScratchPipeline.from_pretrained(tmp_path / "converted")
    via = converted.variational_bound(images, generator=torch.Generator().manual_seed(1), progress=False)
    # Two networks with the same weights, float32 sums in different orders: equal to a relative 1e-6.
    torch.testing.assert_close(via.bits_per_dim, direct.bits_per_dim, rtol=1e-6, atol=0)


def test_the_convert_script_writes_a_pipeline_with_a_card_naming_the_source(diffusers_folder, tmp_path):
    dst = load_script("convert_from_diffusers").main([str(diffusers_folder), str(tmp_path / "out")])
    index = json.loads((dst / "model_index.json").read_text())
    assert index["_class_name"] == ["pipeline", "DDPMFromScratchPipeline"]  # self-contained: pipeline.py ships
    assert str(diffusers_folder) in (dst / "README.md").read_text()
    assert not list(dst.rglob("*.bin"))
    ours = DDPMFromScratchPipeline.from_pretrained(dst)
    ours.set_progress_bar_config(disable=True)
    got = ours(batch_size=3, generator=torch.Generator().manual_seed(0), num_inference_steps=40,
               output_type="np").images
    np.testing.assert_allclose(got, diffusers_samples(diffusers_folder), atol=1e-5)


def test_evaluate_reports_the_bound_of_a_diffusers_folder(diffusers_folder, tmp_path):
    results = load_script("evaluate").main([str(diffusers_folder), "--num_bound_images", "3", "--num_samples", "4",
                                            "--num_inference_steps", "4", "--scheduler", "ddim", "--quiet",
                                            "--output_json", str(tmp_path / "e.json")])
    assert results["bound"]["num_images"] == 3 and np.isfinite(results["bound"]["bits_per_dim"])


@pytest.mark.parametrize("argv, message", [
    (["{tmp}/nothing", "{tmp}/out"], "SRC"),
    (["{tiny}", "{tmp}/out"], "holds a DDPMFromScratchPipeline, not a DDPMPipeline"),
])
def test_the_convert_script_refuses_bad_sources_in_one_line(capsys, tmp_path, tiny_pipeline_dir, argv, message):
    argv = [a.format(tmp=tmp_path, tiny=tiny_pipeline_dir) for a in argv]
    with pytest.raises(SystemExit) as exit_:
        load_script("convert_from_diffusers").main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_a_unet2d_option_the_network_cannot_express_is_named(tmp_path, capsys):
    folder = tmp_path / "scale-shift"
    DDPMPipeline(unet=UNet2DModel(**DIGITS_UNET2D, resnet_time_scale_shift="scale_shift"),
                 scheduler=DDPMScheduler(num_train_timesteps=10)).save_pretrained(folder)
    with pytest.raises(SystemExit):
        load_script("convert_from_diffusers").main([str(folder), str(tmp_path / "out")])
    assert "resnet_time_scale_shift" in capsys.readouterr().err


def test_analytic_variance_script_takes_a_diffusers_ddpm_pipeline(diffusers_folder, tmp_path):
    from ddpm_from_scratch import AnalyticDPMScheduler

    load_script("analytic_variance").main([str(diffusers_folder), "--output_dir", str(tmp_path / "analytic"),
                                           "--num_images", "3", "--quiet"])
    loaded = DDPMFromScratchPipeline.from_pretrained(tmp_path / "analytic")
    assert isinstance(loaded.scheduler, AnalyticDPMScheduler)
    assert torch.equal(loaded.scheduler.alphas_cumprod, DDPMScheduler(num_train_timesteps=40).alphas_cumprod)
    loaded.set_progress_bar_config(disable=True)
    images = loaded(batch_size=2, num_inference_steps=10, output_type="np").images
    assert np.isfinite(images).all()
