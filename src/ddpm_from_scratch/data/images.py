"""The data side of training: loading image datasets, validating them, and
turning images into model inputs.

Every dataset goes through the Hugging Face ``datasets`` library:

* by default, scikit-learn's bundled 8x8 UCI handwritten digits (no download),
  wrapped as a :class:`datasets.Dataset` with an ``Image`` column ``"image"``
  and a ``ClassLabel`` column ``"label"``, split once and deterministically into
  a training part and a held-out test part (:func:`load_digits_dataset`);
* a local folder of image files, through the ``imagefolder`` builder;
* a Hub dataset by name, through :func:`datasets.load_dataset`, or a folder
  written with :meth:`datasets.Dataset.save_to_disk`, through
  :func:`datasets.load_from_disk` (:func:`load_image_dataset`).

Images become float tensors of shape ``(C, H, W)`` with 8-bit pixel values
``x`` mapped to ``x / 127.5 - 1`` (so into ``[-1, 1]``) by
:class:`ImageTransform`; this module uses PIL, NumPy and torch only, no
torchvision.

Problems that would otherwise surface mid-training are caught before it starts,
with errors that name the offending path or value: a missing or empty image
folder, unreadable image files, a missing image column
(:func:`check_image_column`) and a resolution that the U-Net cannot halve
evenly (:func:`check_resolution`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import datasets
import numpy as np
import torch
from PIL import Image

__all__ = [
    "DIGITS_SPLIT_SEED",
    "DIGITS_TEST_SIZE",
    "DIGITS_RESOLUTION",
    "DIGITS_CHANNELS",
    "IMAGE_EXTENSIONS",
    "digits_split_indices",
    "load_digits_dataset",
    "load_image_dataset",
    "find_image_files",
    "verify_image_files",
    "check_image_folder",
    "check_image_column",
    "check_resolution",
    "ImageTransform",
    "build_transform",
    "make_preprocess",
    "with_image_transform",
]

PathLike = Union[str, "os.PathLike[str]"]

# --------------------------------------------------------------------------
# Embedded digits
# --------------------------------------------------------------------------

#: Seed of the one fixed train/test split of the digits. Changing it changes
#: which images are held out, so evaluations made before and after would not be
#: comparable: leave it alone.
DIGITS_SPLIT_SEED = 20_240_917
#: Number of digits held out for evaluation (1/6 of 1,797, rounded).
DIGITS_TEST_SIZE = 300
#: Native side length of the digits images, in pixels.
DIGITS_RESOLUTION = 8
#: The digits are grayscale.
DIGITS_CHANNELS = 1
#: The digits' pixel values run from 0 to this.
_DIGITS_MAX_VALUE = 16

_SPLITS = ("train", "test")


def _load_sklearn_digits() -> Tuple[np.ndarray, np.ndarray]:
    """The raw digits: images ``(1797, 8, 8)`` in 0..16 and labels ``(1797,)``."""
    from sklearn.datasets import load_digits  # bundled with scikit-learn

    bunch = load_digits()
    return bunch.images, bunch.target


def _digits_to_uint8(images: np.ndarray) -> np.ndarray:
    """Map digit values 0..16 to 0..255 as ``round(v * 255 / 16)``.

    The values are integers, so the only tie is v = 8 (127.5), which both
    round-half-even and round-half-up send to 128.
    """
    scaled = np.rint(np.asarray(images, dtype=np.float64) * 255.0 / _DIGITS_MAX_VALUE)
    return scaled.astype(np.uint8)


def digits_split_indices() -> Dict[str, np.ndarray]:
    """Indices into ``sklearn.datasets.load_digits()`` of each split.

    The split is made once, with the fixed seed :data:`DIGITS_SPLIT_SEED`,
    stratified by label: :data:`DIGITS_TEST_SIZE` images go to ``"test"``, the
    rest to ``"train"``. Each array is sorted ascending; the two are disjoint and
    together cover every image.
    """
    from sklearn.model_selection import train_test_split

    _, labels = _load_sklearn_digits()
    indices = np.arange(len(labels))
    train, test = train_test_split(
        indices,
        test_size=DIGITS_TEST_SIZE,
        stratify=labels,
        random_state=DIGITS_SPLIT_SEED,
        shuffle=True,
    )
    return {"train": np.sort(train), "test": np.sort(test)}


def _check_split(split: str) -> None:
    if split not in _SPLITS:
        raise ValueError(
            f"unknown digits split {split!r}; expected one of {', '.join(map(repr, _SPLITS))}"
        )


def load_digits_dataset(split: str = "train") -> datasets.Dataset:
    """The embedded 8x8 digits as a :class:`datasets.Dataset`; nothing is downloaded.

    Columns: ``"image"`` (an ``Image`` feature; each image is 8x8, mode ``"L"``,
    values ``round(v * 255 / 16)`` of the original 0..16) and ``"label"`` (a
    ``ClassLabel`` with names ``"0"`` .. ``"9"``). Rows keep scikit-learn's order
    within the split (see :func:`digits_split_indices`).

    ``split`` is ``"train"`` (1,497 images, the only part training may see) or
    ``"test"`` (300 held-out images for evaluation); anything else raises
    ``ValueError``. Every call builds a fresh dataset with the same contents.
    """
    _check_split(split)
    images, labels = _load_sklearn_digits()
    idx = digits_split_indices()[split]
    pixels = _digits_to_uint8(images[idx])
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "label": datasets.ClassLabel(names=[str(d) for d in range(10)]),
        }
    )
    return datasets.Dataset.from_dict(
        {
            "image": [Image.fromarray(p) for p in pixels],
            "label": [int(y) for y in labels[idx]],
        },
        features=features,
        split=datasets.Split.TRAIN if split == "train" else datasets.Split.TEST,
    )


# --------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------


def _image_extensions() -> frozenset:
    try:  # the imagefolder builder's own list, so both agree on what an image is
        from datasets.packaged_modules.imagefolder.imagefolder import ImageFolder

        return frozenset(ext.lower() for ext in ImageFolder.EXTENSIONS)
    except Exception:  # pragma: no cover - layout of a different datasets version
        return frozenset(
            {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
        )


#: File extensions (lower case, with the dot) treated as images: the same list
#: as the ``imagefolder`` builder's.
IMAGE_EXTENSIONS = _image_extensions()

#: How many offending file names an error message lists before summarising.
_MAX_LISTED = 20


def find_image_files(folder: PathLike) -> List[Path]:
    """Image files under ``folder``, recursively, sorted by path.

    Follows the ``imagefolder`` builder's rules: a file counts when its
    extension (in any case) is in :data:`IMAGE_EXTENSIONS`; hidden files and
    folders (name starting with ``"."``) and folders whose name starts with
    ``"__"`` are skipped. The folder is not checked for existence here (see
    :func:`check_image_folder`).
    """
    root = Path(folder)
    found: List[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "__")))
        for name in filenames:
            if name.startswith("."):
                continue
            if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
                found.append(Path(dirpath) / name)
    return sorted(found)


def verify_image_files(paths: Sequence[PathLike]) -> None:
    """Raise ``ValueError`` naming every file in ``paths`` that PIL cannot read.

    Each file is opened and checked with :meth:`PIL.Image.Image.verify`, which
    reads the header and the file's structure (and, for PNG, checks the chunk
    checksums) without decoding all pixels, so it is cheap. It cannot catch
    every corruption: e.g. a JPEG whose compressed data is damaged but whose
    markers are intact passes, and would fail only when decoded.
    """
    bad: List[str] = []
    for path in paths:
        try:
            with Image.open(path) as img:
                img.verify()
        except Exception as exc:  # any failure to open or verify: report the file
            bad.append(f"{path} ({type(exc).__name__}: {exc})")
    if bad:
        listed = "\n  ".join(bad[:_MAX_LISTED])
        more = f"\n  ... and {len(bad) - _MAX_LISTED} more" if len(bad) > _MAX_LISTED else ""
        raise ValueError(
            f"{len(bad)} image file(s) cannot be read; fix or remove them before training:\n"
            f"  {listed}{more}"
        )


def check_image_folder(folder: PathLike, verify: bool = True) -> List[Path]:
    """Check a folder of training images before training starts; return its image files.

    Raises:
        FileNotFoundError: ``folder`` does not exist (or is not a folder); the
            message names it.
        ValueError: it holds no image files (see :func:`find_image_files`); the
            message names the folder and the extensions looked for.
        ValueError: with ``verify`` (the default), any image file that cannot
            be opened and verified by PIL; the message names each such file
            (see :func:`verify_image_files`). The choice is to fail up front,
            naming the files, rather than skip them silently or crash mid-run.
    """
    root = Path(folder)
    if not root.exists():
        raise FileNotFoundError(f"image folder {str(root)!r} does not exist")
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {str(root)!r} is not a folder")
    files = find_image_files(root)
    if not files:
        raise ValueError(
            f"image folder {str(root)!r} contains no image files "
            f"(looked for extensions such as .png, .jpg, .jpeg, .bmp, .webp)"
        )
    if verify:
        verify_image_files(files)
    return files


def check_image_column(dataset: datasets.Dataset, image_column: str = "image") -> None:
    """Raise ``ValueError`` if ``dataset`` has no column ``image_column``.

    The message names the missing column and lists the available ones.
    """
    columns = list(dataset.column_names or [])
    if image_column not in columns:
        raise ValueError(
            f"dataset has no image column {image_column!r}; available columns: "
            f"{', '.join(map(repr, columns)) or '(none)'}"
        )


def check_resolution(resolution: int, num_downsamples: int) -> None:
    """Raise ``ValueError`` unless the U-Net can halve ``resolution`` evenly.

    A U-Net that down-samples ``num_downsamples`` times by 2 needs a positive
    ``resolution`` that is a multiple of ``2 ** num_downsamples``; the message
    names the resolution and that multiple.
    """
    if isinstance(num_downsamples, bool) or not isinstance(num_downsamples, (int, np.integer)):
        raise ValueError(f"num_downsamples must be an integer, got {num_downsamples!r}")
    if num_downsamples < 0:
        raise ValueError(f"num_downsamples must be >= 0, got {num_downsamples}")
    if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)):
        raise ValueError(f"resolution must be an integer, got {resolution!r}")
    multiple = 2 ** int(num_downsamples)
    if resolution < 1 or resolution % multiple != 0:
        raise ValueError(
            f"resolution {resolution} is not usable: the U-Net down-samples "
            f"{num_downsamples} time(s) by 2, so the resolution must be a positive "
            f"multiple of {multiple}"
        )


# --------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------


def _is_saved_to_disk(path: Path) -> bool:
    """Whether ``path`` is a folder written by ``save_to_disk`` (Dataset or DatasetDict)."""
    return path.is_dir() and (
        (path / "state.json").is_file() or (path / "dataset_dict.json").is_file()
    )


def _pick_split(loaded: Any, split: str, source: str) -> datasets.Dataset:
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise ValueError(
                f"dataset {source!r} has no split {split!r}; available splits: "
                f"{', '.join(map(repr, loaded.keys()))}"
            )
        loaded = loaded[split]
    if not isinstance(loaded, datasets.Dataset):
        raise ValueError(
            f"dataset {source!r} loaded as {type(loaded).__name__}; a map-style "
            "datasets.Dataset is needed (streaming datasets are not supported)"
        )
    return loaded


def load_image_dataset(
    dataset_name: Optional[str] = None,
    train_data_dir: Optional[PathLike] = None,
    image_column: str = "image",
    cache_dir: Optional[PathLike] = None,
    split: str = "train",
    verify_images: bool = True,
) -> datasets.Dataset:
    """Load the images to train on (or evaluate against) as a :class:`datasets.Dataset`.

    Exactly one source, or none:

    * ``train_data_dir``: a local folder of image files, loaded with the
      ``imagefolder`` builder (sub-folders become a ``"label"`` column; files
      are found as in :func:`find_image_files`). Before loading, the folder is
      checked with :func:`check_image_folder`: a missing folder raises
      ``FileNotFoundError``, a folder without image files raises ``ValueError``,
      and, unless ``verify_images`` is false, every image file is opened and
      verified with PIL and any unreadable or corrupt file fails the load with
      a ``ValueError`` naming the file(s).
    * ``dataset_name``: a folder written by ``save_to_disk`` is read with
      :func:`datasets.load_from_disk`; anything else (a Hub dataset id, or a
      local folder of data files) goes to :func:`datasets.load_dataset`. If it
      is a local folder of data files, the image files in it are verified as
      above (an empty one is allowed: it may hold, e.g., Parquet files).
    * neither: the embedded digits (:func:`load_digits_dataset`) of ``split``.

    ``split`` picks the split (``"train"`` by default); a missing one raises
    ``ValueError`` listing those available. ``cache_dir`` is passed to
    ``load_dataset``. The result must have a column ``image_column``
    (``ValueError`` listing the columns otherwise) and at least one row.

    Raises:
        ValueError: both ``dataset_name`` and ``train_data_dir`` given.
    """
    if dataset_name is not None and train_data_dir is not None:
        raise ValueError(
            f"give dataset_name ({dataset_name!r}) or train_data_dir "
            f"({str(train_data_dir)!r}), not both"
        )

    if train_data_dir is not None:
        folder = Path(train_data_dir)
        check_image_folder(folder, verify=verify_images)
        source = str(folder)
        loaded = datasets.load_dataset(
            "imagefolder",
            data_dir=str(folder),
            cache_dir=None if cache_dir is None else str(cache_dir),
            split=split,
        )
    elif dataset_name is not None:
        source = str(dataset_name)
        path = Path(os.path.expanduser(source))
        if _is_saved_to_disk(path):
            loaded = datasets.load_from_disk(str(path))
        else:
            if path.is_dir() and verify_images:
                verify_image_files(find_image_files(path))
            loaded = datasets.load_dataset(
                source,
                cache_dir=None if cache_dir is None else str(cache_dir),
                split=split,
            )
    else:
        source = "digits"
        loaded = load_digits_dataset(split)

    dataset = _pick_split(loaded, split, source)
    check_image_column(dataset, image_column)
    if len(dataset) == 0:
        raise ValueError(f"dataset {source!r} (split {split!r}) has no rows")
    return dataset


# --------------------------------------------------------------------------
# Transforms
# --------------------------------------------------------------------------

_MODE_FOR_CHANNELS = {1: "L", 3: "RGB"}


def _has_alpha(img: Image.Image) -> bool:
    return img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info


def _high_depth_to_uint8(img: Image.Image) -> Image.Image:
    """Bring single-band 16-/32-bit integer and float images to 8-bit ``"L"``.

    PIL's own ``convert("L")`` clips such values at 255 instead of scaling.
    16-bit modes (``"I;16*"``) are scaled by 255/65535; mode ``"I"`` is scaled
    likewise when its values exceed 255 (a 16-bit file opened as ``"I"``) and
    taken as 8-bit otherwise; mode ``"F"`` is taken as 0..255 and clipped.
    """
    arr = np.asarray(img).astype(np.float64)
    if img.mode.startswith("I;16") or (img.mode == "I" and arr.size and arr.max() > 255):
        arr = arr * (255.0 / 65535.0)
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8))


def _to_mode(img: Image.Image, channels: int) -> Image.Image:
    """Convert ``img`` to ``"L"`` (1 channel) or ``"RGB"`` (3 channels).

    Transparent images (alpha band, or a palette/"transparency" entry) are
    first composited over white, so hidden colour under transparent pixels
    never leaks in. Colour to gray uses PIL's ITU-R 601-2 luma.
    """
    target = _MODE_FOR_CHANNELS[channels]
    if img.mode == target:
        return img
    if img.mode.startswith("I") or img.mode == "F":
        img = _high_depth_to_uint8(img)
        return img if img.mode == target else img.convert(target)
    if _has_alpha(img):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba).convert("RGB")
        return img if target == "RGB" else img.convert(target)
    return img.convert(target)


class ImageTransform:
    """PIL image -> float tensor ``(channels, resolution, resolution)`` in [-1, 1].

    Steps, in order:

    1. Convert to ``"L"`` (``channels == 1``) or ``"RGB"`` (``channels == 3``);
       see :func:`_to_mode` for transparency and 16-bit images.
    2. Resize, bilinear (PIL's, which anti-aliases when shrinking):
       with ``center_crop``, the shorter side is scaled to ``resolution``
       (longer side ``int(resolution * long / short)``) and the central
       ``resolution x resolution`` square is cut out (offset
       ``(size - resolution) // 2``); without it, the image is resized straight
       to ``resolution x resolution`` (the aspect ratio is not kept). An image
       already of the target size is left untouched, so e.g. the 8x8 digits at
       ``resolution=8`` pass through exactly.
    3. With ``random_flip``, flip left-right with probability 1/2, drawn as
       ``torch.rand(1, generator=generator) < 0.5``: seed ``generator`` for
       reproducible flips (``None`` draws from torch's global generator, which
       ``torch.manual_seed`` seeds). Note that DataLoader worker processes each
       get a copy of the generator, hence the same stream of flips.
    4. To a float32 tensor ``(C, H, W)`` with each 8-bit value ``x`` mapped to
       ``x / 127.5 - 1``: 0 -> -1, 255 -> 1.
    """

    def __init__(
        self,
        resolution: int,
        channels: int,
        center_crop: bool = False,
        random_flip: bool = False,
        generator: Optional[torch.Generator] = None,
    ) -> None:
        if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)) or resolution < 1:
            raise ValueError(f"resolution must be a positive integer, got {resolution!r}")
        if channels not in _MODE_FOR_CHANNELS:
            raise ValueError(f"channels must be 1 or 3, got {channels!r}")
        self.resolution = int(resolution)
        self.channels = int(channels)
        self.center_crop = bool(center_crop)
        self.random_flip = bool(random_flip)
        self.generator = generator

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(resolution={self.resolution}, channels={self.channels}, "
            f"center_crop={self.center_crop}, random_flip={self.random_flip})"
        )

    def _resize(self, img: Image.Image) -> Image.Image:
        r = self.resolution
        w, h = img.size
        if (w, h) == (r, r):
            return img
        if not self.center_crop:
            return img.resize((r, r), resample=Image.Resampling.BILINEAR)
        short, long = min(w, h), max(w, h)
        if short != r:
            new_long = max(r, int(r * long / short))
            size = (r, new_long) if w <= h else (new_long, r)
            img = img.resize(size, resample=Image.Resampling.BILINEAR)
            w, h = img.size
        left, top = (w - r) // 2, (h - r) // 2
        return img.crop((left, top, left + r, top + r))

    def __call__(self, img: Image.Image) -> torch.Tensor:
        if not isinstance(img, Image.Image):
            raise TypeError(f"expected a PIL image, got {type(img).__name__}")
        img = self._resize(_to_mode(img, self.channels))
        arr = np.array(img, dtype=np.uint8)  # a writable copy
        if arr.ndim == 2:
            arr = arr[:, :, None]
        x = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))).to(torch.float32)
        x = x / 127.5 - 1.0
        if self.random_flip and bool(torch.rand(1, generator=self.generator).item() < 0.5):
            x = torch.flip(x, dims=[-1])
        return x


def random_horizontal_flip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image of the batch ``(B, C, H, W)`` flipped left-right with probability 1/2, drawn from `generator`.

    Drawn per batch from the training step's generator rather than per image in the data loader, so a
    resumed run flips exactly as an uninterrupted one (and worker processes cannot repeat a stream).
    """
    flip = torch.rand(images.shape[0], generator=generator, device=generator.device) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1).to(images.device), images.flip(-1), images)


def build_transform(
    resolution: int,
    channels: int,
    center_crop: bool = False,
    random_flip: bool = False,
    generator: Optional[torch.Generator] = None,
) -> ImageTransform:
    """An :class:`ImageTransform` with these settings (see there)."""
    return ImageTransform(resolution, channels, center_crop, random_flip, generator)


def make_preprocess(
    transform: Callable[[Image.Image], torch.Tensor],
    image_column: str = "image",
    output_key: str = "input",
) -> Callable[[Dict[str, List[Any]]], Dict[str, torch.Tensor]]:
    """A batch function for ``Dataset.with_transform`` / ``set_transform``.

    It maps a batch ``{image_column: [PIL images], ...}`` to
    ``{output_key: tensor (B, C, H, W)}``, applying ``transform`` to each image
    in order; other columns are dropped. Indexing one row of the transformed
    dataset then gives ``{output_key: tensor (C, H, W)}``.
    """

    def preprocess(batch: Dict[str, List[Any]]) -> Dict[str, torch.Tensor]:
        if image_column not in batch:
            raise ValueError(
                f"batch has no image column {image_column!r}; available columns: "
                f"{', '.join(map(repr, batch.keys()))}"
            )
        return {output_key: torch.stack([transform(img) for img in batch[image_column]])}

    return preprocess


def with_image_transform(
    dataset: datasets.Dataset,
    transform: Callable[[Image.Image], torch.Tensor],
    image_column: str = "image",
    output_key: str = "input",
) -> datasets.Dataset:
    """``dataset`` (unchanged) viewed through :func:`make_preprocess`.

    Checks the image column first, and decodes only that column on access.
    """
    check_image_column(dataset, image_column)
    return dataset.with_transform(
        make_preprocess(transform, image_column, output_key), columns=[image_column]
    )
