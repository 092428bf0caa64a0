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


def image_grid(images: Sequence[Image.Image], min_width: int = 0) -> Image.Image:
    """Tile `images` row by row into the most nearly square grid.

    With `min_width`, a small grid is enlarged by an integer factor (nearest neighbour, so
    pixels stay sharp) to at least that width: a grid of 8×8 digits is unreadable at 1:1.
    """
    rows, cols = grid_shape(len(images))
    grid = make_image_grid(list(images), rows=rows, cols=cols)
    scale = -(-min_width // grid.width) if min_width > grid.width else 1
    if scale > 1:
        grid = grid.resize((grid.width * scale, grid.height * scale), Image.Resampling.NEAREST)
    return grid
