"""Sample grids: many small images tiled into one readable PNG.

One function draws every grid of the package (training, ``scripts/sample.py``, evaluation, the
model card's picture): 8×8 digits are unreadable at 1:1, so a grid is enlarged by a whole factor
with nearest-neighbour sampling (pixels stay sharp squares, no blur is invented) to at least
``DEFAULT_GRID_WIDTH`` pixels, and a thin gap keeps neighbouring images from running together.
"""

from __future__ import annotations

import math
from typing import Sequence

from PIL import Image

DEFAULT_GRID_WIDTH = 512
# Gap between tiles, in pixels of the finished grid, and its grey level (mid-grey reads as a
# separator on both black-background digits and light photographs).
GRID_GAP = 2
GRID_GAP_VALUE = 128


def grid_shape(num_images: int) -> tuple[int, int]:
    """The most nearly square (rows, cols) with rows · cols = num_images."""
    rows = int(math.isqrt(num_images))
    while num_images % rows:
        rows -= 1
    return rows, num_images // rows


def grid_scale_for_width(tile_width: int, cols: int, min_width: int, gap: int = GRID_GAP) -> int:
    """The smallest whole factor s with cols · tile_width · s + (cols − 1) · gap ≥ min_width (at least 1)."""
    room = min_width - (cols - 1) * gap
    return max(1, -(-room // (cols * tile_width)))


def image_grid(
    images: Sequence[Image.Image],
    scale: int | None = None,
    min_width: int = DEFAULT_GRID_WIDTH,
    gap: int = GRID_GAP,
    rows: int | None = None,
) -> Image.Image:
    """Tile `images` row by row, each enlarged `scale` times (nearest neighbour), `gap` pixels apart.

    Args:
        images: equally sized images; the grid takes the first one's mode.
        scale: the whole enlargement factor; by default the smallest that makes the grid at least
            `min_width` pixels wide (1 when it already is: large images stay at full resolution).
        min_width: the width the default `scale` reaches.
        gap: pixels of mid-grey between neighbouring tiles (none around the border).
        rows: the number of rows; by default the most nearly square shape (`grid_shape`).
    """
    images = list(images)
    if not images:
        raise ValueError("image_grid needs at least one image")
    if rows is None:
        rows, cols = grid_shape(len(images))
    elif rows < 1 or len(images) % rows:
        raise ValueError(f"rows={rows} does not divide {len(images)} images into full rows")
    else:
        cols = len(images) // rows
    width, height = images[0].size
    if any(image.size != (width, height) for image in images):
        raise ValueError(f"image_grid needs equally sized images; sizes {sorted({im.size for im in images})}")
    if scale is None:
        scale = grid_scale_for_width(width, cols, min_width, gap)
    if not isinstance(scale, int) or scale < 1:
        raise ValueError(f"grid scale must be a positive integer, got {scale!r}")
    if gap < 0:
        raise ValueError(f"grid gap must be non-negative, got {gap}")

    mode = images[0].mode
    tile_w, tile_h = width * scale, height * scale
    fill = GRID_GAP_VALUE if mode in ("L", "I", "F") else (GRID_GAP_VALUE,) * len(mode)
    grid = Image.new(mode, (cols * tile_w + (cols - 1) * gap, rows * tile_h + (rows - 1) * gap), fill)
    for index, image in enumerate(images):
        row, col = divmod(index, cols)
        tile = image.convert(mode)
        if scale > 1:
            tile = tile.resize((tile_w, tile_h), Image.Resampling.NEAREST)
        grid.paste(tile, (col * (tile_w + gap), row * (tile_h + gap)))
    return grid
