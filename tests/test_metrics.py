"""Specification of ddpm_from_scratch.evaluation.metrics: classifier FID, KID and class histograms.

Expected values come from independent sources: closed forms of the Fréchet
distance between Gaussians, a direct double loop over the unbiased MMD^2
formula, collections.Counter, and the algebra of translations.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch

from ddpm_from_scratch.evaluation import metrics
from ddpm_from_scratch.evaluation.digit_classifier import load_digit_classifier, load_digits_tensors


def gaussian(rng, n, mean, var):
    mean = np.asarray(mean, dtype=np.float64)
    return mean + rng.standard_normal((n, len(mean))) * np.sqrt(np.asarray(var, dtype=np.float64))


@pytest.fixture(scope="module")
def classifier():
    return load_digit_classifier()


@pytest.fixture(scope="module")
def heldout():
    return load_digits_tensors("test")[0]


# --------------------------------------------------------------------------
# Fréchet distance
# --------------------------------------------------------------------------


def test_frechet_distance_of_samples_approaches_the_diagonal_closed_form():
    rng = np.random.default_rng(0)
    mu_a, var_a = [0.0, 1.0, -2.0], [1.0, 4.0, 0.25]
    mu_b, var_b = [1.0, 0.5, -2.0], [2.25, 1.0, 1.0]
    # ||dmu||^2 + sum (sqrt(a_i) - sqrt(b_i))^2 = 1.25 + (0.25 + 1 + 0.25)
    expected = 1.25 + 1.5
    a = gaussian(rng, 40_000, mu_a, var_a)
    b = gaussian(rng, 40_000, mu_b, var_b)
    assert metrics.frechet_distance(a, b) == pytest.approx(expected, abs=0.05)


def test_frechet_distance_from_exact_diagonal_statistics_is_the_closed_form():
    rng = np.random.default_rng(1)
    mu_a, mu_b = rng.normal(size=5), rng.normal(size=5)
    var_a, var_b = rng.uniform(0.1, 3.0, 5), rng.uniform(0.1, 3.0, 5)
    expected = np.sum((mu_a - mu_b) ** 2) + np.sum((np.sqrt(var_a) - np.sqrt(var_b)) ** 2)
    got = metrics.frechet_distance_from_statistics(mu_a, np.diag(var_a), mu_b, np.diag(var_b))
    assert got == pytest.approx(expected, rel=1e-10)


def test_frechet_distance_handles_non_commuting_covariances():
    # For 2x2 P = Sa Sb with eigenvalues l1, l2 >= 0:
    # Tr P^(1/2) = sqrt(l1) + sqrt(l2) = sqrt(Tr P + 2 sqrt(det P)).
    sa = np.array([[2.0, 0.8], [0.8, 1.0]])
    sb = np.array([[0.5, -0.3], [-0.3, 3.0]])
    assert not np.allclose(sa @ sb, sb @ sa)
    p = sa @ sb
    tr_sqrt = math.sqrt(np.trace(p) + 2.0 * math.sqrt(np.linalg.det(p)))
    mu_a, mu_b = np.array([0.3, -1.0]), np.array([1.0, 1.0])
    expected = np.sum((mu_a - mu_b) ** 2) + np.trace(sa) + np.trace(sb) - 2.0 * tr_sqrt
    got = metrics.frechet_distance_from_statistics(mu_a, sa, mu_b, sb)
    assert got == pytest.approx(expected, rel=1e-10)


def test_frechet_distance_in_one_dimension_uses_sample_mean_and_std():
    rng = np.random.default_rng(2)
    a, b = rng.normal(0.0, 1.0, 50), rng.normal(2.0, 3.0, 70)
    expected = (a.mean() - b.mean()) ** 2 + (a.std(ddof=1) - b.std(ddof=1)) ** 2
    assert metrics.frechet_distance(a[:, None], b[:, None]) == pytest.approx(expected, rel=1e-10)


def test_frechet_distance_of_identical_sets_is_zero():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(300, 32)) @ rng.normal(size=(32, 32))  # correlated features
    assert metrics.frechet_distance(a, a.copy()) == pytest.approx(0.0, abs=1e-6 * np.trace(np.cov(a.T)))


def test_frechet_distance_is_symmetric():
    rng = np.random.default_rng(4)
    a = rng.normal(size=(200, 16))
    b = rng.normal(size=(150, 16)) @ rng.normal(size=(16, 16)) + 0.5
    assert metrics.frechet_distance(a, b) == pytest.approx(metrics.frechet_distance(b, a), rel=1e-9)


def test_frechet_distance_translation_by_v_adds_squared_norm_of_v():
    rng = np.random.default_rng(5)
    a = rng.normal(size=(100, 8)) @ rng.normal(size=(8, 8))
    v = rng.normal(size=8)
    assert metrics.frechet_distance(a, a + v) == pytest.approx(float(v @ v), rel=1e-8)


def test_frechet_distance_with_singular_covariance_ignores_constant_features():
    # Fewer samples than dimensions and dead (all-zero) features, as ReLU features have.
    rng = np.random.default_rng(6)
    a, b = rng.normal(size=(20, 10)), rng.normal(1.0, 2.0, size=(25, 10))
    pad = lambda x: np.concatenate([x, np.zeros((len(x), 40))], axis=1)  # noqa: E731
    got = metrics.frechet_distance(pad(a), pad(b))
    assert np.isfinite(got) and got >= 0.0
    assert got == pytest.approx(metrics.frechet_distance(a, b), rel=1e-7)


def test_frechet_distance_accepts_torch_tensors():
    rng = np.random.default_rng(7)
    a, b = rng.normal(size=(50, 4)), rng.normal(size=(60, 4))
    expected = metrics.frechet_distance(a, b)
    assert metrics.frechet_distance(torch.from_numpy(a), torch.from_numpy(b)) == pytest.approx(expected)


def test_frechet_distance_rejects_mismatched_dimensions():
    with pytest.raises(ValueError, match="dimension"):
        metrics.frechet_distance(np.zeros((5, 3)), np.zeros((5, 4)))


# --------------------------------------------------------------------------
# KID
# --------------------------------------------------------------------------


def direct_mmd2(x, y):
    """Unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3, as an explicit double loop."""
    d = x.shape[1]
    k = lambda p, q: (float(np.dot(p, q)) / d + 1.0) ** 3  # noqa: E731
    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2.0 * xy


def test_mmd2_unbiased_matches_direct_double_loop():
    rng = np.random.default_rng(8)
    x, y = rng.normal(size=(9, 5)), rng.normal(0.5, 1.5, size=(13, 5))
    assert metrics.mmd2_unbiased(x, y) == pytest.approx(direct_mmd2(x, y), rel=1e-10)


def test_kid_with_one_full_subset_is_the_unbiased_mmd2_of_the_sets():
    rng = np.random.default_rng(9)
    x, y = rng.normal(size=(12, 6)), rng.normal(0.3, 1.0, size=(12, 6))
    result = metrics.kid(x, y, subset_size=12, num_subsets=1)
    assert result.mean == pytest.approx(direct_mmd2(x, y), rel=1e-10)
    assert result.std == 0.0


def test_kid_of_samples_from_one_distribution_is_zero_within_its_std():
    rng = np.random.default_rng(10)
    x, y = rng.normal(size=(600, 16)), rng.normal(size=(600, 16))
    result = metrics.kid(x, y, subset_size=100, num_subsets=50, seed=0)
    assert result.std > 0.0
    assert abs(result.mean) < result.std


def test_kid_of_different_distributions_is_many_stds_above_zero():
    rng = np.random.default_rng(11)
    x, y = rng.normal(size=(600, 16)), rng.normal(0.5, 1.0, size=(600, 16))
    result = metrics.kid(x, y, subset_size=100, num_subsets=50, seed=0)
    assert result.mean > 3.0 * result.std


def test_kid_is_reproducible_from_its_seed():
    rng = np.random.default_rng(12)
    x, y = rng.normal(size=(80, 4)), rng.normal(size=(90, 4))
    first = metrics.kid(x, y, subset_size=20, num_subsets=10, seed=3)
    assert metrics.kid(x, y, subset_size=20, num_subsets=10, seed=3) == first
    assert metrics.kid(x, y, subset_size=20, num_subsets=10, generator=torch.Generator().manual_seed(3)) == first
    assert metrics.kid(x, y, subset_size=20, num_subsets=10, seed=4) != first


# --------------------------------------------------------------------------
# Class histogram
# --------------------------------------------------------------------------


def test_class_histogram_counts_predictions():
    preds = [3, 1, 3, 9, 0, 3, 1]
    counts = Counter(preds)
    assert metrics.class_histogram(torch.tensor(preds)) == [counts.get(c, 0) for c in range(10)]


def test_class_histogram_counts_argmax_of_logits():
    rng = np.random.default_rng(13)
    logits = rng.normal(size=(40, 10))
    counts = Counter(int(np.argmax(row)) for row in logits)
    assert metrics.class_histogram(logits, num_classes=10) == [counts.get(c, 0) for c in range(10)]


def test_class_histogram_rejects_out_of_range_predictions():
    with pytest.raises(ValueError):
        metrics.class_histogram([0, 10], num_classes=10)


# --------------------------------------------------------------------------
# Digits
# --------------------------------------------------------------------------


def test_digit_sample_quality_of_the_reference_itself_is_zero(classifier, heldout):
    result = metrics.digit_sample_quality(heldout, heldout, classifier, kid_num_subsets=5)
    assert result["classifier_fid"] == pytest.approx(0.0, abs=1e-6)
    assert result["class_tv_distance"] == 0.0
    assert result["class_histogram"] == result["reference_class_histogram"]
    assert sum(result["class_histogram"]) == result["num_images"] == len(heldout)
    assert result["feature_dim"] == classifier.feature_dim
    assert "fid" not in result  # the number is a classifier FID, never called plain FID


def test_digit_sample_quality_maps_value_range_onto_model_space(classifier, heldout):
    images = heldout[:100]
    in_model_space = metrics.digit_sample_quality(images, heldout, classifier, kid_num_subsets=5)
    in_unit_range = metrics.digit_sample_quality(
        (images + 1) / 2, heldout, classifier, value_range=(0, 1), kid_num_subsets=5
    )
    assert in_unit_range["classifier_fid"] == pytest.approx(in_model_space["classifier_fid"], rel=1e-5)
    assert in_unit_range["class_histogram"] == in_model_space["class_histogram"]


def test_digit_sample_quality_rejects_images_outside_value_range(classifier, heldout):
    with pytest.raises(ValueError, match="value_range"):
        metrics.digit_sample_quality(heldout * 2.0, heldout, classifier)


def test_pixel_shuffle_permutes_each_images_own_pixels(heldout):
    images = heldout[:20]
    shuffled = metrics.pixel_shuffle(images, torch.Generator().manual_seed(0))
    for original, new in zip(images, shuffled):
        assert torch.equal(original.flatten().sort().values, new.flatten().sort().values)
    assert not torch.equal(images, shuffled)


def test_reference_rows_order_floor_below_ceiling(classifier):
    rows = {r["name"]: r for r in metrics.reference_rows(classifier, num_images=300, kid_num_subsets=20)}
    floor = rows["train digits"]
    assert floor["kind"] == "floor"
    for name in ("gaussian noise", "pixel-shuffled train digits"):
        ceiling = rows[name]
        assert ceiling["kind"] == "ceiling" and ceiling["num_images"] == floor["num_images"] == 300
        assert floor["classifier_fid"] < 0.1 * ceiling["classifier_fid"]
        assert floor["kid_mean"] + floor["kid_std"] < ceiling["kid_mean"] - ceiling["kid_std"]
