"""Training augmentation pipelines by name; validation/test data is never augmented.

`none` and `light` (plus optional flips) run as one batched tensor op on the device (`BatchAffine`):
per-image albumentations took 16 % of a `light` epoch on 2 CPU cores. `heavy` and `photo` use
albumentations per image in the loader (blur, noise, cutout and the TrivialAugment ops have no cheap
batched form here).
"""
from __future__ import annotations

import math
import os

import cv2
import numpy as np
import torch
import torch.nn.functional as F

# albumentations otherwise asks PyPI for a newer version at import: no network calls at run time.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
import albumentations as A


def resolve_flips(flips: str, in_chans: int) -> str:
    """The `flips` key with `auto` settled by the images: left-right for colour (photos are almost never changed by a
    mirror), none for grey (digits and text are)."""
    if flips != "auto":
        return flips
    return "h" if in_chans >= 3 else "none"


def trained_flips(augment: str, flips: str) -> str:
    """The flips a model saw in training (for test-time views): the `flips` key, plus left-right under the photo
    preset, which always mirrors."""
    if augment != "photo" or "h" in flips:
        return flips
    return "hv" if "v" in flips else "h"


def _flip_ops(flips: str) -> list:
    ops = []
    if "h" in flips:
        ops.append(A.HorizontalFlip(p=0.5))
    if "v" in flips:
        ops.append(A.VerticalFlip(p=0.5))
    return ops


class BatchAffine:
    """Random affine warp per image of a float NCHW batch in [0, 255]: shift up to `translate` of the
    size, scale in `scale`, rotation up to `rotate_deg`, optional random flips. Pixels warped in from outside the
    image are black (`fill` zeros) or its own border mirrored (reflection)."""

    def __init__(self, translate: float, scale: tuple[float, float], rotate_deg: float, flips: str,
                 fill: str = "zeros"):
        self.translate, self.scale, self.rotate_deg, self.flips, self.fill = translate, scale, rotate_deg, flips, fill

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n = len(x)

        def uniform(low: float, high: float) -> torch.Tensor:
            return low + (high - low) * torch.rand(n, generator=generator, device=x.device)

        angle = uniform(-self.rotate_deg, self.rotate_deg) * (math.pi / 180)
        cos, sin = angle.cos(), angle.sin()
        # Width and height scale independently (as albumentations' Affine does by default): more shapes.
        inv_sx, inv_sy = 1 / uniform(*self.scale), 1 / uniform(*self.scale)
        height, width = x.shape[2], x.shape[3]
        # theta maps output to input in affine_grid's [-1, 1] coordinates: the inverse of "scale, then
        # rotate, then shift", with the aspect ratio undone so a rotation is a rotation in pixels.
        theta = torch.zeros(n, 2, 3, device=x.device)
        theta[:, 0, 0], theta[:, 0, 1] = cos * inv_sx, sin * inv_sx * (height / width)
        theta[:, 1, 0], theta[:, 1, 1] = -sin * inv_sy * (width / height), cos * inv_sy
        # A shift of `translate` of the size is 2 * translate in [-1, 1] units, applied in output space.
        shift = torch.stack([uniform(-2 * self.translate, 2 * self.translate) for _ in range(2)], dim=1)
        theta[:, :, 2] = -(theta[:, :, :2] @ shift[:, :, None]).squeeze(-1)
        for axis, flag in ((0, "h"), (1, "v")):
            if flag in self.flips:  # mirror the sampling coordinate along that axis for half the images
                sign = torch.where(uniform(0, 1) < 0.5, -1.0, 1.0)
                theta[:, :, axis] *= sign[:, None]
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode=self.fill, align_corners=False)


def build_batch_augment(name: str, flips: str = "none", fill: str = "zeros") -> BatchAffine | None:
    """The on-device pipeline for `light` (and for `none` with flips); None where there is nothing to do. `fill`:
    what a warp brings in from outside the image (zeros, reflection)."""
    if name == "light":
        return BatchAffine(translate=0.1, scale=(0.9, 1.1), rotate_deg=10, flips=flips, fill=fill)
    if name == "none" and flips != "none":
        return BatchAffine(translate=0.0, scale=(1.0, 1.0), rotate_deg=0, flips=flips)
    return None


def trivial_augment_ops(border: dict) -> list:
    """TrivialAugment (Müller & Hutter 2021): one op per image, drawn uniformly, at a uniform random strength.
    The ops of torchvision's TrivialAugmentWide, with ranges narrowed where the wide ones wreck small images
    (translation 15 % instead of 32 px; brightness/contrast ±40 %)."""
    return [A.NoOp(),
            A.Affine(shear={"x": (-20, 20), "y": (0, 0)}, p=1.0, **border),
            A.Affine(shear={"x": (0, 0), "y": (-20, 20)}, p=1.0, **border),
            A.Affine(translate_percent={"x": (-0.15, 0.15), "y": (0, 0)}, p=1.0, **border),
            A.Affine(translate_percent={"x": (0, 0), "y": (-0.15, 0.15)}, p=1.0, **border),
            A.Affine(rotate=(-30, 30), p=1.0, **border),
            A.RandomBrightnessContrast(brightness_limit=0.4, contrast_limit=0, p=1.0),
            A.RandomBrightnessContrast(brightness_limit=0, contrast_limit=0.4, p=1.0),
            A.ColorJitter(brightness=0, contrast=0, saturation=0.5, hue=0, p=1.0),
            A.Sharpen(alpha=(0.1, 0.5), p=1.0),
            A.Posterize(num_bits=(4, 8), p=1.0),
            A.Solarize(threshold_range=(0.5, 1.0), p=1.0),
            A.AutoContrast(p=1.0),
            A.Equalize(p=1.0)]


def build_transforms(name: str, flips: str = "none", size_hw: tuple[int, int] | None = None) -> A.Compose | None:
    """The per-image albumentations pipeline run in the loader: `heavy`, `photo` and `randaugment` have one. `photo`
    crops back to `size_hw`, the cached images' size."""
    if name in ("none", "light"):
        return None
    flip_ops = _flip_ops(trained_flips(name, flips))
    border = {"border_mode": cv2.BORDER_CONSTANT, "fill": 0}
    if name == "photo":
        if size_hw is None:
            raise ValueError("the photo pipeline needs the images' size")
        ops = [A.RandomResizedCrop(size=size_hw, scale=(0.25, 1.0), p=1.0), *flip_ops,
               A.OneOf(trivial_augment_ops(border), p=1.0),
               # Random erasing (Zhong et al. 2020): one box of noise on a quarter of the images.
               A.CoarseDropout(num_holes_range=(1, 1), hole_height_range=(0.1, 0.4), hole_width_range=(0.1, 0.4),
                               fill="random", p=0.25)]
        return A.Compose(ops)
    if name == "randaugment":
        # FixMatch's strong view (Sohn et al. 2020): RandAugment with a random strength per op, then Cutout.
        ops = [A.SomeOf(trivial_augment_ops(border)[1:], n=2, p=1.0),
               A.CoarseDropout(num_holes_range=(1, 1), hole_height_range=(0.25, 0.5), hole_width_range=(0.25, 0.5),
                               fill=0, p=1.0)]
        return A.Compose(flip_ops + ops)
    if name == "heavy":
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
