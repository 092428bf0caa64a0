"""Specification of ddpm_from_scratch.evaluation.digit_classifier: the feature extractor of the metrics.

The held-out accuracy is recomputed here from scikit-learn's raw digits and the
split indices, independently of the package's own tensor loader.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from ddpm_from_scratch.data import images as data
from ddpm_from_scratch.evaluation import digit_classifier as dc


def raw_split(split):
    """Images (N, 1, 8, 8) in [-1, 1] and labels of a split, straight from scikit-learn."""
    bunch = load_digits()
    idx = data.digits_split_indices()[split]
    pixels = np.array([[round(v * 255 / 16) for v in img.flatten()] for img in bunch.images[idx]])
    images = torch.tensor(pixels, dtype=torch.float32).reshape(-1, 1, 8, 8) / 127.5 - 1.0
    return images, torch.tensor(bunch.target[idx])


@pytest.fixture(scope="module")
def shipped():
    return dc.load_digit_classifier()


def test_shipped_weights_are_a_small_safetensors_file():
    assert dc.SHIPPED_WEIGHTS.name == "digit_classifier.safetensors"
    assert dc.SHIPPED_WEIGHTS.stat().st_size < 1_000_000


def test_shipped_classifier_loads_in_eval_mode_from_its_own_metadata(shipped):
    assert isinstance(shipped, dc.DigitClassifier)
    assert not shipped.training
    assert not any(p.requires_grad for p in shipped.parameters())
    meta = shipped.metadata
    assert meta["config"] == shipped.config
    assert meta["num_parameters"] == sum(p.numel() for p in shipped.parameters())
    assert meta["seed"] == meta["training"]["seed"]
    assert meta["training"]["train_images"] == len(data.digits_split_indices()["train"])


def test_shipped_classifier_heldout_accuracy_is_at_least_97_percent_and_as_recorded(shipped):
    images, labels = raw_split("test")
    with torch.no_grad():
        correct = int((shipped(images).argmax(dim=1) == labels).sum())
    accuracy = correct / len(labels)
    assert accuracy >= 0.97
    assert correct == shipped.metadata["heldout_correct"]
    assert len(labels) == shipped.metadata["heldout_total"]
    assert accuracy == pytest.approx(shipped.metadata["heldout_accuracy"], abs=1e-12)


def test_load_digits_tensors_match_the_raw_digits():
    images, labels = dc.load_digits_tensors("test")
    expected_images, expected_labels = raw_split("test")
    assert images.dtype == torch.float32 and images.shape == (300, 1, 8, 8)
    assert torch.allclose(images, expected_images, atol=1e-6)
    assert torch.equal(labels, expected_labels)


def test_logits_are_the_head_applied_to_the_features(shipped):
    images = raw_split("test")[0][:16]
    with torch.no_grad():
        features = shipped.features(images)
        logits = shipped(images)
    assert features.shape == (16, shipped.feature_dim)
    assert (features >= 0).all()  # ReLU features
    assert torch.allclose(logits, features @ shipped.head.weight.T + shipped.head.bias, atol=1e-5)


def test_classifier_rejects_images_of_the_wrong_shape(shipped):
    with pytest.raises(ValueError, match=r"\(N, 1, 8, 8\)"):
        shipped(torch.zeros(2, 1, 16, 16))


def test_training_is_deterministic_for_a_seed():
    first = dc.train_digit_classifier(seed=7, max_steps=3).state_dict()
    second = dc.train_digit_classifier(seed=7, max_steps=3).state_dict()
    other = dc.train_digit_classifier(seed=8, max_steps=3).state_dict()
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


def test_training_reads_only_the_training_split(monkeypatch):
    seen = []
    original = data.load_digits_dataset

    def recording(split="train"):
        seen.append(split)
        return original(split)

    monkeypatch.setattr(data, "load_digits_dataset", recording)
    dc.train_digit_classifier(seed=0, max_steps=1)
    assert seen == ["train"]


def test_save_and_load_round_trip(tmp_path):
    model = dc.train_digit_classifier(seed=1, max_steps=2, channels=(8, 16), feature_dim=32)
    path = dc.save_digit_classifier(model, tmp_path / "clf.safetensors", {"heldout_accuracy": 0.5})
    loaded = dc.load_digit_classifier(path)
    assert loaded.config == {"channels": [8, 16], "feature_dim": 32, "num_classes": 10, "groups": 8}
    assert loaded.metadata["heldout_accuracy"] == 0.5
    assert loaded.metadata["training"]["steps"] == 2
    original = model.state_dict()
    assert all(torch.equal(original[k], v) for k, v in loaded.state_dict().items())


def test_shift_augmentation_translates_each_image_by_at_most_one_pixel():
    images = raw_split("train")[0][:32]
    shifted = dc._random_shift(images, 1, torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(images, (1, 1, 1, 1), value=-1.0)
    for i in range(len(images)):
        candidates = [padded[i, :, r : r + 8, c : c + 8] for r in range(3) for c in range(3)]
        assert any(torch.equal(shifted[i], cand) for cand in candidates)
