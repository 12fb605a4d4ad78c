"""Shared fixtures: tiny competitions made on the fly, and a helper to run the real scripts."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def make_competition(root: Path, classes=("cat", "dog", "owl"), per_class: int = 6, size_px: int = 12,
                     seed: int = 0) -> Path:
    """A small gray-image competition: each class is a bright square at its own position, plus noise."""
    rng = np.random.default_rng(seed)
    (root / "train").mkdir(parents=True)
    rows = []
    for k, name in enumerate(classes):
        for i in range(per_class):
            image = rng.integers(0, 40, (size_px, size_px), dtype=np.uint8)
            image[k * 3:k * 3 + 4, 2:6] = 220
            image_id = f"{name}_{i}"
            cv2.imwrite(str(root / "train" / f"{image_id}.png"), image)
            rows.append((image_id, name))
    pd.DataFrame(rows, columns=["image", "label"]).to_csv(root / "train.csv", index=False)
    return root


@pytest.fixture
def competition(tmp_path: Path) -> Path:
    return make_competition(tmp_path / "comp")


def run_script(script: str, *args: str, cwd: Path = REPO, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run a top-level script as a user would; returns the finished process (never raises on exit code)."""
    return subprocess.run([sys.executable, str(REPO / script), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)
