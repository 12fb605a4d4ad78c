"""What the tests share: tiny competitions made on the fly, running the real scripts, and building a
fixture once for all pytest-xdist workers."""
from __future__ import annotations

import contextlib
import io
import os
import runpy
import shutil
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import pandas as pd
from filelock import FileLock

REPO = Path(__file__).resolve().parent.parent
# Precision and memory format pinned: the CPU probe (seconds per fresh cache) has its own tests (test_cpu_speed.py).
TINY = ["--epochs", "2", "--batch-size", "32", "--lr-warmup-epochs", "0.5", "--quiet", "--amp", "off",
        "--channels-last", "off"]


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


def run_subprocess(script: str, *args: str, cwd: Path = REPO, timeout: int = 300,
                   env: dict | None = None) -> subprocess.CompletedProcess:
    """Run a top-level script in a new Python process, as a user would (never raises on exit code)."""
    return subprocess.run([sys.executable, str(REPO / script), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=None if env is None else {**os.environ, **env})


def run_script(script: str, *args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """Run a top-level script's real `__main__` (argument parsing, run_main, exit code) inside this process.

    Same contract as a subprocess (exit code, stdout, stderr; an uncaught exception prints its traceback and
    exits 1) without paying ~5 s of torch/timm imports per call. Tests that need a real process (signals,
    torchrun, a fresh interpreter) use run_subprocess."""
    out, err = io.StringIO(), io.StringIO()
    saved_argv, saved_cwd, saved_sigterm = sys.argv, os.getcwd(), signal.getsignal(signal.SIGTERM)
    sys.argv = [str(REPO / script), *args]
    code = 0
    try:
        os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                runpy.run_path(str(REPO / script), run_name="__main__")
            except SystemExit as stop:
                if isinstance(stop.code, str):
                    print(stop.code, file=sys.stderr)
                code = stop.code if isinstance(stop.code, int) else int(stop.code is not None)
            except BaseException:
                traceback.print_exc()
                code = 1
    finally:
        sys.argv = saved_argv
        os.chdir(saved_cwd)
        signal.signal(signal.SIGTERM, saved_sigterm)  # train.py turns SIGTERM into Ctrl-C for its run
    return subprocess.CompletedProcess([script, *args], code, out.getvalue(), err.getvalue())


def shared_root(tmp_path_factory) -> Path:
    """A folder every pytest-xdist worker of this session sees (the workers' own basetemps sit inside it)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def build_once(tmp_path_factory, name: str, build: Callable[[Path], None]) -> Path:
    """<shared root>/<name>, built by `build` by whichever worker gets there first; the others wait for it.
    Callers must treat it as read-only."""
    root = shared_root(tmp_path_factory)
    folder = root / name
    with FileLock(str(root / f"{name}.lock")):
        if not (folder / ".built").is_file():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            build(folder)
            (folder / ".built").touch()
    return folder


def train(demo, exp, *extra, runs=None):
    """train.py on the small demo with tiny settings; returns the finished process."""
    runs = runs or demo["root"] / "runs"
    return run_script("train.py", "--data-dir", str(demo["data"]), "--folds-csv", str(demo["folds"]),
                      "--runs-dir", str(runs), "--exp", exp, *TINY, *extra)


def copy_run(source: Path, target: Path) -> Path:
    """A private copy of a shared runs/ folder, for a test that changes it."""
    shutil.copytree(source, target, symlinks=True)
    return target


METRIC_COLS = ["epoch", "lr", "train_loss", "val_accuracy", "val_macro_f1", "val_log_loss"]


def log_metrics(run_dir):
    """The learnt numbers of a fold's log.csv (not its timings), for exact comparisons."""
    return pd.read_csv(run_dir / "log.csv")[METRIC_COLS]


def kill_after_epoch(cmd: list[str], last, epoch: int) -> tuple[int, str]:
    """Start training, SIGTERM it once last.pt holds `epoch` finished epochs; (exit code, stderr).

    The run is stepped: its process group (torchrun's workers too) is frozen with SIGSTOP while last.pt is read and
    runs only between looks (~20 ms). A poller that read last.pt beside a running job could fall behind on a loaded
    machine and signal a run that had already finished its last epoch. The run has faulthandler on: one that does
    not end within 60 s of the signal is aborted, and the failure shows where every thread was stuck (and whether
    the epoch was reached before the signal)."""
    import torch
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONFAULTHANDLER": "1"}, start_new_session=True)
    started = time.time()
    reached, seen = False, None
    try:
        while time.time() < started + 120 and proc.poll() is None and not reached:
            time.sleep(0.02)
            os.killpg(proc.pid, signal.SIGSTOP)
            time.sleep(0.005)  # SIGSTOP is asynchronous: let every process of the group stop
            with contextlib.suppress(RuntimeError, EOFError, OSError):  # caught mid-rename: look again
                stamp = last.stat().st_mtime_ns if last.exists() else None
                if stamp is not None and stamp != seen:  # read last.pt only when it was rewritten
                    reached = torch.load(last, weights_only=True)["epoch"] >= epoch
                    seen = stamp
            if reached:
                proc.send_signal(signal.SIGTERM)  # delivered the moment the group runs again
            os.killpg(proc.pid, signal.SIGCONT)
    except ProcessLookupError:  # the run ended between two looks
        pass
    sent = time.time() - started
    if not reached:
        proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        out, err = proc.communicate(timeout=30)
        raise AssertionError(f"no exit within 60 s of SIGTERM, sent {sent:.1f} s after start with epoch {epoch} "
                             f"{'reached' if reached else 'NOT reached'}\nstdout: {out[-2000:]}\nstderr: {err}")
    return proc.returncode, err


def binary_task(n=64, size_px=24, seed=0):
    """A 24x24 binary task: class 1 images have a bright blob in the centre."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 60, (n, size_px, size_px, 1), dtype=np.uint8)
    labels = np.arange(n) % 2
    images[labels == 1, 8:16, 8:16] = 230
    return images, labels


def make_trainer(tmp_path, rt=None, **overrides):
    """A FoldTrainer on binary_task's 48 training / 16 validation images (in-process, seconds)."""
    from src.data.images import ImageSpec
    from src.train.config import TrainConfig
    from src.train.engine import setup_runtime
    from src.train.fold_trainer import DataInfo, FoldData, FoldTrainer
    images, labels = binary_task()
    cfg = TrainConfig(**{"epochs": 3, "batch_size": 16, "lr_warmup_epochs": 0.5, **overrides})
    data = FoldData(images[:48], labels[:48], images[48:], labels[48:], [f"v{i}" for i in range(16)],
                    [f"t{i}" for i in range(48)], {})
    info = DataInfo(["neg", "pos"], ImageSpec(24, 24, 1), [0.2], [0.3], {"data": "tiny"})
    return FoldTrainer(cfg, 0, tmp_path, data, info, rt or setup_runtime(cfg))


def blank_final_weights(run_dir: Path) -> None:
    """Rewrite a fold's last.pt so its final (EMA) weights predict the uniform distribution: a model that only
    best.pt's weights make confident, to tell which weights a step used."""
    from src.core.rundir import load_checkpoint, save_checkpoint
    state = load_checkpoint(run_dir / "last.pt")
    key = "ema" if state.get("ema") is not None else "model"
    state[key] = {name: (value.new_ones(value.shape) if name.endswith("running_var") else value.new_zeros(value.shape))
                  if value.is_floating_point() else value for name, value in state[key].items()}
    save_checkpoint(run_dir / "last.pt", state)
