import math

import numpy as np
import pytest
import torch

from src.data.augment import BatchAffine, build_batch_augment, build_transforms, resolve_flips


@pytest.fixture
def batch():
    return torch.arange(3 * 1 * 6 * 5, dtype=torch.float32).reshape(3, 1, 6, 5)


def test_a_warp_with_no_range_is_the_identity(batch):
    same = BatchAffine(0.0, (1.0, 1.0), 0.0, "none")(batch, torch.Generator().manual_seed(0))
    assert torch.allclose(same, batch, atol=1e-4)


def test_flip_only_mirrors_some_images_exactly(batch):
    out = BatchAffine(0.0, (1.0, 1.0), 0.0, "h")(batch.repeat(8, 1, 1, 1), torch.Generator().manual_seed(0))
    flipped = [torch.allclose(o, batch[i % 3].flip(-1), atol=1e-4) for i, o in enumerate(out)]
    kept = [torch.allclose(o, batch[i % 3], atol=1e-4) for i, o in enumerate(out)]
    assert all(f or k for f, k in zip(flipped, kept)) and any(flipped) and any(kept)


def test_light_warp_keeps_shape_moves_pixels_and_is_seeded(batch):
    aug = build_batch_augment("light")
    a = aug(batch, torch.Generator().manual_seed(1))
    b = aug(batch, torch.Generator().manual_seed(1))
    assert a.shape == batch.shape and torch.equal(a, b) and not torch.allclose(a, batch)
    assert not torch.equal(a, aug(batch, torch.Generator().manual_seed(2)))


def test_pipelines_by_name():
    assert build_batch_augment("none") is None and build_transforms("none") is None
    assert build_batch_augment("none", "hv") is not None
    assert build_transforms("light") is None and build_batch_augment("light") is not None
    heavy = build_transforms("heavy", "h")
    assert build_batch_augment("heavy") is None
    out = heavy(image=np.zeros((28, 28, 1), np.uint8))["image"]
    assert out.shape[:2] == (28, 28)


def _warp_of_a_point(aug: BatchAffine, height: int, width: int, seed: int):
    """Where the bright pixel at the centre, and one at a fixed offset, land after the warp."""
    x = torch.zeros(1, 1, height, width)
    cy, cx = height // 2, width // 2
    x[0, 0, cy, cx] = 255
    out = aug(x, torch.Generator().manual_seed(seed))[0, 0]
    y, xx = divmod(int(out.argmax()), width)
    return y - cy, xx - cx


def test_light_shifts_stay_within_ten_percent_of_the_size():
    aug = BatchAffine(0.1, (1.0, 1.0), 0.0, "none")
    moves = [_warp_of_a_point(aug, 41, 161, s) for s in range(40)]
    assert max(abs(dy) for dy, _ in moves) <= round(0.1 * 41) + 1
    assert max(abs(dx) for _, dx in moves) <= round(0.1 * 161) + 1
    assert max(abs(dx) for _, dx in moves) > 0.05 * 161  # and they do move


def test_rotation_is_a_rotation_in_pixels_on_non_square_images():
    aug = BatchAffine(0.0, (1.0, 1.0), 10.0, "none")
    x = torch.zeros(2, 1, 41, 161)
    x[0, 0, 20, 30:131] = 255  # a horizontal line through the centre
    x[1, 0, 2:39, 80] = 255  # a vertical one
    out = aug(x.repeat(4, 1, 1, 1), torch.Generator().manual_seed(3))
    for k in range(4):
        rows = out[2 * k, 0].argmax(0)[40:121].float()  # the horizontal line's row in each central column
        cols = out[2 * k + 1, 0].argmax(1)[10:31].float()  # the vertical line's column in each central row
        tilt_h = math.degrees(math.atan((rows[-1] - rows[0]).item() / 80))
        tilt_v = math.degrees(math.atan((cols[-1] - cols[0]).item() / 20))
        assert abs(tilt_h) <= 10.5 and abs(tilt_v) <= 12  # a shear would tilt one line far more than the other


def test_vertical_flip_mirrors_rows(batch):
    out = BatchAffine(0.0, (1.0, 1.0), 0.0, "v")(batch.repeat(8, 1, 1, 1), torch.Generator().manual_seed(0))
    assert any(torch.allclose(o, batch[i % 3].flip(-2), atol=1e-4) for i, o in enumerate(out))


@pytest.mark.parametrize("flips, in_chans, used", [("auto", 3, "h"), ("auto", 1, "none"), ("v", 3, "v"),
                                                    ("none", 3, "none"), ("hv", 1, "hv")])
def test_auto_flips_mirror_colour_images_only_and_explicit_flips_stay(flips, in_chans, used):
    assert resolve_flips(flips, in_chans) == used


def test_the_reflection_fill_brings_in_the_image_s_own_border_and_zeros_bring_black():
    white = torch.full((8, 3, 32, 32), 255.0)  # a photo's light background
    generator = torch.Generator().manual_seed(0)
    reflected = build_batch_augment("light", fill="reflection")(white, generator=generator)
    assert reflected.min() > 254  # reflected border: still white
    black_fill = build_batch_augment("light")(white, torch.Generator().manual_seed(0))  # the default: zeros
    assert black_fill.min() < 1  # the band a zero fill would add
