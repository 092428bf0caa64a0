"""The bound's reference rows: uniform over the used levels and the per-pixel histogram, in bits/dim."""

import math

import numpy as np
import pytest
import torch

from ddpm_from_scratch.evaluation.reference_bounds import (
    ESCAPE,
    pixel_histogram_bits_per_dim,
    reference_bounds,
    uniform_levels_bits_per_dim,
)


def from_levels(levels) -> torch.Tensor:
    return torch.as_tensor(levels, dtype=torch.float32) / 127.5 - 1


def test_uniform_over_used_levels_is_log2_of_their_number():
    train = from_levels(np.arange(17)[:, None, None, None] * 15)  # 17 levels 0, 15, …, 240
    bits = uniform_levels_bits_per_dim(train, from_levels(np.full((3, 1, 2, 2), 30)))
    expected = -math.log2((1 - ESCAPE) / 17 + ESCAPE / 256)
    torch.testing.assert_close(bits, torch.full((3,), expected, dtype=torch.float64))


def test_pixel_histogram_is_the_smoothed_count_of_each_pixel():
    rng = np.random.default_rng(0)
    train_levels = rng.choice([0, 128, 255], size=(50, 1, 2, 3))
    test_levels = rng.choice([0, 128, 255], size=(4, 1, 2, 3))
    expected = np.zeros(4)
    for b in range(4):
        for pixel in np.ndindex(1, 2, 3):
            n = np.sum(train_levels[(slice(None), *pixel)] == test_levels[(b, *pixel)])
            p = (n + 0.5) / (50 + 0.5 * 3)
            expected[b] -= math.log2((1 - ESCAPE) * p + ESCAPE / 256) / 6
    got = pixel_histogram_bits_per_dim(from_levels(train_levels), from_levels(test_levels))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12)


def test_a_level_no_training_image_uses_costs_finite_bits():
    train, test = from_levels(np.zeros((5, 1, 1, 1))), from_levels(np.full((1, 1, 1, 1), 77))
    for model in (uniform_levels_bits_per_dim, pixel_histogram_bits_per_dim):
        assert math.isfinite(model(train, test).item())


def test_histogram_refuses_images_of_another_shape():
    with pytest.raises(ValueError, match="training images' shape"):
        pixel_histogram_bits_per_dim(from_levels(np.zeros((2, 1, 2, 2))), from_levels(np.zeros((2, 1, 3, 3))))


def test_reference_bounds_of_the_digits():
    from ddpm_from_scratch.evaluation.digit_classifier import load_digits_tensors

    rows = reference_bounds(load_digits_tensors("train")[0], load_digits_tensors("test")[0])
    assert rows["uniform_over_used_levels"]["num_levels"] == 17
    assert rows["uniform_over_used_levels"]["bits_per_dim"] == pytest.approx(math.log2(17), abs=1e-3)
    assert 2.3 < rows["per_pixel_histogram"]["bits_per_dim"] < 2.5
