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


@pytest.fixture(scope="session")
def demo(tmp_path_factory):
    """The demo competition with 20 labels per class (200 train images) and its 5 folds."""
    root = tmp_path_factory.mktemp("demo")
    data = root / "mnist_small"
    proc = run_script("prepare_demo.py", "--out-dir", str(data), "--labels-per-class", "20")
    assert proc.returncode == 0, proc.stderr
    folds = root / "folds.csv"
    proc = run_script("make_folds.py", "--data-dir", str(data), "--out", str(folds), "--quiet")
    assert proc.returncode == 0, proc.stderr
    return {"data": data, "folds": folds, "root": root}


TINY = ["--epochs", "2", "--batch-size", "32", "--lr-warmup-epochs", "0.5", "--quiet"]


def train(demo, exp, *extra, runs=None):
    """train.py on the small demo with tiny settings; returns the finished process."""
    runs = runs or demo["root"] / "runs"
    return run_script("train.py", "--data-dir", str(demo["data"]), "--folds-csv", str(demo["folds"]),
                      "--runs-dir", str(runs), "--exp", exp, *TINY, *extra)
