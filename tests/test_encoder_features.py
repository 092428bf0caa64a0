"""FD and KID in a transformers image encoder's features (FD_DINOv2), on a tiny random DINOv2 built offline."""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from script_modules import load_script

from ddpm_from_scratch.evaluation.digit_classifier import load_digits_tensors
from ddpm_from_scratch.evaluation.encoder_features import (
    encoder_sample_quality,
    feature_distances,
    load_image_encoder,
    split_reference,
)


@pytest.fixture(scope="session")
def tiny_dinov2_dir(tmp_path_factory):
    """A randomly initialised DINOv2 and its image processor, saved as a from_pretrained folder."""
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    config = Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                          image_size=32, patch_size=8)
    processor = BitImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                                  image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
    folder = tmp_path_factory.mktemp("dinov2") / "tiny-dinov2"
    Dinov2Model(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def encoder(tiny_dinov2_dir):
    return load_image_encoder(str(tiny_dinov2_dir))


def digits_01(n: int) -> torch.Tensor:
    return (load_digits_tensors("test")[0][:n] + 1) / 2


def test_a_dinov2_feature_is_its_normalised_class_token(encoder):
    images = digits_01(5)
    pictures = [Image.fromarray((img[0] * 255).round().byte().numpy()).convert("RGB") for img in images]
    pixel_values = encoder.processor(images=pictures, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        tokens = encoder.model(pixel_values=pixel_values).last_hidden_state
    np.testing.assert_allclose(encoder.encode(images), tokens[:, 0].double().numpy(), rtol=1e-5, atol=1e-6)


def test_a_grey_image_is_encoded_as_the_same_grey_in_three_channels(encoder):
    grey = digits_01(3)
    np.testing.assert_array_equal(encoder.encode(grey), encoder.encode(grey.expand(-1, 3, -1, -1)))


def test_features_do_not_depend_on_the_batch_size(encoder):
    images = digits_01(7)
    np.testing.assert_allclose(encoder.encode(images, batch_size=7), encoder.encode(images, batch_size=2),
                               rtol=1e-5, atol=1e-6)


def test_samples_equal_to_the_reference_half_are_at_distance_zero(encoder):
    reference = digits_01(40)
    _, compared = split_reference(reference, seed=3)
    quality = encoder_sample_quality(compared, reference, encoder, seed=3)
    assert quality["fd"] == pytest.approx(0.0, abs=1e-6)
    assert quality["num_images"] == quality["num_reference"] == 20


def test_the_reference_rows_are_the_other_real_half_and_noise_against_the_same_half(encoder):
    reference = digits_01(40)
    samples = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    quality = encoder_sample_quality(samples, reference, encoder, seed=0)
    floor, ceiling = quality["reference_rows"]
    assert (floor["kind"], ceiling["kind"]) == ("floor", "ceiling")
    # The floor takes as many real images as there are samples; every row is measured against the other 20.
    assert floor["num_images"] == ceiling["num_images"] == 8
    assert floor["num_reference"] == ceiling["num_reference"] == quality["num_reference"] == 20
    held, compared = split_reference(reference, seed=0)
    want = feature_distances(encoder.encode(held[:8]), encoder.encode(compared), seed=0)
    assert floor["fd"] == pytest.approx(want["fd"], rel=1e-9)


def test_the_reference_halves_are_disjoint_and_cover_the_images():
    images = torch.arange(11.0)[:, None, None, None]
    a, b = split_reference(images, seed=1)
    assert sorted(torch.cat([a, b]).flatten().tolist()) == list(range(11))
    assert len(a) == 5 and len(b) == 6


def test_a_feature_model_that_cannot_be_loaded_is_named(tmp_path):
    with pytest.raises(ValueError, match="feature model .*not-a-model.* could not be loaded"):
        load_image_encoder(str(tmp_path / "not-a-model"))


@pytest.fixture
def image_folder(tmp_path):
    folder = tmp_path / "my_images"
    folder.mkdir()
    for i, image in enumerate(load_digits_tensors("train")[0][:16]):
        Image.fromarray(((image[0] + 1) * 127.5).round().byte().numpy(), mode="L").save(folder / f"{i:03d}.png")
    return folder


def test_evaluate_writes_fd_and_kid_in_the_feature_models_features_to_the_json_and_card(
        tmp_path, tiny_pipeline_dir, tiny_dinov2_dir, image_folder):
    pipeline = tmp_path / "pipe"
    shutil.copytree(tiny_pipeline_dir, pipeline)
    results = load_script("evaluate").main([
        str(pipeline), "--data_dir", str(image_folder), "--feature_model", str(tiny_dinov2_dir),
        "--num_samples", "6", "--num_inference_steps", "3", "--scheduler", "ddim", "--update_model_card", "--quiet",
        "--output_json", str(tmp_path / "eval.json")])
    saved = json.loads((tmp_path / "eval.json").read_text())
    entry = saved["feature_model"]
    assert entry["model"] == str(tiny_dinov2_dir)
    assert entry["num_images"] == 6 and entry["num_reference"] == 8  # 16 images: 8 compared, 8 for the floor
    assert np.isfinite([entry["fd"], entry["kid_mean"], entry["kid_std"]]).all()
    assert [row["kind"] for row in entry["reference_rows"]] == ["floor", "ceiling"]
    assert "note" not in saved and results["feature_model"]["fd"] == entry["fd"]
    # The samples judged are shown with the package's one grid: readable width, 6 tiles.
    grid = Image.open(tmp_path / "eval_samples.png")
    assert grid.width >= 512 and saved["samples_grid"] == str(tmp_path / "eval_samples.png")
    card = (pipeline / "README.md").read_text()
    assert f"FD ({tiny_dinov2_dir} features)" in card and f"{entry['fd']:.3f}" in card


def test_evaluate_refuses_a_feature_model_it_cannot_load_in_one_line(tmp_path, tiny_pipeline_dir, capsys):
    with pytest.raises(SystemExit) as exit_:
        load_script("evaluate").main([str(tiny_pipeline_dir), "--feature_model", str(tmp_path / "nothing")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--feature_model" in err and "could not be loaded" in err
