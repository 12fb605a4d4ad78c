"""A contact sheet: a grid of images with a caption each, saved as PNG (EDA, wrong predictions, review queues)."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from src.core.atomic import save_figure


def contact_sheet(path: Path, images: np.ndarray, captions: list[str], title: str, columns: int = 8) -> None:
    """A grid of uint8 (H, W, C) images (None = empty cell) with a caption above each, saved as PNG."""
    n = max(len(images), 1)
    rows = int(np.ceil(n / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(1.5 * columns, 1.75 * rows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, caption in zip(axes.flat, images, captions):
        if image is None:  # an empty cell keeps rows aligned (e.g. one row per class)
            continue
        ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=255)
        ax.set_title(caption, fontsize=7)
    if not len(images):
        axes.flat[0].text(0.5, 0.5, "none", ha="center", va="center")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(path, fig)
    plt.close(fig)
