"""Sample grids: the most nearly square tiling, enlarged to a readable width, with a gap between tiles."""

import numpy as np
import pytest
from PIL import Image

from ddpm_from_scratch.figures.grid import DEFAULT_GRID_WIDTH, GRID_GAP_VALUE, grid_shape, image_grid


@pytest.mark.parametrize("n, shape", [(64, (8, 8)), (6, (2, 3)), (7, (1, 7)), (1, (1, 1)), (12, (3, 4))])
def test_grid_shape_is_the_most_square_factorisation(n, shape):
    assert grid_shape(n) == shape


def test_image_grid_places_images_row_by_row_with_a_gap_between_them():
    images = [Image.new("L", (2, 2), value) for value in (0, 50, 100, 150, 200, 250)]
    grid = image_grid(images, scale=1, gap=1)
    assert grid.size == (3 * 2 + 2, 2 * 2 + 1)
    # Tile (r, c) starts at (c·(2+1), r·(2+1)).
    assert [grid.getpixel((x, y)) for y in (0, 3) for x in (0, 3, 6)] == [0, 50, 100, 150, 200, 250]
    assert grid.getpixel((2, 0)) == GRID_GAP_VALUE and grid.getpixel((0, 2)) == GRID_GAP_VALUE


def test_by_default_64_digits_are_enlarged_to_at_least_512_pixels():
    digits = [Image.new("L", (8, 8), 255) for _ in range(64)]
    grid = image_grid(digits)
    assert grid.width >= DEFAULT_GRID_WIDTH == 512
    # The smallest whole factor: 8 columns of 8 px, 7 gaps of 2 px: ×8 gives 526, ×7 only 462.
    assert grid.size == (8 * 8 * 8 + 7 * 2,) * 2


def test_enlarging_is_nearest_neighbour_so_each_pixel_becomes_a_solid_square():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(8, 8), dtype=np.uint8)
    grid = np.asarray(image_grid([Image.fromarray(pixels)], scale=5))
    np.testing.assert_array_equal(grid, np.kron(pixels, np.ones((5, 5), dtype=np.uint8)))


def test_an_explicit_scale_overrides_the_minimum_width():
    images = [Image.new("L", (8, 8), 255) for _ in range(4)]
    assert image_grid(images, scale=1, gap=0).size == (16, 16)
    assert image_grid(images, scale=3, gap=2).size == (2 * 24 + 2, 2 * 24 + 2)


def test_a_grid_already_wide_enough_is_left_at_full_resolution():
    images = [Image.new("RGB", (300, 300), (255, 0, 0)) for _ in range(4)]
    grid = image_grid(images)
    assert grid.size == (602, 602)
    assert grid.getpixel((300, 0)) == (GRID_GAP_VALUE,) * 3


def test_rows_can_be_chosen():
    images = [Image.new("L", (2, 2), 0) for _ in range(6)]
    assert image_grid(images, scale=1, gap=0, rows=1).size == (12, 2)
    with pytest.raises(ValueError, match="rows=4"):
        image_grid(images, rows=4)


@pytest.mark.parametrize("scale", [0, -2, 1.5])
def test_a_scale_that_is_not_a_positive_whole_number_is_refused(scale):
    with pytest.raises(ValueError, match="scale"):
        image_grid([Image.new("L", (2, 2))], scale=scale)


def test_images_of_different_sizes_are_refused():
    with pytest.raises(ValueError, match="equally sized"):
        image_grid([Image.new("L", (2, 2)), Image.new("L", (3, 3))])
