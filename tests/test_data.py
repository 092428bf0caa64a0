"""Specification of ddpm_from_scratch.data.images: loading, validating and transforming images.

Expected values come from independent sources: scikit-learn's raw digits arrays,
closed-form pixel mappings, and images written by the tests themselves.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

from ddpm_from_scratch.data import images as data

# round(v * 255 / 16) for v = 0..16, with Python's round (v = 8 -> 127.5 -> 128).
DIGIT_LUT = np.array([round(v * 255 / 16) for v in range(17)], dtype=np.uint8)


@pytest.fixture(scope="module")
def sklearn_digits():
    bunch = load_digits()
    return bunch.images.astype(np.int64), bunch.target


@pytest.fixture(scope="module")
def digits_train():
    return data.load_digits_dataset("train")


@pytest.fixture(scope="module")
def digits_test():
    return data.load_digits_dataset("test")


def _pixels(ds: datasets.Dataset) -> np.ndarray:
    return np.stack([np.asarray(img) for img in ds["image"]])


def _sklearn_index_by_content(sklearn_digits) -> dict:
    images, _ = sklearn_digits
    return {DIGIT_LUT[img].tobytes(): i for i, img in enumerate(images)}


def _write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


# --------------------------------------------------------------------------
# Embedded digits
# --------------------------------------------------------------------------


def test_digits_splits_have_1497_train_and_300_test_images(digits_train, digits_test):
    assert len(digits_train) == 1497
    assert len(digits_test) == 300


def test_digits_columns_are_image_feature_and_label(digits_train):
    assert isinstance(digits_train.features["image"], datasets.Image)
    assert isinstance(digits_train.features["label"], datasets.ClassLabel)
    assert digits_train.features["label"].names == [str(d) for d in range(10)]


def test_digits_images_are_8x8_mode_L(digits_train):
    img = digits_train[0]["image"]
    assert img.mode == "L"
    assert img.size == (8, 8)


def test_digits_pixels_are_sklearn_values_mapped_by_round_v_255_over_16(
    digits_train, digits_test, sklearn_digits
):
    lookup = _sklearn_index_by_content(sklearn_digits)
    _, labels = sklearn_digits
    for ds in (digits_train, digits_test):
        for pixels, label in zip(_pixels(ds), ds["label"]):
            index = lookup[pixels.tobytes()]  # KeyError: not an exactly mapped sklearn image
            assert labels[index] == label


def test_digits_train_and_test_together_hold_every_sklearn_image_once(
    digits_train, digits_test, sklearn_digits
):
    lookup = _sklearn_index_by_content(sklearn_digits)
    found = [lookup[p.tobytes()] for ds in (digits_train, digits_test) for p in _pixels(ds)]
    assert sorted(found) == list(range(1797))


def test_digits_train_and_test_share_no_image(digits_train, digits_test):
    train = {p.tobytes() for p in _pixels(digits_train)}
    test = {p.tobytes() for p in _pixels(digits_test)}
    assert train.isdisjoint(test)


def test_digits_split_indices_are_disjoint_and_cover_all(sklearn_digits):
    split = data.digits_split_indices()
    train, test = set(split["train"].tolist()), set(split["test"].tolist())
    assert train.isdisjoint(test)
    assert train | test == set(range(len(sklearn_digits[1])))


def test_digits_rows_are_the_sklearn_images_at_the_split_indices(digits_test, sklearn_digits):
    images, _ = sklearn_digits
    expected = DIGIT_LUT[images[data.digits_split_indices()["test"]]]
    np.testing.assert_array_equal(_pixels(digits_test), expected)


def test_digits_split_is_the_same_on_every_call(digits_test):
    again = data.load_digits_dataset("test")
    np.testing.assert_array_equal(_pixels(again), _pixels(digits_test))
    assert again["label"] == digits_test["label"]


def test_digits_test_split_is_stratified_by_label(digits_test, sklearn_digits):
    _, labels = sklearn_digits
    overall = Counter(labels.tolist())
    held_out = Counter(digits_test["label"])
    for digit, count in overall.items():
        assert abs(held_out[digit] - 300 * count / len(labels)) <= 1


def test_unknown_digits_split_raises_value_error_naming_it():
    with pytest.raises(ValueError, match="validation"):
        data.load_digits_dataset("validation")


# --------------------------------------------------------------------------
# load_image_dataset: sources
# --------------------------------------------------------------------------


def test_no_source_gives_the_digits_train_split(digits_train):
    ds = data.load_image_dataset()
    np.testing.assert_array_equal(_pixels(ds), _pixels(digits_train))


def test_no_source_with_split_test_gives_the_digits_test_split(digits_test):
    ds = data.load_image_dataset(split="test")
    np.testing.assert_array_equal(_pixels(ds), _pixels(digits_test))


def test_both_sources_raise_value_error(tmp_path):
    with pytest.raises(ValueError, match="not both"):
        data.load_image_dataset(dataset_name="some/dataset", train_data_dir=tmp_path)


def test_train_data_dir_loads_every_image_in_the_folder(tmp_path):
    folder = tmp_path / "images"
    arrays = [np.full((4, 6), value, dtype=np.uint8) for value in (10, 100, 200)]
    for i, array in enumerate(arrays):
        _write_png(folder / f"img{i}.png", array)
    (folder / "notes.txt").write_text("not an image")

    ds = data.load_image_dataset(train_data_dir=folder, cache_dir=tmp_path / "cache")

    loaded = sorted((np.asarray(img) for img in ds["image"]), key=lambda a: int(a[0, 0]))
    assert len(loaded) == 3
    for got, want in zip(loaded, arrays):
        np.testing.assert_array_equal(got, want)


def test_missing_train_data_dir_raises_file_not_found_naming_it(tmp_path):
    missing = tmp_path / "no_such_folder"
    with pytest.raises(FileNotFoundError, match="no_such_folder"):
        data.load_image_dataset(train_data_dir=missing)


def test_train_data_dir_without_images_raises_value_error_naming_it(tmp_path):
    folder = tmp_path / "empty_folder"
    folder.mkdir()
    (folder / "readme.txt").write_text("no images here")
    with pytest.raises(ValueError, match="empty_folder"):
        data.load_image_dataset(train_data_dir=folder)


def test_corrupt_image_file_fails_before_loading_naming_the_file(tmp_path):
    folder = tmp_path / "images"
    _write_png(folder / "good.png", np.zeros((4, 4), dtype=np.uint8))
    (folder / "broken.png").write_bytes(b"this is not a png at all" * 10)
    with pytest.raises(ValueError, match="broken.png") as info:
        data.load_image_dataset(train_data_dir=folder, cache_dir=tmp_path / "cache")
    assert "good.png" not in str(info.value)


def test_truncated_png_fails_naming_the_file(tmp_path):
    folder = tmp_path / "images"
    _write_png(folder / "whole.png", np.arange(256, dtype=np.uint8).reshape(16, 16))
    raw = (folder / "whole.png").read_bytes()
    (folder / "cut.png").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="cut.png"):
        data.check_image_folder(folder)


def test_every_corrupt_file_is_named_in_one_error(tmp_path):
    folder = tmp_path / "images"
    for name in ("a.png", "sub/b.jpg"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"\x00garbage\xff" * 8)
    with pytest.raises(ValueError) as info:
        data.check_image_folder(folder)
    assert "a.png" in str(info.value) and "b.jpg" in str(info.value)


def test_hidden_files_are_neither_loaded_nor_verified(tmp_path):
    folder = tmp_path / "images"
    _write_png(folder / "visible.png", np.zeros((4, 4), dtype=np.uint8))
    (folder / ".hidden.png").write_bytes(b"garbage")
    (folder / ".cache" / "x.png").parent.mkdir()
    (folder / ".cache" / "x.png").write_bytes(b"garbage")
    ds = data.load_image_dataset(train_data_dir=folder, cache_dir=tmp_path / "cache")
    assert len(ds) == 1


def test_find_image_files_matches_extensions_in_any_case(tmp_path):
    for name in ("a.png", "b.JPG", "c.txt", "d/e.webp"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    found = {p.relative_to(tmp_path).as_posix() for p in data.find_image_files(tmp_path)}
    assert found == {"a.png", "b.JPG", "d/e.webp"}


def test_dataset_name_of_a_saved_dataset_loads_it_from_disk(tmp_path):
    arrays = [np.full((5, 5), v, dtype=np.uint8) for v in (3, 30, 255)]
    saved = datasets.Dataset.from_dict(
        {"image": [Image.fromarray(a) for a in arrays]},
        features=datasets.Features({"image": datasets.Image()}),
    )
    saved.save_to_disk(str(tmp_path / "saved"))

    ds = data.load_image_dataset(dataset_name=str(tmp_path / "saved"))

    np.testing.assert_array_equal(_pixels(ds), np.stack(arrays))


def test_dataset_name_of_a_saved_dataset_dict_picks_the_split(tmp_path):
    def one(value):
        return datasets.Dataset.from_dict(
            {"image": [Image.fromarray(np.full((2, 2), value, dtype=np.uint8))]},
            features=datasets.Features({"image": datasets.Image()}),
        )

    datasets.DatasetDict({"train": one(1), "test": one(2)}).save_to_disk(str(tmp_path / "dd"))

    ds = data.load_image_dataset(dataset_name=str(tmp_path / "dd"), split="test")

    assert int(np.asarray(ds[0]["image"])[0, 0]) == 2


def test_missing_split_of_a_saved_dataset_dict_lists_the_available_ones(tmp_path):
    one = datasets.Dataset.from_dict(
        {"image": [Image.fromarray(np.zeros((2, 2), dtype=np.uint8))]},
        features=datasets.Features({"image": datasets.Image()}),
    )
    datasets.DatasetDict({"train": one}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(ValueError, match="'holdout'.*'train'"):
        data.load_image_dataset(dataset_name=str(tmp_path / "dd"), split="holdout")


def test_missing_image_column_raises_listing_the_available_columns(tmp_path):
    saved = datasets.Dataset.from_dict(
        {"picture": [Image.fromarray(np.zeros((2, 2), dtype=np.uint8))], "caption": ["x"]},
        features=datasets.Features({"picture": datasets.Image(), "caption": datasets.Value("string")}),
    )
    saved.save_to_disk(str(tmp_path / "saved"))
    with pytest.raises(ValueError, match="'image'.*'picture'.*'caption'"):
        data.load_image_dataset(dataset_name=str(tmp_path / "saved"))


def test_other_image_column_name_is_accepted(tmp_path):
    saved = datasets.Dataset.from_dict(
        {"picture": [Image.fromarray(np.zeros((2, 2), dtype=np.uint8))]},
        features=datasets.Features({"picture": datasets.Image()}),
    )
    saved.save_to_disk(str(tmp_path / "saved"))
    ds = data.load_image_dataset(dataset_name=str(tmp_path / "saved"), image_column="picture")
    assert ds.column_names == ["picture"]


def test_dataset_name_of_a_hub_id_goes_to_load_dataset_with_split_and_cache_dir(
    monkeypatch, tmp_path
):
    calls = []
    stand_in = datasets.Dataset.from_dict(
        {"image": [Image.fromarray(np.zeros((2, 2), dtype=np.uint8))]},
        features=datasets.Features({"image": datasets.Image()}),
    )

    def fake_load_dataset(path, **kwargs):
        calls.append((path, kwargs))
        return stand_in

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    ds = data.load_image_dataset(
        dataset_name="someone/butterflies", cache_dir=tmp_path / "c", split="test"
    )
    assert ds is stand_in
    assert calls == [("someone/butterflies", {"cache_dir": str(tmp_path / "c"), "split": "test"})]


# --------------------------------------------------------------------------
# check_resolution
# --------------------------------------------------------------------------


@pytest.mark.parametrize("resolution, num_downsamples", [(8, 3), (32, 3), (64, 4), (7, 0)])
def test_resolution_divisible_by_two_to_the_downsamples_is_accepted(resolution, num_downsamples):
    data.check_resolution(resolution, num_downsamples)


def test_resolution_not_a_multiple_raises_naming_it_and_the_multiple():
    with pytest.raises(ValueError, match=r"resolution 12\b.*multiple of 8"):
        data.check_resolution(12, 3)


@pytest.mark.parametrize("resolution", [0, -8])
def test_non_positive_resolution_raises(resolution):
    with pytest.raises(ValueError, match=f"resolution {resolution}"):
        data.check_resolution(resolution, 3)


# --------------------------------------------------------------------------
# Transforms
# --------------------------------------------------------------------------


def test_pixel_value_x_maps_to_x_over_127_5_minus_1():
    ramp = np.arange(256, dtype=np.uint8).reshape(16, 16)
    out = data.build_transform(16, 1)(Image.fromarray(ramp))
    expected = ramp.astype(np.float64) / 127.5 - 1.0
    np.testing.assert_allclose(out[0].numpy(), expected, rtol=0, atol=1e-7)
    assert out.min().item() == -1.0 and out.max().item() == 1.0


def test_output_is_float32_channels_first():
    img = Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8))
    assert data.build_transform(8, 3)(img).shape == (3, 8, 8)
    assert data.build_transform(8, 1)(img).shape == (1, 8, 8)
    assert data.build_transform(8, 3)(img).dtype == torch.float32


def test_digits_at_native_size_pass_through_exactly(digits_test, sklearn_digits):
    images, _ = sklearn_digits
    transform = data.build_transform(8, 1, center_crop=True)
    out = torch.stack([transform(img) for img in digits_test["image"]])
    expected = DIGIT_LUT[images[data.digits_split_indices()["test"]]].astype(np.float32)
    expected = expected / np.float32(127.5) - np.float32(1.0)
    np.testing.assert_array_equal(out[:, 0].numpy(), expected)


def test_rgb_to_one_channel_uses_luma():
    rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [40, 80, 120]]], dtype=np.uint8)
    luma = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    got = data.build_transform(4, 1)(Image.fromarray(np.repeat(rgb, 4, axis=0)))
    np.testing.assert_allclose((got[0, 0].numpy() + 1) * 127.5, luma[0], atol=1.0)


def test_gray_to_three_channels_repeats_the_gray_value():
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    out = data.build_transform(8, 3)(Image.fromarray(gray))
    for c in range(3):
        np.testing.assert_array_equal(out[c], out[0])
    np.testing.assert_allclose((out[0].numpy() + 1) * 127.5, gray, atol=1e-4)


def test_transparent_pixels_become_white_and_opaque_ones_keep_their_colour():
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[0, 0] = (10, 20, 30, 255)  # opaque
    rgba[1, 1] = (10, 20, 30, 0)  # fully transparent, colour must not leak
    out = data.build_transform(2, 3)(Image.fromarray(rgba, "RGBA"))
    np.testing.assert_allclose((out[:, 0, 0].numpy() + 1) * 127.5, [10, 20, 30], atol=1e-4)
    assert torch.all(out[:, 1, 1] == 1.0)


def test_palette_image_is_converted_to_its_colours():
    pal = Image.new("P", (2, 2))
    pal.putpalette([0, 0, 0, 200, 100, 50] + [0] * (256 * 3 - 6))
    pal.putpixel((0, 0), 1)
    out = data.build_transform(2, 3)(pal)
    np.testing.assert_allclose((out[:, 0, 0].numpy() + 1) * 127.5, [200, 100, 50], atol=1e-4)
    np.testing.assert_allclose((out[:, 1, 1].numpy() + 1) * 127.5, [0, 0, 0], atol=1e-4)


def test_16_bit_grayscale_is_scaled_to_8_bit_not_clipped():
    values = np.array([[0, 128 * 257, 65535, 1000]], dtype=np.uint16)
    got = data.build_transform(4, 1)(Image.fromarray(np.repeat(values, 4, axis=0)))
    expected = np.rint(values[0].astype(np.float64) * 255 / 65535)
    np.testing.assert_allclose((got[0, 0].numpy() + 1) * 127.5, expected, atol=1e-4)


def test_without_center_crop_any_shape_is_resized_to_the_square():
    img = Image.fromarray(np.full((10, 30, 3), 77, dtype=np.uint8))
    out = data.build_transform(8, 3)(img)
    assert out.shape == (3, 8, 8)
    np.testing.assert_allclose((out.numpy() + 1) * 127.5, 77, atol=1e-4)


def test_center_crop_cuts_the_central_square_when_the_short_side_fits():
    tall = np.repeat(np.arange(12, dtype=np.uint8)[:, None] * 20, 8, axis=1)  # 12 rows x 8 cols
    out = data.build_transform(8, 1, center_crop=True)(Image.fromarray(tall))
    np.testing.assert_allclose((out[0].numpy() + 1) * 127.5, tall[2:10], atol=1e-4)


def test_center_crop_scales_the_short_side_to_the_resolution():
    wide = Image.fromarray(np.full((16, 40), 123, dtype=np.uint8))
    out = data.build_transform(8, 1, center_crop=True)(wide)
    assert out.shape == (1, 8, 8)
    np.testing.assert_allclose((out.numpy() + 1) * 127.5, 123, atol=1e-4)


def test_small_images_are_upscaled():
    assert data.build_transform(32, 1)(Image.new("L", (8, 8))).shape == (1, 32, 32)


def test_no_flip_without_random_flip():
    ramp = Image.fromarray(np.arange(16, dtype=np.uint8).reshape(4, 4) * 10)
    transform = data.build_transform(4, 1, random_flip=False, generator=torch.Generator().manual_seed(0))
    reference = data.build_transform(4, 1)(ramp)
    for _ in range(8):
        assert torch.equal(transform(ramp), reference)


def test_random_flip_follows_the_seeded_generator():
    ramp = Image.fromarray(np.arange(16, dtype=np.uint8).reshape(4, 4) * 10)
    plain = data.build_transform(4, 1)(ramp)
    mirrored = torch.flip(plain, dims=[-1])
    transform = data.build_transform(4, 1, random_flip=True, generator=torch.Generator().manual_seed(7))
    draws = torch.Generator().manual_seed(7)
    seen = set()
    for _ in range(32):
        flip = torch.rand(1, generator=draws).item() < 0.5
        assert torch.equal(transform(ramp), mirrored if flip else plain)
        seen.add(flip)
    assert seen == {True, False}


def test_random_flip_with_equal_seeds_gives_equal_outputs():
    img = Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8))

    def run(seed):
        t = data.build_transform(8, 1, random_flip=True, generator=torch.Generator().manual_seed(seed))
        return torch.stack([t(img) for _ in range(16)])

    assert torch.equal(run(3), run(3))


@pytest.mark.parametrize("channels", [0, 2, 4])
def test_unsupported_channel_count_raises(channels):
    with pytest.raises(ValueError, match="channels"):
        data.build_transform(8, channels)


def test_non_image_input_raises_type_error():
    with pytest.raises(TypeError):
        data.build_transform(8, 1)(np.zeros((8, 8)))


# --------------------------------------------------------------------------
# Batch preprocessing
# --------------------------------------------------------------------------


def test_make_preprocess_stacks_the_batch_under_input():
    imgs = [Image.fromarray(np.full((4, 4), v, dtype=np.uint8)) for v in (0, 255)]
    out = data.make_preprocess(data.build_transform(4, 1))({"image": imgs, "label": [0, 1]})
    assert set(out) == {"input"}
    assert out["input"].shape == (2, 1, 4, 4)
    assert torch.all(out["input"][0] == -1.0) and torch.all(out["input"][1] == 1.0)


def test_transformed_dataset_rows_and_slices_are_model_inputs(digits_test, sklearn_digits):
    images, _ = sklearn_digits
    ds = data.with_image_transform(digits_test, data.build_transform(8, 1))
    expected = DIGIT_LUT[images[data.digits_split_indices()["test"][:4]]].astype(np.float32)
    expected = expected / np.float32(127.5) - np.float32(1.0)
    assert ds[0]["input"].shape == (1, 8, 8)
    np.testing.assert_array_equal(ds[0:4]["input"][:, 0].numpy(), expected)


def test_transformed_dataset_works_with_a_dataloader(digits_test):
    ds = data.with_image_transform(digits_test, data.build_transform(8, 1))
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=5, shuffle=False)))
    assert batch["input"].shape == (5, 1, 8, 8)


def test_with_image_transform_on_a_missing_column_lists_the_columns(digits_test):
    with pytest.raises(ValueError, match="'img'.*'image'.*'label'"):
        data.with_image_transform(digits_test, data.build_transform(8, 1), image_column="img")


def test_images_of_mixed_modes_in_a_folder_all_become_rgb_tensors(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    Image.new("L", (12, 9), 50).save(folder / "gray.png")
    Image.new("RGBA", (9, 12), (1, 2, 3, 128)).save(folder / "rgba.png")
    Image.new("RGB", (16, 16), (9, 8, 7)).save(folder / "rgb.jpg")
    ds = data.load_image_dataset(train_data_dir=folder, cache_dir=tmp_path / "cache")
    ds = data.with_image_transform(ds, data.build_transform(8, 3, center_crop=True))
    assert ds[0:3]["input"].shape == (3, 3, 8, 8)


def test_dataset_name_of_a_plain_image_folder_loads_its_images(tmp_path):
    folder = tmp_path / "plain"
    _write_png(folder / "a.png", np.full((3, 3), 42, dtype=np.uint8))
    ds = data.load_image_dataset(dataset_name=str(folder), cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(_pixels(ds), np.full((1, 3, 3), 42, dtype=np.uint8))


def test_dataset_name_of_a_plain_image_folder_with_a_corrupt_file_names_it(tmp_path):
    folder = tmp_path / "plain"
    _write_png(folder / "a.png", np.zeros((3, 3), dtype=np.uint8))
    (folder / "bad.jpg").write_bytes(b"garbage" * 5)
    with pytest.raises(ValueError, match="bad.jpg"):
        data.load_image_dataset(dataset_name=str(folder), cache_dir=tmp_path / "cache")
