"""Sample grids tile images into the most nearly square shape."""

import pytest
from PIL import Image

from ddpm_from_scratch.grid import grid_shape, image_grid


@pytest.mark.parametrize("n, shape", [(64, (8, 8)), (6, (2, 3)), (7, (1, 7)), (1, (1, 1)), (12, (3, 4))])
def test_grid_shape_is_the_most_square_factorisation(n, shape):
    assert grid_shape(n) == shape


def test_image_grid_places_images_row_by_row():
    images = [Image.new("L", (2, 2), value) for value in (0, 50, 100, 150, 200, 250)]
    grid = image_grid(images).convert("L")
    assert grid.size == (6, 4)
    assert [grid.getpixel((x, y)) for y in (0, 2) for x in (0, 2, 4)] == [0, 50, 100, 150, 200, 250]


def test_a_small_grid_is_enlarged_by_a_whole_factor_to_the_minimum_width():
    images = [Image.new("L", (8, 8), 255) for _ in range(4)]
    grid = image_grid(images, min_width=100)
    assert grid.size == (112, 112)  # 16 px wide, ×7 is the first whole factor reaching 100


def test_a_grid_already_wide_enough_is_left_at_full_resolution():
    images = [Image.new("L", (8, 8), 255) for _ in range(4)]
    assert image_grid(images, min_width=10).size == (16, 16)
