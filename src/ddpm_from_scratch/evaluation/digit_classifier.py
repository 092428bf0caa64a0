"""A small CNN classifier of the embedded 8x8 digits: the feature extractor of the
offline sample-quality metrics in :mod:`ddpm_from_scratch.metrics`.

FID uses the penultimate layer of an ImageNet Inception network, whose weights
must be downloaded; for the 8x8 UCI digits we train the equivalent ourselves.
:class:`DigitClassifier` maps model-space images ``(N, 1, 8, 8)`` in ``[-1, 1]``
(the scale :class:`ddpm_from_scratch.data.ImageTransform` produces) to

* :meth:`DigitClassifier.features`: the penultimate features ``(N, feature_dim)``
  (non-negative: they come out of a ReLU, like Inception's pool features), and
* :meth:`DigitClassifier.forward`: the logits ``(N, num_classes)``, a linear
  function of those features.

Architecture (defaults)::

    x in [-1, 1] -> (x + 1) / 2, so the background is 0 like the zero padding
    conv3x3(1 -> 32)  GroupNorm(8) ReLU   8x8
    conv3x3(32 -> 32) GroupNorm(8) ReLU   8x8  -> avg-pool 2 -> 4x4
    conv3x3(32 -> 64) GroupNorm(8) ReLU   4x4
    conv3x3(64 -> 64) GroupNorm(8) ReLU   4x4  -> avg-pool 2 -> 2x2
    flatten (256) -> linear(256 -> 128) ReLU   = features
    linear(128 -> 10)                           = logits

:func:`train_digit_classifier` trains it deterministically (every random draw --
initialisation, shuffling, augmentation -- comes from one seeded
:class:`torch.Generator`) on the ``"train"`` split only; the 300 held-out
``"test"`` digits are never seen in training and are used only to report
:func:`heldout_accuracy` afterwards (no early stopping or model selection on
them). The weights shipped with the package (``digit_classifier.safetensors``,
written by ``scripts/train_digit_classifier.py``) are loaded by
:func:`load_digit_classifier`; the file's safetensors metadata records the
architecture, the training seed and settings, and the measured held-out
accuracy, so loading needs nothing else.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "DigitClassifier",
    "SHIPPED_WEIGHTS",
    "FORMAT",
    "load_digits_tensors",
    "train_digit_classifier",
    "predict",
    "heldout_accuracy",
    "save_digit_classifier",
    "load_digit_classifier",
]

#: The weights shipped inside the package.
SHIPPED_WEIGHTS = Path(__file__).resolve().parent / "digit_classifier.safetensors"
#: The ``"format"`` entry of the metadata of a file :func:`save_digit_classifier` writes.
FORMAT = "ddpm_from_scratch.digit_classifier/1"

_RESOLUTION = 8


# --------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------


class DigitClassifier(nn.Module):
    """A CNN for 8x8 single-channel images in ``[-1, 1]`` (see the module docstring).

    Args:
        channels: output channels of the two stages; each stage is two 3x3
            convolutions (GroupNorm, ReLU) followed by a 2x2 average pool.
        feature_dim: width of the penultimate (feature) layer.
        num_classes: number of logits.
        groups: GroupNorm groups; must divide every entry of ``channels``.
    """

    def __init__(
        self,
        channels: Sequence[int] = (32, 64),
        feature_dim: int = 128,
        num_classes: int = 10,
        groups: int = 8,
    ) -> None:
        super().__init__()
        channels = tuple(int(c) for c in channels)
        if len(channels) != 2:
            raise ValueError(f"channels must have two entries (one per 2x down-sampling stage), got {channels}")
        for c in channels:
            if c < 1 or c % groups != 0:
                raise ValueError(f"every entry of channels must be a positive multiple of groups={groups}, got {channels}")
        if feature_dim < 1 or num_classes < 2:
            raise ValueError(f"need feature_dim >= 1 and num_classes >= 2, got {feature_dim}, {num_classes}")
        self.channels = channels
        self.feature_dim = int(feature_dim)
        self.num_classes = int(num_classes)
        self.groups = int(groups)

        def conv_block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, kernel_size=3, padding=1),
                nn.GroupNorm(groups, cout),
                nn.ReLU(),
            )

        c1, c2 = channels
        self.body = nn.Sequential(
            conv_block(1, c1),
            conv_block(c1, c1),
            nn.AvgPool2d(2),
            conv_block(c1, c2),
            conv_block(c2, c2),
            nn.AvgPool2d(2),
        )
        spatial = _RESOLUTION // 4
        self.feature = nn.Linear(c2 * spatial * spatial, self.feature_dim)
        self.head = nn.Linear(self.feature_dim, self.num_classes)

    @property
    def config(self) -> Dict[str, Any]:
        """The constructor arguments: ``DigitClassifier(**model.config)`` rebuilds it."""
        return {
            "channels": list(self.channels),
            "feature_dim": self.feature_dim,
            "num_classes": self.num_classes,
            "groups": self.groups,
        }

    def _check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"expected a tensor, got {type(x).__name__}")
        if x.ndim != 4 or tuple(x.shape[1:]) != (1, _RESOLUTION, _RESOLUTION):
            raise ValueError(
                f"expected images of shape (N, 1, {_RESOLUTION}, {_RESOLUTION}) in [-1, 1], "
                f"got {tuple(x.shape)}"
            )

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features ``(N, feature_dim)`` of images ``(N, 1, 8, 8)`` in ``[-1, 1]``."""
        self._check_input(x)
        h = (x.to(self.feature.weight.dtype) + 1.0) * 0.5  # background -> 0, like the zero padding
        h = self.body(h)
        return F.relu(self.feature(h.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, num_classes)`` of images ``(N, 1, 8, 8)`` in ``[-1, 1]``."""
        return self.head(self.features(x))

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> None:
        """Initialise every parameter from ``generator`` alone.

        Convolutions and the feature layer (all followed by ReLU): He-uniform
        weights, ``U(-b, b)`` with ``b = sqrt(6 / fan_in)``; the head:
        ``b = sqrt(3 / fan_in)`` (unit-variance logits for unit-variance
        inputs); biases zero; GroupNorm weight one, bias zero.
        """
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                fan_in = module.weight[0].numel()
                gain = 3.0 if module is self.head else 6.0
                bound = math.sqrt(gain / fan_in)
                module.weight.uniform_(-bound, bound, generator=generator)
                module.bias.zero_()
            elif isinstance(module, nn.GroupNorm):
                module.weight.fill_(1.0)
                module.bias.zero_()


# --------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------


def load_digits_tensors(split: str) -> Tuple[torch.Tensor, torch.Tensor]:
    """One split of the embedded digits as ``(images, labels)`` tensors.

    ``images`` is float32 ``(N, 1, 8, 8)`` with each 8-bit pixel ``x`` mapped to
    ``x / 127.5 - 1`` (the model space of :class:`ddpm_from_scratch.data.ImageTransform`);
    ``labels`` is int64 ``(N,)``. ``split`` is ``"train"`` or ``"test"``.
    """
    from ..data.images import load_digits_dataset

    ds = load_digits_dataset(split)
    pixels = np.stack([np.asarray(img, dtype=np.uint8) for img in ds["image"]])
    images = torch.from_numpy(pixels.astype(np.float32)).unsqueeze(1) / 127.5 - 1.0
    labels = torch.as_tensor(np.asarray(ds["label"], dtype=np.int64))
    return images, labels


def _random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Shift each image by its own integer offset in ``[-max_shift, max_shift]^2``.

    Pixels shifted in are background (-1); offsets are drawn from ``generator``.
    """
    if max_shift <= 0:
        return x
    n, _, h, w = x.shape
    s = max_shift
    padded = F.pad(x, (s, s, s, s), value=-1.0)
    offsets = torch.randint(0, 2 * s + 1, (n, 2), generator=generator)
    rows = offsets[:, 0, None] + torch.arange(h)  # (n, h)
    cols = offsets[:, 1, None] + torch.arange(w)  # (n, w)
    batch = torch.arange(n)[:, None, None]
    return padded[batch, 0, rows[:, :, None], cols[:, None, :]].unsqueeze(1)


# --------------------------------------------------------------------------
# Training and evaluation
# --------------------------------------------------------------------------


def train_digit_classifier(
    seed: int = 0,
    epochs: int = 15,
    batch_size: int = 64,
    learning_rate: float = 3e-3,
    weight_decay: float = 1e-4,
    label_smoothing: float = 0.05,
    max_shift: int = 1,
    max_steps: Optional[int] = None,
    channels: Sequence[int] = (32, 64),
    feature_dim: int = 128,
    groups: int = 8,
    num_threads: Optional[int] = 1,
    verbose: bool = False,
) -> DigitClassifier:
    """Train a :class:`DigitClassifier` on the digits' ``"train"`` split, deterministically.

    Every random draw (initialisation, the per-epoch shuffle, the per-image
    ``±max_shift`` pixel shifts) comes from one :class:`torch.Generator` seeded
    with ``seed``; torch's global RNG is not used, so the same arguments give
    the same weights on the same machine and torch build. AdamW with a
    linear warm-up (the first 5 % of steps) then cosine decay to zero, and
    label-smoothed cross-entropy. ``max_steps`` stops early (for tests). The
    held-out split is not touched.

    ``num_threads`` (default 1) sets torch's intra-op thread count for the
    duration of training (restored afterwards; ``None`` leaves it alone): the
    model is so small that one thread is fastest (a few seconds for the
    default 15 epochs), and a fixed thread count keeps the floating-point
    reductions, hence the weights, the same on machines with different core
    counts.

    Returns the model in eval mode, with ``model.training_info`` a dict of the
    training settings (seed, epochs, steps, ...) and the wall-clock time.
    """
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"need epochs >= 1 and batch_size >= 1, got {epochs}, {batch_size}")
    previous_threads = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(int(num_threads))
    try:
        return _train(
            seed, epochs, batch_size, learning_rate, weight_decay, label_smoothing,
            max_shift, max_steps, channels, feature_dim, groups, num_threads, verbose,
        )
    finally:
        torch.set_num_threads(previous_threads)


def _train(
    seed, epochs, batch_size, learning_rate, weight_decay, label_smoothing,
    max_shift, max_steps, channels, feature_dim, groups, num_threads, verbose,
) -> DigitClassifier:
    start = time.perf_counter()
    generator = torch.Generator().manual_seed(int(seed))
    images, labels = load_digits_tensors("train")
    n = len(labels)

    model = DigitClassifier(channels=channels, feature_dim=feature_dim, groups=groups)
    model.reset_parameters(generator)
    decay = [p for name, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for name, p in model.named_parameters() if p.ndim <= 1]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=learning_rate,
    )
    steps_per_epoch = math.ceil(n / batch_size)
    total_steps = epochs * steps_per_epoch
    if max_steps is not None:
        total_steps = min(total_steps, int(max_steps))
    warmup = max(1, total_steps // 20)

    def lr_at(step: int) -> float:
        if step < warmup:
            return learning_rate * (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return learning_rate * 0.5 * (1.0 + math.cos(math.pi * progress))

    model.train()
    step = 0
    done = False
    for epoch in range(epochs):
        order = torch.randperm(n, generator=generator)
        running, seen = 0.0, 0
        for i in range(0, n, batch_size):
            idx = order[i : i + batch_size]
            x = _random_shift(images[idx], max_shift, generator)
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step)
            loss = F.cross_entropy(model(x), labels[idx], label_smoothing=label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            running += loss.item() * len(idx)
            seen += len(idx)
            step += 1
            if step >= total_steps:
                done = True
                break
        if verbose:
            print(f"epoch {epoch + 1:3d}/{epochs}  step {step:5d}  loss {running / max(seen, 1):.4f}")
        if done:
            break
    model.eval()
    model.training_info = {
        "seed": int(seed),
        "epochs": int(epochs),
        "steps": int(step),
        "batch_size": int(batch_size),
        "learning_rate": float(learning_rate),
        "weight_decay": float(weight_decay),
        "label_smoothing": float(label_smoothing),
        "max_shift": int(max_shift),
        "train_images": int(n),
        "train_split": "digits train (ddpm_from_scratch.data.load_digits_dataset('train'))",
        "num_threads": None if num_threads is None else int(num_threads),
        "train_seconds": round(time.perf_counter() - start, 2),
        "torch_version": torch.__version__,
    }
    return model


@torch.no_grad()
def predict(model: DigitClassifier, images: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Predicted classes ``(N,)`` of images ``(N, 1, 8, 8)`` in ``[-1, 1]`` (eval mode)."""
    was_training = model.training
    model.eval()
    try:
        out = [model(images[i : i + batch_size]).argmax(dim=1) for i in range(0, len(images), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long)


def heldout_accuracy(model: DigitClassifier) -> Tuple[float, int, int]:
    """``(accuracy, correct, total)`` of ``model`` on the 300 held-out ``"test"`` digits."""
    images, labels = load_digits_tensors("test")
    correct = int((predict(model, images) == labels).sum())
    total = int(len(labels))
    return correct / total, correct, total


# --------------------------------------------------------------------------
# Saving and loading
# --------------------------------------------------------------------------


def save_digit_classifier(
    model: DigitClassifier,
    path: Union[str, Path] = SHIPPED_WEIGHTS,
    extra_metadata: Optional[Dict[str, Any]] = None,
) -> Path:
    """Write ``model``'s weights (float32) to a safetensors file with self-describing metadata.

    Metadata (all strings, as safetensors requires): ``"format"``
    (:data:`FORMAT`), ``"config"`` (JSON of :attr:`DigitClassifier.config`),
    ``"num_parameters"``, ``"training"`` (JSON of ``model.training_info`` if
    set), and every entry of ``extra_metadata`` (non-strings JSON-encoded),
    e.g. ``heldout_accuracy``.
    """
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()}
    metadata = {
        "format": FORMAT,
        "config": json.dumps(model.config, sort_keys=True),
        "num_parameters": str(sum(p.numel() for p in model.parameters())),
    }
    info = getattr(model, "training_info", None)
    if info:
        metadata["training"] = json.dumps(info, sort_keys=True)
        metadata["seed"] = str(info["seed"])
    for key, value in (extra_metadata or {}).items():
        metadata[str(key)] = value if isinstance(value, str) else json.dumps(value)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    tmp.replace(path)
    return path


def load_digit_classifier(
    path: Union[str, Path, None] = None,
    device: Union[str, torch.device, None] = None,
) -> DigitClassifier:
    """Load a classifier written by :func:`save_digit_classifier`; by default the shipped one.

    Reads the safetensors file only (no pickle), rebuilds the architecture from
    its ``"config"`` metadata, loads the weights strictly and returns the model
    in eval mode with gradients off. ``model.metadata`` holds the file's
    metadata with JSON entries decoded (e.g. ``model.metadata["heldout_accuracy"]``,
    ``model.metadata["seed"]``).
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = SHIPPED_WEIGHTS if path is None else Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"digit classifier weights {str(path)!r} not found; "
            "run `python scripts/train_digit_classifier.py` to write them"
        )
    with safe_open(str(path), framework="pt") as f:
        raw = f.metadata() or {}
    if raw.get("format") != FORMAT:
        raise ValueError(f"{str(path)!r} is not a digit classifier file (format {raw.get('format')!r}, expected {FORMAT!r})")
    metadata: Dict[str, Any] = {}
    for key, value in raw.items():
        try:
            metadata[key] = json.loads(value)
        except (json.JSONDecodeError, TypeError):
            metadata[key] = value
    metadata["format"] = raw["format"]
    model = DigitClassifier(**metadata["config"])
    model.load_state_dict(load_file(str(path)), strict=True)
    model.requires_grad_(False)
    model.eval()
    if device is not None:
        model.to(device)
    model.metadata = metadata
    return model
