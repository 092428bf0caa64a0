"""scripts/sample.py: grids and single images from a saved pipeline, with any of its schedulers."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from script_modules import load_script

from ddpm_from_scratch import DDPMFromScratchPipeline, DDPMFromScratchScheduler, DDPMFromScratchUNet


@pytest.fixture
def pipeline_dir(tiny_pipeline_dir) -> Path:
    return tiny_pipeline_dir


@pytest.mark.parametrize("scheduler", ["ddpm", "ddim", "dpm-solver"])
def test_writes_a_grid_of_the_requested_number_of_images(tmp_path, pipeline_dir, scheduler):
    images = load_script("sample").main([str(pipeline_dir), "--num_images", "6", "--scheduler", scheduler,
                                         "--num_inference_steps", "4", "--output", str(tmp_path / "grid.png")])
    grid = np.asarray(Image.open(tmp_path / "grid.png"))
    # 3 columns of 8 px enlarged ×22 (the first whole factor reaching 512 px with two 2-px gaps), 2 rows.
    assert grid.shape == (2 * 176 + 2, 3 * 176 + 4)
    np.testing.assert_array_equal(grid[178::22, 356::22],
                                  np.asarray(images[5]))


def test_the_grid_scale_can_be_chosen(tmp_path, pipeline_dir):
    load_script("sample").main([str(pipeline_dir), "--num_images", "4", "--num_inference_steps", "2",
                                "--grid_scale", "1", "--output", str(tmp_path / "grid.png")])
    assert Image.open(tmp_path / "grid.png").size == (2 * 8 + 2, 2 * 8 + 2)


def test_saves_individual_images_at_native_size_when_asked(tmp_path, pipeline_dir):
    load_script("sample").main([str(pipeline_dir), "--num_images", "3", "--num_inference_steps", "3",
                        "--output", str(tmp_path / "grid.png"), "--save_individual", str(tmp_path / "single")])
    assert sorted(p.name for p in (tmp_path / "single").iterdir()) == ["00000.png", "00001.png", "00002.png"]
    assert Image.open(tmp_path / "single" / "00000.png").size == (8, 8)


def test_each_image_depends_on_the_seed_not_on_the_batch_size(tmp_path, pipeline_dir):
    script = load_script("sample")
    common = [str(pipeline_dir), "--num_images", "4", "--num_inference_steps", "5", "--seed", "3",
              "--output", str(tmp_path / "grid.png")]
    whole = script.main(common + ["--batch_size", "4"])
    split = script.main(common + ["--batch_size", "3"])
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(whole, split))


def test_a_non_positive_image_count_is_refused(tmp_path, pipeline_dir):
    with pytest.raises(SystemExit):
        load_script("sample").main([str(pipeline_dir), "--num_images", "0"])


@pytest.mark.parametrize("fast_path", ["--channels_last", "--compile"])
def test_exact_fast_paths_give_the_same_images(tmp_path, pipeline_dir, fast_path):
    script = load_script("sample")
    common = [str(pipeline_dir), "--num_images", "2", "--num_inference_steps", "5", "--output", str(tmp_path / "g.png")]
    plain = script.main(common)
    fast = script.main(common + [fast_path])
    # PIL images are 8-bit: equal up to one level where a value sits on a rounding edge.
    assert all(np.abs(np.asarray(a, int) - np.asarray(b, int)).max() <= 1 for a, b in zip(plain, fast))


def test_bf16_mixed_precision_gives_images_within_a_few_levels(tmp_path, pipeline_dir):
    script = load_script("sample")
    common = [str(pipeline_dir), "--num_images", "4", "--num_inference_steps", "5", "--output", str(tmp_path / "g.png")]
    plain = np.stack([np.asarray(a, int) for a in script.main(common)])
    fast = np.stack([np.asarray(a, int) for a in script.main(common + ["--mixed_precision", "bf16"])])
    assert np.abs(plain - fast).max() <= 4
