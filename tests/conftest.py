"""Shared fixtures: the small demo competition and one tiny trained 5-fold run, each built once per session
(for all pytest-xdist workers), and one CPU core per worker."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import cv2
import pytest
from threadpoolctl import threadpool_limits

from helpers import build_once, make_competition, run_script, train


def pytest_configure(config):
    """Under pytest-xdist, give each worker its own share of the cores: torch then sizes its thread pool to
    that share (src/train/engine.py reads the affinity), and OpenCV's and BLAS's pools are capped to it, so
    workers do not oversubscribe the machine. Fold variables of the environment (a Slurm job running the
    suite) must not steer the in-process train.py runs."""
    for name in ("KIT_FOLD", "SLURM_ARRAY_TASK_ID"):
        os.environ.pop(name, None)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if not worker or not hasattr(os, "sched_setaffinity"):
        return
    cores = sorted(os.sched_getaffinity(0))
    if workers > len(cores):
        return
    share = len(cores) // workers
    index = int(worker.removeprefix("gw"))
    os.sched_setaffinity(0, cores[index * share:(index + 1) * share])
    cv2.setNumThreads(share)
    threadpool_limits(share)


@pytest.fixture
def competition(tmp_path: Path) -> Path:
    return make_competition(tmp_path / "comp")


def _build_demo(folder: Path) -> None:
    data = folder / "mnist_small"
    proc = run_script("prepare_demo.py", "--out-dir", str(data), "--labels-per-class", "20")
    assert proc.returncode == 0, proc.stderr
    proc = run_script("make_folds.py", "--data-dir", str(data), "--out", str(folder / "folds.csv"), "--quiet")
    assert proc.returncode == 0, proc.stderr
    # 100 of the 3,800 unlabelled digits: enough for pseudo-labelling tests, short to predict.
    pool = data / "unlabeled_small"
    pool.mkdir()
    for path in sorted((data / "unlabeled").glob("*.png"))[:100]:
        shutil.copy(path, pool / path.name)


@pytest.fixture(scope="session")
def demo(tmp_path_factory):
    """The demo competition with 20 labels per class (200 train images) and its 5 folds. `data` and `folds`
    are shared by all workers and read-only; `root` is this worker's own folder for outputs."""
    shared = build_once(tmp_path_factory, "demo", _build_demo)
    return {"data": shared / "mnist_small", "folds": shared / "folds.csv", "root": tmp_path_factory.mktemp("demo")}


@pytest.fixture(scope="session")
def tiny_run(demo, tmp_path_factory) -> Path:
    """runs/ holding `tiny`: all 5 folds of the small demo at tiny settings (read-only; copy to change)."""
    def build(folder: Path) -> None:
        proc = train(demo, "tiny", "--fold", "all", runs=folder / "runs")
        assert proc.returncode == 0, proc.stderr
    return build_once(tmp_path_factory, "tiny_run", build) / "runs"
