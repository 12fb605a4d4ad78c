"""The contact sheet: one picture of all cells (grey, RGB, large photos, empty cells) and a PNG for each."""
import cv2
import numpy as np

from src.data.contact_sheet import contact_sheet, fit_cell, mosaic


def test_a_large_photo_shrinks_to_the_cell_keeping_its_aspect_and_grey_becomes_rgb():
    photo = np.zeros((400, 200, 3), dtype=np.uint8)
    assert fit_cell(photo, 128).shape == (128, 64, 3)
    assert fit_cell(np.full((28, 28, 1), 7, dtype=np.uint8), 128).shape == (28, 28, 3)  # never enlarged
    assert fit_cell(np.full((28, 28), 7, dtype=np.uint8), 32)[0, 0].tolist() == [7, 7, 7]


def test_each_image_lands_in_its_own_cell_and_an_empty_cell_stays_white():
    images = [np.full((10, 10, 3), 10 * (k + 1), dtype=np.uint8) for k in range(3)]
    canvas, width, height, pad = mosaic([images[0], None, images[1], images[2]], columns=2, cell_px=10)
    assert canvas.shape == (2 * height, 2 * width, 3)
    top = height - pad - 10
    assert canvas[top + 5, pad + 5].tolist() == [10] * 3  # first cell
    assert (canvas[:height, width:] == 255).all()  # None: nothing drawn
    assert canvas[height + top + 5, pad + 5].tolist() == [20] * 3  # second row, first column
    assert canvas[height + top + 5, width + pad + 5].tolist() == [30] * 3


def test_sheets_of_mixed_images_and_of_none_are_written(tmp_path):
    rng = np.random.default_rng(0)
    mixed = [rng.integers(0, 255, (28, 28, 1), dtype=np.uint8), None,
             rng.integers(0, 255, (300, 500, 3), dtype=np.uint8)]
    contact_sheet(tmp_path / "mixed.png", mixed, ["a\nb", "", "c"], "mixed", columns=2)
    contact_sheet(tmp_path / "none.png", [], [], "nothing")
    for name in ("mixed.png", "none.png"):
        image = cv2.imread(str(tmp_path / name))
        assert image is not None and min(image.shape[:2]) > 50
