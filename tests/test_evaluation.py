"""Evaluating a pipeline: the bound on held-out images, digit sample quality, and the model card."""

from pathlib import Path

import pytest
import torch
from PIL import Image
from script_modules import load_script

from ddpm_from_scratch import DDPMFromScratchPipeline, DDPMFromScratchScheduler, DDPMFromScratchUNet
from ddpm_from_scratch.evaluation.digit_classifier import load_digits_tensors
from ddpm_from_scratch.evaluation.evaluate import NO_QUALITY_METRIC, evaluate_pipeline, format_results
from ddpm_from_scratch.hub.model_card import EVALUATION_END, EVALUATION_START
from ddpm_from_scratch.hub.model_card import update_model_card
from ddpm_from_scratch.likelihood import variational_bound

FAST = dict(num_bound_images=4, num_samples=12, num_inference_steps=3, progress=False)


def tiny_pipeline(in_channels: int = 1) -> DDPMFromScratchPipeline:
    torch.manual_seed(0)
    unet = DDPMFromScratchUNet(sample_size=8, in_channels=in_channels, out_channels=in_channels, base_channels=8,
                               channel_multipliers=(1, 2), num_res_blocks=1, attention_levels=(1,), norm_num_groups=4)
    return DDPMFromScratchPipeline(unet=unet, scheduler=DDPMFromScratchScheduler(num_train_timesteps=20))


def test_the_bound_is_the_mean_over_the_first_held_out_digits():
    pipe = tiny_pipeline()
    results = evaluate_pipeline(pipe, **FAST)
    images = load_digits_tensors("test")[0][:4]
    direct = variational_bound(pipe.unet, pipe.scheduler, images, generator=torch.Generator().manual_seed(0),
                               progress=False)
    assert results["bound"]["num_images"] == 4
    assert results["bound"]["bits_per_dim"] == pytest.approx(direct.bits_per_dim.mean().item(), rel=1e-6)


def test_digit_models_get_classifier_fid_kid_and_a_class_histogram_never_called_fid():
    quality = evaluate_pipeline(tiny_pipeline(), **FAST)["sample_quality"]
    assert quality["num_images"] == 12 and sum(quality["class_histogram"]) == 12
    assert quality["classifier_fid"] > 0 and "fid" not in quality


def test_bf16_sampling_is_recorded_and_leaves_the_bound_in_float32():
    plain = evaluate_pipeline(tiny_pipeline(), **FAST)
    fast = evaluate_pipeline(tiny_pipeline(), **FAST, mixed_precision="bf16")
    assert fast["bound"] == plain["bound"]
    assert fast["sample_quality"]["mixed_precision"] == "bf16" and plain["sample_quality"]["mixed_precision"] == "no"
    assert fast["sample_quality"]["classifier_fid"] != plain["sample_quality"]["classifier_fid"]  # bf16 was on
    assert "bf16 autocast" in format_results(fast)


def test_compiled_sampling_gives_the_eager_sample_quality():
    plain = evaluate_pipeline(tiny_pipeline(), **FAST)
    fast = evaluate_pipeline(tiny_pipeline(), **FAST, compile_sampling=True)
    assert fast["bound"] == plain["bound"]
    assert fast["sample_quality"]["compiled"] is True
    # Samples equal to ~1e-5: the feature statistics, and the distance between them, barely move.
    assert fast["sample_quality"]["classifier_fid"] == pytest.approx(plain["sample_quality"]["classifier_fid"],
                                                                     rel=1e-3)


def test_reference_rows_come_with_the_same_number_of_images_floor_below_ceiling():
    rows = {row["name"]: row for row in evaluate_pipeline(tiny_pipeline(), **FAST)["reference_rows"]}
    assert rows["train digits"]["classifier_fid"] < rows["gaussian noise"]["classifier_fid"]
    assert rows["train digits"]["classifier_fid"] < rows["pixel-shuffled train digits"]["classifier_fid"]


def test_other_data_gets_the_bound_and_a_note_that_no_quality_metric_applies(tmp_path):
    for i in range(3):
        Image.new("RGB", (8, 8), (40 * i, 80, 120)).save(tmp_path / f"{i}.png")
    results = evaluate_pipeline(tiny_pipeline(in_channels=3), data_dir=str(tmp_path), **FAST)
    assert results["bound"]["num_images"] == 3
    assert results["sample_quality"] is None and results["note"] == NO_QUALITY_METRIC
    assert NO_QUALITY_METRIC in format_results(results)


def card_with_results(bits_per_dim: float) -> tuple[str, dict]:
    template = (Path(__file__).resolve().parents[1] / "model_card.md").read_text()
    results = {"dataset": "digits", "bound": {"bits_per_dim": bits_per_dim, "bits_per_dim_std_error": 0.1,
                                              "prior_bits_per_dim": 0.0, "decoder_bits_per_dim": 1.0,
                                              "num_images": 3},
               "sample_quality": None}
    return template, results


def test_model_card_gets_model_index_metrics_and_the_table():
    template, results = card_with_results(4.321)
    card = update_model_card(template, results, "THE TABLE", model_name="my-ddpm")
    metadata = card.split("---")[1]
    assert "model-index" in metadata and "bits_per_dim" in metadata and "4.321" in metadata
    assert f"{EVALUATION_START}\nTHE TABLE\n{EVALUATION_END}" in card
    assert "library_name: diffusers" in metadata


def test_evaluating_again_replaces_the_numbers_instead_of_appending():
    template, results = card_with_results(4.321)
    once = update_model_card(template, results, "OLD", model_name="m")
    _, newer = card_with_results(3.5)
    twice = update_model_card(once, newer, "NEW", model_name="m")
    assert "OLD" not in twice and twice.count(EVALUATION_START) == 1 and "4.321" not in twice


def test_the_script_refuses_to_update_the_card_of_a_pipeline_that_is_not_a_local_folder():
    with pytest.raises(SystemExit):
        load_script("evaluate").main(["user/some-hub-repo", "--update_model_card"])
