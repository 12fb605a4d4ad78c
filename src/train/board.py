"""TensorBoard event files for a fold run (runs/<exp>/fold<k>/tb/): scalars per epoch, a sample training
batch and the OOF confusion matrix. Optional: without the tensorboard package (or with --no-tensorboard)
nothing is written and nothing fails."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from src.core.interrupts import deferred_interrupts

TB_DIR = "tb"


def tensorboard_available() -> bool:
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401  (needs the tensorboard package)
    except ImportError:
        return False
    return True


class EpochBoard:
    """A SummaryWriter, or nothing when off; every method is then a no-op. Each call holds Ctrl-C / SIGTERM until
    it returns (deferred_interrupts): cut inside the writer, the close() in the run's cleanup would hang."""

    def __init__(self, run_dir: Path, enabled: bool):
        self.writer = None
        if enabled and tensorboard_available():
            from torch.utils.tensorboard import SummaryWriter
            with deferred_interrupts():
                self.writer = SummaryWriter(log_dir=str(run_dir / TB_DIR))

    def scalars(self, row: dict, epoch: int) -> None:
        """Losses, validation metrics, LR and speed of one epoch, grouped as train/, val/ and lr."""
        if self.writer is None:
            return
        with deferred_interrupts():
            for key, value in row.items():
                if isinstance(value, (int, float)) and key != "epoch":
                    tag = f"val/{key[4:]}" if key.startswith("val_") else "lr" if key == "lr" else f"train/{key}"
                    self.writer.add_scalar(tag, value, epoch)
            self.writer.flush()

    def image_grid(self, tag: str, images: np.ndarray, step: int, columns: int = 8) -> None:
        """uint8 (N, H, W, C) images tiled into one image."""
        if self.writer is None or not len(images):
            return
        n, h, w, c = images.shape
        rows = -(-n // columns)
        grid = np.zeros((rows * (h + 2), columns * (w + 2), c), np.uint8)
        for i, image in enumerate(images):
            r, col = divmod(i, columns)
            grid[r * (h + 2) + 1:r * (h + 2) + 1 + h, col * (w + 2) + 1:col * (w + 2) + 1 + w] = image
        with deferred_interrupts():
            self.writer.add_image(tag, grid, step, dataformats="HWC")
            self.writer.flush()

    def figure(self, tag: str, fig, step: int) -> None:
        if self.writer is not None:
            with deferred_interrupts():
                self.writer.add_figure(tag, fig, step, close=False)
                self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            with deferred_interrupts():
                self.writer.close()
            self.writer = None
