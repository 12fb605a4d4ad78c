"""Training augmentation pipelines by name (albumentations); validation/test data is never augmented."""
from __future__ import annotations

import os

import cv2
import numpy as np

# albumentations otherwise asks PyPI for a newer version at import: no network calls at run time.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
import albumentations as A  # noqa: E402


def _flip_ops(flips: str) -> list:
    ops = []
    if "h" in flips:
        ops.append(A.HorizontalFlip(p=0.5))
    if "v" in flips:
        ops.append(A.VerticalFlip(p=0.5))
    return ops


def build_transforms(name: str, flips: str = "none") -> A.Compose | None:
    """`none`: no pipeline; `light`: small shifts/scale/rotation; `heavy`: adds shear, blur, noise, cutout."""
    flip_ops = [] if flips == "none" else _flip_ops(flips)
    if name == "none":
        return A.Compose(flip_ops) if flip_ops else None
    border = {"border_mode": cv2.BORDER_CONSTANT, "fill": 0}
    if name == "light":
        ops = [A.Affine(translate_percent=(-0.1, 0.1), scale=(0.9, 1.1), rotate=(-10, 10), p=1.0, **border)]
    elif name == "heavy":
        ops = [A.Affine(translate_percent=(-0.12, 0.12), scale=(0.85, 1.15), rotate=(-15, 15), shear=(-10, 10),
                        p=1.0, **border),
               A.OneOf([A.GaussianBlur(blur_limit=(3, 3)), A.GaussNoise(std_range=(0.03, 0.1))], p=0.3),
               A.CoarseDropout(num_holes_range=(1, 2), hole_height_range=(0.1, 0.25),
                               hole_width_range=(0.1, 0.25), fill=0, p=0.5)]
    else:
        raise ValueError(f"unknown augmentation pipeline {name!r}")
    return A.Compose(ops + flip_ops)


def augment_batch(transform: A.Compose, images: np.ndarray) -> np.ndarray:
    """Apply a pipeline to each uint8 (H, W, C) image of a batch; keeps the channel axis."""
    out = np.empty_like(images)
    for i, image in enumerate(images):
        result = transform(image=image)["image"]
        out[i] = result[:, :, None] if result.ndim == 2 else result
    return out
