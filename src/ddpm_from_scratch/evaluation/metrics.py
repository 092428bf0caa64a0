"""Offline sample-quality metrics for the 8x8 digits, on a digit classifier's features.

FID and KID compare Inception-network features of generated and real images;
the Inception weights must be downloaded, and an ImageNet network says little
about 8x8 digits anyway. Here the feature extractor is the small digit
classifier shipped with the package (:mod:`ddpm_from_scratch.digit_classifier`),
and the same statistics are computed on its 128-dimensional penultimate
features:

* :func:`frechet_distance` -- the Fréchet (2-Wasserstein) distance between
  Gaussians fitted to two feature sets. On these features we call it the
  **classifier FID** (``"classifier_fid"``): it is *not* FID, and its values are
  not comparable with FID values published for other datasets.
* :func:`kid` -- the kernel (KID-style) distance: the unbiased estimate of the
  squared maximum mean discrepancy with the cubic polynomial kernel
  ``k(x, y) = (x.y / d + 1) ** 3``, averaged over random subsets.
* :func:`class_histogram` -- how many samples the classifier puts in each class
  (mode coverage).

:func:`digit_sample_quality` computes all of them for a batch of images
against a reference set (by default the 300 held-out digits);
:func:`reference_rows` computes, with the same code, the rows that give those
numbers a scale: training digits vs held-out digits (the floor: what a perfect
model scores with this many images) and Gaussian noise and pixel-shuffled
digits (the ceiling: no digit structure at all).

The Fréchet distance is biased upwards for small sample sizes, so compare
numbers computed with the same number of images (``reference_rows`` takes
``num_images`` for that). Everything here is computed in float64 with NumPy;
SciPy is not needed.
"""

from __future__ import annotations

from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch

__all__ = [
    "DEFAULT_KID_SUBSET_SIZE",
    "DEFAULT_KID_NUM_SUBSETS",
    "KIDResult",
    "gaussian_statistics",
    "frechet_distance_from_statistics",
    "frechet_distance",
    "polynomial_kernel",
    "mmd2_unbiased",
    "kid",
    "class_histogram",
    "extract_features",
    "digit_sample_quality",
    "pixel_shuffle",
    "reference_rows",
    "format_reference_rows",
]

ArrayLike = Union[np.ndarray, torch.Tensor, Sequence]

#: Default KID subset size: well below the 300 held-out digits, so that the
#: subsets differ from one another and their spread (``kid_std``) means something.
DEFAULT_KID_SUBSET_SIZE = 100
#: Default number of KID subsets.
DEFAULT_KID_NUM_SUBSETS = 100


def _as_float64_2d(x: ArrayLike, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float64).numpy()
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (num_samples, feature_dim), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _check_pair(a: np.ndarray, b: np.ndarray, min_samples: int) -> None:
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature dimensions differ: {a.shape[1]} vs {b.shape[1]}")
    for name, arr in (("features_a", a), ("features_b", b)):
        if arr.shape[0] < min_samples:
            raise ValueError(f"{name} needs at least {min_samples} samples, got {arr.shape[0]}")


# --------------------------------------------------------------------------
# Fréchet distance
# --------------------------------------------------------------------------


def gaussian_statistics(features: ArrayLike) -> Tuple[np.ndarray, np.ndarray]:
    """Mean ``(d,)`` and unbiased covariance ``(d, d)`` (divisor ``n - 1``) of ``(n, d)`` features."""
    x = _as_float64_2d(features, "features")
    if x.shape[0] < 2:
        raise ValueError(f"need at least 2 samples to fit a covariance, got {x.shape[0]}")
    mu = x.mean(axis=0)
    centred = x - mu
    sigma = centred.T @ centred / (x.shape[0] - 1)
    return mu, sigma


def _psd_sqrt(sigma: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric PSD matrix (negative round-off eigenvalues -> 0)."""
    sym = 0.5 * (sigma + sigma.T)
    w, v = np.linalg.eigh(sym)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance_from_statistics(
    mu_a: ArrayLike, sigma_a: ArrayLike, mu_b: ArrayLike, sigma_b: ArrayLike
) -> float:
    """Fréchet distance between ``N(mu_a, sigma_a)`` and ``N(mu_b, sigma_b)``.

    ``|mu_a - mu_b|^2 + Tr(sigma_a + sigma_b - 2 (sigma_a sigma_b)^(1/2))``, in float64.
    The trace of the matrix square root is computed stably as the sum of the
    square roots of the eigenvalues of the symmetric PSD matrix
    ``S = sigma_a^(1/2) sigma_b sigma_a^(1/2)``, which has the same eigenvalues as
    ``sigma_a sigma_b``; round-off negatives are clipped to zero, so singular
    covariances (fewer samples than dimensions, dead features) are fine.
    The result is clipped at 0 (it can only be negative through round-off).
    """
    mu_a = np.asarray(mu_a, dtype=np.float64).reshape(-1)
    mu_b = np.asarray(mu_b, dtype=np.float64).reshape(-1)
    sigma_a = np.atleast_2d(np.asarray(sigma_a, dtype=np.float64))
    sigma_b = np.atleast_2d(np.asarray(sigma_b, dtype=np.float64))
    d = mu_a.shape[0]
    if mu_b.shape != (d,) or sigma_a.shape != (d, d) or sigma_b.shape != (d, d):
        raise ValueError(
            f"shapes do not match: mu_a {mu_a.shape}, sigma_a {sigma_a.shape}, "
            f"mu_b {mu_b.shape}, sigma_b {sigma_b.shape}"
        )
    root_a = _psd_sqrt(sigma_a)
    s = root_a @ sigma_b @ root_a
    eig = np.linalg.eigvalsh(0.5 * (s + s.T))
    trace_sqrt = float(np.sqrt(np.clip(eig, 0.0, None)).sum())
    diff = mu_a - mu_b
    value = float(diff @ diff + np.trace(sigma_a) + np.trace(sigma_b) - 2.0 * trace_sqrt)
    return max(value, 0.0)


def frechet_distance(features_a: ArrayLike, features_b: ArrayLike) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets ``(n_a, d)`` and ``(n_b, d)``.

    Each set's mean and unbiased covariance (:func:`gaussian_statistics`) go
    into :func:`frechet_distance_from_statistics`. On the digit classifier's
    features this is the *classifier FID*.
    """
    a = _as_float64_2d(features_a, "features_a")
    b = _as_float64_2d(features_b, "features_b")
    _check_pair(a, b, min_samples=2)
    return frechet_distance_from_statistics(*gaussian_statistics(a), *gaussian_statistics(b))


# --------------------------------------------------------------------------
# KID
# --------------------------------------------------------------------------


class KIDResult(NamedTuple):
    """Mean and standard deviation of the unbiased MMD^2 over the subsets."""

    mean: float
    std: float


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The KID kernel matrix ``k(x_i, y_j) = (x_i . y_j / d + 1) ** 3``."""
    d = x.shape[1]
    base = x @ y.T / d + 1.0
    return base * base * base


def _mmd2_from_kernels(k_xx: np.ndarray, k_yy: np.ndarray, k_xy: np.ndarray) -> float:
    m, n = k_xy.shape
    term_xx = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
    term_yy = (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
    return float(term_xx + term_yy - 2.0 * k_xy.mean())


#: :func:`kid` computes the full kernel matrices once, and slices each
#: subset's out of them, when both sets have at most this many rows (the
#: largest matrix then takes 8 * 4096^2 bytes = 128 MiB); larger sets get
#: their kernel matrices computed per subset.
_KID_PRECOMPUTE_MAX_ROWS = 4096


def mmd2_unbiased(features_a: ArrayLike, features_b: ArrayLike) -> float:
    """Unbiased estimate of MMD^2 between two sets with the KID polynomial kernel.

    With ``m`` samples ``x`` and ``n`` samples ``y``::

        sum_{i != j} k(x_i, x_j) / (m (m - 1))
      + sum_{i != j} k(y_i, y_j) / (n (n - 1))
      - 2 sum_{i, j} k(x_i, y_j) / (m n)

    It can be slightly negative when the two distributions are the same.
    """
    x = _as_float64_2d(features_a, "features_a")
    y = _as_float64_2d(features_b, "features_b")
    _check_pair(x, y, min_samples=2)
    return _mmd2_from_kernels(polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y))


def kid(
    features_a: ArrayLike,
    features_b: ArrayLike,
    subset_size: int = DEFAULT_KID_SUBSET_SIZE,
    num_subsets: int = DEFAULT_KID_NUM_SUBSETS,
    seed: int = 0,
    generator: Optional[torch.Generator] = None,
) -> KIDResult:
    """KID-style kernel distance: :func:`mmd2_unbiased` averaged over random subsets.

    For each of ``num_subsets`` subsets, ``min(subset_size, n_a, n_b)`` rows
    are drawn without replacement from each set (independently per subset),
    and the unbiased MMD^2 of the two draws is computed. Returns their mean and
    standard deviation (``ddof=1``; 0 for a single subset). The draws come from
    ``generator`` if given, else from a fresh generator seeded with ``seed``, so
    the result is reproducible. With ``subset_size >= n_a, n_b`` and one subset
    it is exactly :func:`mmd2_unbiased` of the full sets.
    """
    x = _as_float64_2d(features_a, "features_a")
    y = _as_float64_2d(features_b, "features_b")
    _check_pair(x, y, min_samples=2)
    if subset_size < 2 or num_subsets < 1:
        raise ValueError(f"need subset_size >= 2 and num_subsets >= 1, got {subset_size}, {num_subsets}")
    if generator is None:
        generator = torch.Generator().manual_seed(int(seed))
    m = min(int(subset_size), x.shape[0], y.shape[0])
    precompute = max(x.shape[0], y.shape[0]) <= _KID_PRECOMPUTE_MAX_ROWS
    if precompute:
        full_xx, full_yy, full_xy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    values = np.empty(int(num_subsets), dtype=np.float64)
    for i in range(int(num_subsets)):
        ia = torch.randperm(x.shape[0], generator=generator)[:m].numpy()
        ib = torch.randperm(y.shape[0], generator=generator)[:m].numpy()
        if precompute:
            values[i] = _mmd2_from_kernels(
                full_xx[np.ix_(ia, ia)], full_yy[np.ix_(ib, ib)], full_xy[np.ix_(ia, ib)]
            )
        else:
            values[i] = mmd2_unbiased(x[ia], y[ib])
    std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return KIDResult(float(values.mean()), std)


# --------------------------------------------------------------------------
# Class histogram
# --------------------------------------------------------------------------


def class_histogram(logits_or_predictions: ArrayLike, num_classes: int = 10) -> List[int]:
    """Number of samples in each class, as a list of ``num_classes`` ints.

    Takes logits (or probabilities) ``(N, num_classes)``, whose arg-max is the
    prediction, or integer predictions ``(N,)`` in ``[0, num_classes)``.
    """
    if isinstance(logits_or_predictions, torch.Tensor):
        arr = logits_or_predictions.detach().cpu().numpy()
    else:
        arr = np.asarray(logits_or_predictions)
    if arr.ndim == 2:
        if arr.shape[1] != num_classes:
            raise ValueError(f"logits have {arr.shape[1]} columns, expected num_classes={num_classes}")
        preds = arr.argmax(axis=1)
    elif arr.ndim == 1:
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            if not np.all(np.equal(np.mod(arr, 1), 0)):
                raise ValueError("1-D input must hold integer class predictions")
        preds = arr.astype(np.int64)
        if preds.size and (preds.min() < 0 or preds.max() >= num_classes):
            raise ValueError(f"predictions must lie in [0, {num_classes}), got [{preds.min()}, {preds.max()}]")
    else:
        raise ValueError(f"expected logits (N, C) or predictions (N,), got shape {arr.shape}")
    return [int(c) for c in np.bincount(preds, minlength=num_classes)[:num_classes]]


# --------------------------------------------------------------------------
# Digits
# --------------------------------------------------------------------------


def _prepare_images(images: torch.Tensor, value_range: Tuple[float, float], name: str) -> torch.Tensor:
    """Check ``(N, 1, 8, 8)`` images and map ``value_range`` linearly onto ``[-1, 1]``."""
    if not isinstance(images, torch.Tensor):
        images = torch.as_tensor(np.asarray(images))
    if images.ndim != 4 or tuple(images.shape[1:]) != (1, 8, 8):
        raise ValueError(f"{name} must have shape (N, 1, 8, 8), got {tuple(images.shape)}")
    if images.shape[0] < 2:
        raise ValueError(f"{name} needs at least 2 images, got {images.shape[0]}")
    x = images.detach().to("cpu", torch.float32)
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    lo, hi = float(value_range[0]), float(value_range[1])
    if not hi > lo:
        raise ValueError(f"value_range must be (low, high) with high > low, got {value_range}")
    tol = 1e-3 * (hi - lo)
    if x.min() < lo - tol or x.max() > hi + tol:
        raise ValueError(
            f"{name} values lie in [{x.min().item():.4g}, {x.max().item():.4g}], outside "
            f"value_range {value_range}; pass value_range=(0, 1) for images in [0, 1] "
            "(e.g. the pipeline's output_type='pt')"
        )
    x = (x - lo) / (hi - lo) * 2.0 - 1.0
    return x.clamp(-1.0, 1.0)


@torch.no_grad()
def extract_features(
    images: torch.Tensor, classifier: Optional[torch.nn.Module] = None, batch_size: int = 1024
) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(features, logits)`` of images ``(N, 1, 8, 8)`` in ``[-1, 1]``; the shipped classifier by default."""
    if classifier is None:
        from .digit_classifier import load_digit_classifier

        classifier = load_digit_classifier()
    was_training = classifier.training
    classifier.eval()
    device = next(classifier.parameters()).device
    feats, logits = [], []
    try:
        for i in range(0, len(images), batch_size):
            f = classifier.features(images[i : i + batch_size].to(device))
            feats.append(f.cpu())
            logits.append(classifier.head(f).cpu())
    finally:
        classifier.train(was_training)
    return torch.cat(feats), torch.cat(logits)


def digit_sample_quality(
    images: torch.Tensor,
    reference: Optional[torch.Tensor] = None,
    classifier: Optional[torch.nn.Module] = None,
    *,
    value_range: Tuple[float, float] = (-1.0, 1.0),
    kid_subset_size: int = DEFAULT_KID_SUBSET_SIZE,
    kid_num_subsets: int = DEFAULT_KID_NUM_SUBSETS,
    seed: int = 0,
) -> Dict[str, Any]:
    """Sample-quality numbers of 8x8 digit images against a reference set.

    Args:
        images: ``(N, 1, 8, 8)`` tensor, e.g. generated samples.
        reference: ``(M, 1, 8, 8)`` tensor in ``[-1, 1]`` (model space); by
            default the 300 held-out digits (``load_digits_dataset("test")``).
        classifier: a :class:`~ddpm_from_scratch.digit_classifier.DigitClassifier`;
            by default the shipped one (:func:`load_digit_classifier`).
        value_range: the range of ``images`` (mapped linearly onto ``[-1, 1]``);
            ``(0, 1)`` for the pipeline's ``output_type="pt"``. Values outside it
            (beyond a 0.1 % tolerance) raise ``ValueError``.
        kid_subset_size, kid_num_subsets, seed: passed to :func:`kid`.

    Returns a dict:
        ``classifier_fid``: :func:`frechet_distance` of the classifier's
        penultimate features (a classifier FID, *not* FID);
        ``kid_mean``, ``kid_std``: :func:`kid` of the same features;
        ``class_histogram``: predicted-class counts of ``images``;
        ``class_fractions``: the same divided by N;
        ``reference_class_histogram``: predicted-class counts of ``reference``;
        ``class_tv_distance``: total-variation distance between the two
        predicted-class distributions (0: same class balance, 1: disjoint);
        ``mean_confidence``: mean of the largest softmax probability over ``images``;
        ``num_images``, ``num_reference``, ``feature_dim``, ``kid_subset_size``,
        ``kid_num_subsets``.
    """
    if classifier is None:
        from .digit_classifier import load_digit_classifier

        classifier = load_digit_classifier()
    x = _prepare_images(images, value_range, "images")
    if reference is None:
        from .digit_classifier import load_digits_tensors

        reference = load_digits_tensors("test")[0]
    ref = _prepare_images(reference, (-1.0, 1.0), "reference")

    feats, logits = extract_features(x, classifier)
    ref_feats, ref_logits = extract_features(ref, classifier)
    num_classes = logits.shape[1]
    hist = class_histogram(logits, num_classes)
    ref_hist = class_histogram(ref_logits, num_classes)
    p = np.asarray(hist, dtype=np.float64) / len(x)
    q = np.asarray(ref_hist, dtype=np.float64) / len(ref)
    kid_result = kid(feats, ref_feats, subset_size=kid_subset_size, num_subsets=kid_num_subsets, seed=seed)
    return {
        "classifier_fid": frechet_distance(feats, ref_feats),
        "kid_mean": kid_result.mean,
        "kid_std": kid_result.std,
        "class_histogram": hist,
        "class_fractions": [float(v) for v in p],
        "reference_class_histogram": ref_hist,
        "class_tv_distance": float(0.5 * np.abs(p - q).sum()),
        "mean_confidence": float(torch.softmax(logits.double(), dim=1).max(dim=1).values.mean()),
        "num_images": int(len(x)),
        "num_reference": int(len(ref)),
        "feature_dim": int(feats.shape[1]),
        "kid_subset_size": int(min(kid_subset_size, len(x), len(ref))),
        "kid_num_subsets": int(kid_num_subsets),
    }


def pixel_shuffle(images: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Permute the pixels of each image ``(N, C, H, W)`` with its own random permutation.

    The same permutation is applied to every channel of an image; the
    permutations come from ``generator`` (torch's global generator if ``None``).
    """
    n, c = images.shape[:2]
    flat = images.reshape(n, c, -1)
    perms = torch.argsort(torch.rand(n, flat.shape[2], generator=generator), dim=1)
    return torch.gather(flat, 2, perms[:, None, :].expand(n, c, -1)).reshape(images.shape)


def reference_rows(
    classifier: Optional[torch.nn.Module] = None,
    num_images: Optional[int] = None,
    seed: int = 0,
    kid_subset_size: int = DEFAULT_KID_SUBSET_SIZE,
    kid_num_subsets: int = DEFAULT_KID_NUM_SUBSETS,
) -> List[Dict[str, Any]]:
    """The floor and ceiling of :func:`digit_sample_quality`, all against the held-out digits.

    Rows, each the dict of :func:`digit_sample_quality` plus ``"name"`` and
    ``"kind"`` (``"floor"`` or ``"ceiling"``):

    * ``"train digits"`` (floor): training digits -- real digits the
      classifier's reference set does not contain; a perfect generator scores
      about this.
    * ``"gaussian noise"`` (ceiling): standard normal pixels clamped to ``[-1, 1]``.
    * ``"pixel-shuffled train digits"`` (ceiling): the training digits, each
      with its 64 pixels permuted (its own permutation), so the pixel values
      are right but the structure is gone.

    ``num_images`` images per row (default: all 1,497 training digits; a
    smaller number takes a seeded random subset of them), so that the rows can
    match the number of generated samples being judged. Noise, shuffles and
    the subset come from a generator seeded with ``seed``; KID uses ``seed`` too.
    """
    from .digit_classifier import load_digit_classifier, load_digits_tensors

    if classifier is None:
        classifier = load_digit_classifier()
    train = load_digits_tensors("train")[0]
    heldout = load_digits_tensors("test")[0]
    generator = torch.Generator().manual_seed(int(seed))
    if num_images is not None:
        if not 2 <= num_images <= len(train):
            raise ValueError(f"num_images must lie in [2, {len(train)}], got {num_images}")
        train = train[torch.randperm(len(train), generator=generator)[:num_images].sort().values]
    noise = torch.randn(train.shape, generator=generator).clamp(-1.0, 1.0)
    shuffled = pixel_shuffle(train, generator)

    rows = []
    for name, kind, images in (
        ("train digits", "floor", train),
        ("gaussian noise", "ceiling", noise),
        ("pixel-shuffled train digits", "ceiling", shuffled),
    ):
        result = digit_sample_quality(
            images,
            heldout,
            classifier,
            kid_subset_size=kid_subset_size,
            kid_num_subsets=kid_num_subsets,
            seed=seed,
        )
        rows.append({"name": name, "kind": kind, **result})
    return rows


def format_reference_rows(rows: List[Dict[str, Any]]) -> str:
    """A Markdown table of rows from :func:`reference_rows` (or :func:`digit_sample_quality` plus ``"name"``)."""
    lines = [
        "| images (vs held-out digits) | n | classifier FID | KID (mean ± std) | class TV |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.get('name', '?')} | {r['num_images']} | {r['classifier_fid']:.3f} | "
            f"{r['kid_mean']:.4f} ± {r['kid_std']:.4f} | {r['class_tv_distance']:.3f} |"
        )
    return "\n".join(lines)
