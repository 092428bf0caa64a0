"""Sample quality for any images: Fréchet distance and KID in a pretrained image encoder's features.

FID's Inception network is one choice of feature extractor; Stein et al. (2023, "Exposing flaws of
generative model evaluation metrics") found self-supervised DINOv2 features rank generators closer
to human judgement, and recommend the Fréchet distance in DINOv2-ViT-L/14 features (FD_DINOv2).
Here any transformers image model serves: ``facebook/dinov2-small`` (the default, 22 M parameters),
``facebook/dinov2-large`` for the paper's FD_DINOv2, a CLIP model, or a local folder holding one.
The weights are read with ``from_pretrained`` (a Hub id is downloaded once into the Hugging Face
cache; offline, a cached copy or a local folder is used) and only from safetensors.

A sample's feature is the encoder's image embedding: ``get_image_features`` for models that have
one (CLIP), else the pooled output (DINOv2: the normalised class token), else the class token.
The distances are those of :mod:`ddpm_from_scratch.metrics` (`frechet_distance`, `kid`), so the
numbers are comparable only with numbers from the same encoder, image count and reference set.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .metrics import DEFAULT_KID_NUM_SUBSETS, DEFAULT_KID_SUBSET_SIZE, frechet_distance, kid
from ..hub.loading import looks_like_a_path

DEFAULT_FEATURE_MODEL = "facebook/dinov2-small"


@dataclass
class ImageEncoder:
    """A transformers image model and its image processor, with the id they were loaded from."""

    model: Any
    processor: Any
    name: str

    @torch.no_grad()
    def encode(self, images: torch.Tensor, batch_size: int = 64) -> np.ndarray:
        """Features ``(N, D)`` (float64) of ``images`` ``(N, C, H, W)`` in [0, 1], C = 1 or 3.

        Each image goes through the processor as an 8-bit RGB picture (a grey image is repeated over
        three channels), as the encoder saw its training images: the processor resizes, crops and
        normalises it.
        """
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"images must be (N, 1 or 3, H, W), got shape {tuple(images.shape)}")
        pixels = (images.clamp(0, 1) * 255).round().to(torch.uint8)
        if pixels.shape[1] == 1:
            pixels = pixels.expand(-1, 3, -1, -1)
        pictures = [Image.fromarray(p.permute(1, 2, 0).cpu().numpy(), mode="RGB") for p in pixels]
        device = next(self.model.parameters()).device
        chunks = []
        for start in range(0, len(pictures), batch_size):
            inputs = self.processor(images=pictures[start:start + batch_size], return_tensors="pt")
            pixel_values = inputs["pixel_values"].to(device=device, dtype=next(self.model.parameters()).dtype)
            chunks.append(image_embedding(self.model, pixel_values).double().cpu())
        return torch.cat(chunks).numpy()


def image_embedding(model: Any, pixel_values: torch.Tensor) -> torch.Tensor:
    """One vector per image: ``get_image_features`` (CLIP-like), else ``pooler_output``, else the class token."""
    if hasattr(model, "get_image_features"):
        features = model.get_image_features(pixel_values=pixel_values)
        return features if isinstance(features, torch.Tensor) else features.pooler_output
    outputs = model(pixel_values=pixel_values)
    pooled = getattr(outputs, "pooler_output", None)
    if pooled is not None:
        return pooled.reshape(len(pixel_values), -1)
    return outputs.last_hidden_state[:, 0]


def load_image_encoder(name: str = DEFAULT_FEATURE_MODEL, device: str | torch.device = "cpu",
                       **from_pretrained_kwargs: Any) -> ImageEncoder:
    """The transformers model and image processor at `name` (a Hub id or a local folder), in eval mode.

    ``from_pretrained_kwargs`` (``revision``, ``cache_dir``, ``token``, ``local_files_only``) go to both
    ``from_pretrained`` calls. A name that cannot be loaded raises ``ValueError`` naming it.
    """
    from transformers import AutoImageProcessor, AutoModel

    if looks_like_a_path(name) and not Path(name).expanduser().exists():
        raise ValueError(f"feature model {name!r} could not be loaded: no such folder")
    try:
        processor = AutoImageProcessor.from_pretrained(name, **from_pretrained_kwargs)
        model = AutoModel.from_pretrained(name, use_safetensors=True, **from_pretrained_kwargs)
    except (OSError, ValueError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"feature model {name!r} could not be loaded as a transformers image model with "
                         f"safetensors weights: {first_line}") from None
    return ImageEncoder(model=model.to(device).eval(), processor=processor, name=name)


def split_reference(images: torch.Tensor, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded random half of `images` (the floor's stand-in for samples) and the other half (the reference)."""
    if len(images) < 4:
        raise ValueError(f"the reference images must number at least 4 to split in two, got {len(images)}")
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    half = len(images) // 2
    return images[order[:half].sort().values], images[order[half:].sort().values]


def feature_distances(features: np.ndarray, reference_features: np.ndarray, seed: int = 0,
                      kid_subset_size: int = DEFAULT_KID_SUBSET_SIZE,
                      kid_num_subsets: int = DEFAULT_KID_NUM_SUBSETS) -> dict[str, float | int]:
    """FD and KID between two feature sets, with their sizes."""
    kid_result = kid(features, reference_features, subset_size=kid_subset_size, num_subsets=kid_num_subsets,
                     seed=seed)
    return {"fd": frechet_distance(features, reference_features), "kid_mean": kid_result.mean,
            "kid_std": kid_result.std, "num_images": int(len(features)),
            "num_reference": int(len(reference_features))}


def encoder_sample_quality(samples: torch.Tensor, reference: torch.Tensor, encoder: ImageEncoder,
                           seed: int = 0, batch_size: int = 64) -> dict[str, Any]:
    """FD and KID of `samples` against `reference` in `encoder`'s features, with a floor and a ceiling.

    Both image sets are ``(N, C, H, W)`` in [0, 1]. The reference is split in two halves
    (`split_reference`): the samples are compared with the second half; the floor is the first half
    (real images the comparison set does not contain; at most as many as there are samples); the
    ceiling is Gaussian noise (mean ½, std ½, clipped to [0, 1]) of the samples' count and shape. All
    three rows are measured against the same half, so they can be read against each other.
    """
    held, compared = split_reference(reference, seed)
    generator = torch.Generator().manual_seed(seed)
    held = held[:len(samples)]
    noise = (0.5 + 0.5 * torch.randn(samples.shape, generator=generator)).clamp(0, 1)
    compared_features = encoder.encode(compared, batch_size)
    rows = []
    for name, kind, images in (("real images (other half of the reference)", "floor", held),
                               ("gaussian noise", "ceiling", noise)):
        rows.append({"name": name, "kind": kind,
                     **feature_distances(encoder.encode(images, batch_size), compared_features, seed)})
    quality = feature_distances(encoder.encode(samples, batch_size), compared_features, seed)
    return {"model": encoder.name, "feature_dim": int(compared_features.shape[1]), **quality,
            "reference_rows": rows}
