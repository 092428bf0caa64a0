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
