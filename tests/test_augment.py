import numpy as np
import pytest
import torch

from src.augment import BatchAffine, build_batch_augment, build_transforms


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
