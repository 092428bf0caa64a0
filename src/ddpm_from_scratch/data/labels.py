"""Class labels for class-conditional training: which column holds them, their names, and the batches that carry them.

A dataset's labels come from a column: ``"label"`` for the embedded digits (a ``ClassLabel`` of "0"…"9") and for an
image folder's class sub-folders (the ``imagefolder`` builder names them), or any integer ``--label_column`` of a
`datasets` dataset. The classes are 0…K−1; a conditional U-Net gets ``num_class_embeds = K + 1`` rows, the last one
the null label ∅ that classifier-free guidance trains with and samples from.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List

import datasets
import torch
from PIL import Image

from .images import check_image_column


def class_names(dataset: datasets.Dataset, label_column: str = "label") -> List[str]:
    """The names of the classes 0…K−1 of ``dataset[label_column]``, refusing what cannot condition a model.

    A ``ClassLabel`` column gives its own names (the digits' "0"…"9", an image folder's sub-folder names);
    a plain integer column gives "0"…"K−1", K = its largest value + 1.

    Raises:
        ValueError: naming the column: it is missing, not integer, holds a negative label, or has fewer than two
            classes.
    """
    if label_column not in dataset.column_names:
        raise ValueError(f"--class_conditional: the dataset has no label column {label_column!r} (columns: "
                         f"{', '.join(dataset.column_names)}); name one with --label_column")
    feature = dataset.features[label_column]
    values = dataset[label_column]
    if isinstance(feature, datasets.ClassLabel):
        names = list(feature.names)
    else:
        dtype = getattr(feature, "dtype", None)
        if dtype is None or not (dtype.startswith("int") or dtype.startswith("uint")):
            raise ValueError(f"--label_column {label_column!r} holds {dtype or type(feature).__name__} values; "
                             "class labels must be integers")
        names = [str(k) for k in range(max(values) + 1)] if values else []
    if values and min(values) < 0:
        raise ValueError(f"--label_column {label_column!r} holds the negative label {min(values)}")
    present = sorted(set(values))
    if len(present) < 2:
        raise ValueError(f"--class_conditional needs at least two classes, but {label_column!r} holds "
                         f"{len(present)} ({', '.join(names[k] for k in present) or 'none'})")
    return names


def with_image_and_label_transform(
    dataset: datasets.Dataset,
    transform: Callable[[Image.Image], torch.Tensor],
    image_column: str = "image",
    label_column: str = "label",
) -> datasets.Dataset:
    """``dataset`` viewed as the training loop's batches ``{"input": (C, H, W), "class_labels": int64 ()}``."""
    check_image_column(dataset, image_column)

    def preprocess(batch: Dict[str, List[Any]]) -> Dict[str, torch.Tensor]:
        return {"input": torch.stack([transform(img) for img in batch[image_column]]),
                "class_labels": torch.as_tensor(batch[label_column], dtype=torch.long)}

    return dataset.with_transform(preprocess, columns=[image_column, label_column])


def drop_class_labels(class_labels: torch.Tensor, null_label: int, probability: float,
                      generator: torch.Generator) -> torch.Tensor:
    """Each label replaced by the null label ∅ with ``probability`` (classifier-free guidance's p_uncond), drawn from
    ``generator``: one network then learns ε(x_t, c) and ε(x_t, ∅) (Ho & Salimans 2021)."""
    drop = torch.rand(class_labels.shape, generator=generator, device=generator.device) < probability
    return torch.where(drop.to(class_labels.device), torch.full_like(class_labels, null_label), class_labels)
