"""Sample grids: many small images tiled into one PNG."""

from __future__ import annotations

import math
from typing import Sequence

from diffusers.utils import make_image_grid
from PIL import Image


def grid_shape(num_images: int) -> tuple[int, int]:
    """The most nearly square (rows, cols) with rows · cols = num_images."""
    rows = int(math.isqrt(num_images))
    while num_images % rows:
        rows -= 1
    return rows, num_images // rows


def image_grid(images: Sequence[Image.Image]) -> Image.Image:
    """Tile `images` row by row into the most nearly square grid."""
    rows, cols = grid_shape(len(images))
    return make_image_grid(list(images), rows=rows, cols=cols)
