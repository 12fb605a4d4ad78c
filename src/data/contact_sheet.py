"""A contact sheet: a grid of images with a caption each, saved as PNG (EDA, wrong predictions, review queues).

The grid is one picture on one axes, captions as text over it: a subplot per image cost ~2 s per sheet on 2 cores,
paid by every train.py run (wrong.png) and every tune.py trial."""
from __future__ import annotations

from pathlib import Path

import cv2
import matplotlib.pyplot as plt
import numpy as np

from src.core.atomic import save_figure

MAX_CELL_PX = 128  # larger images (EDA's photos) are shrunk to this side; a cell is 1.5 inches wide anyway
CAPTION_SHARE = 0.4  # of a cell's height, above its image, for up to three caption lines


def fit_cell(image: np.ndarray, cell_px: int) -> np.ndarray:
    """An (H, W, 3) uint8 copy of `image` (grey or RGB) no larger than cell_px on either side, aspect kept."""
    rgb = np.repeat(image, 3, axis=-1) if image.ndim == 3 and image.shape[-1] == 1 else image
    rgb = np.stack([rgb] * 3, axis=-1) if rgb.ndim == 2 else rgb
    scale = cell_px / max(rgb.shape[:2])
    if scale < 1:
        size = (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale)))
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    return rgb


def image_top(i: int, columns: int, height: int, pad: int, cell_px: int) -> int:
    """The canvas row where cell i's image starts: just under its caption band."""
    return (i // columns + 1) * height - pad - cell_px


def mosaic(images: list, columns: int, cell_px: int) -> tuple[np.ndarray, int, int, int]:
    """White canvas with each image at the top of its cell's lower part (the caption band above it); with the
    cell's width, height and padding in pixels."""
    pad = max(2, cell_px // 16)
    width, height = cell_px + 2 * pad, int(cell_px * (1 + CAPTION_SHARE)) + pad
    rows = max(1, int(np.ceil(len(images) / columns)))
    canvas = np.full((rows * height, columns * width, 3), 255, dtype=np.uint8)
    for i, image in enumerate(images):
        if image is None:  # an empty cell keeps rows aligned (e.g. one row per class)
            continue
        thumb = fit_cell(np.asarray(image), cell_px)
        top = image_top(i, columns, height, pad, cell_px)
        left = (i % columns) * width + pad + (cell_px - thumb.shape[1]) // 2
        canvas[top:top + thumb.shape[0], left:left + thumb.shape[1]] = thumb
    return canvas, width, height, pad


def contact_sheet(path: Path, images, captions: list[str], title: str, columns: int = 8) -> None:
    """A grid of uint8 (H, W, C) or (H, W) images (None = empty cell) with a caption above each, saved as PNG."""
    present = [np.asarray(image) for image in images if image is not None]
    cell_px = min(MAX_CELL_PX, max((max(image.shape[:2]) for image in present), default=32))
    canvas, width, height, pad = mosaic(list(images), columns, cell_px)
    rows = canvas.shape[0] // height
    fig, ax = plt.subplots(figsize=(1.5 * columns, 1.75 * rows + 0.4))
    ax.imshow(canvas, interpolation="nearest" if cell_px <= 64 else "antialiased")
    ax.axis("off")
    for i, (image, caption) in enumerate(zip(images, captions)):
        if image is not None and caption:
            ax.text((i % columns + 0.5) * width, image_top(i, columns, height, pad, cell_px) - pad / 2, caption,
                    fontsize=7, ha="center", va="bottom")
    if not len(images):
        ax.text(canvas.shape[1] / 2, canvas.shape[0] / 2, "none", ha="center", va="center")
    fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=1 - 0.4 / (1.75 * rows + 0.4))
    save_figure(path, fig)
    plt.close(fig)
