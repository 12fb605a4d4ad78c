"""torchrun on CPU (gloo, 2 processes) on the small demo: every validation row once in oof.csv, results close
to one process, the fold from $SLURM_ARRAY_TASK_ID, and exact resume after a kill."""
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import REPO, TINY, train
from test_scripts import kill_after_epoch, metrics

from src.core.metrics import compute_metrics

pytestmark = pytest.mark.slow


def torchrun_cmd(demo, runs, exp, *extra, nproc=2):
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
            str(REPO / "train.py"), "--data-dir", str(demo["data"]), "--folds-csv", str(demo["folds"]),
            "--runs-dir", str(runs), "--exp", exp, *TINY, *extra]


def torchrun(demo, runs, exp, *extra, env=None, nproc=2):
    return subprocess.run(torchrun_cmd(demo, runs, exp, *extra, nproc=nproc), cwd=REPO, capture_output=True,
                          text=True, timeout=300, env={**os.environ, **(env or {})})


def test_two_processes_write_every_validation_row_once_and_match_one_process(demo):
    runs = demo["root"] / "ddp"
    proc = torchrun(demo, runs, "ddp", env={"SLURM_ARRAY_TASK_ID": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "x 2 processes" in proc.stdout and proc.stdout.count("OOF summary") == 1  # rank 0 alone prints
    assert "fold 1 from $SLURM_ARRAY_TASK_ID" in proc.stdout and not (runs / "ddp" / "fold0").exists()
    oof = pd.read_csv(runs / "ddp" / "fold1" / "oof.csv", dtype={"id": str})
    folds = pd.read_csv(demo["folds"], dtype={"image": str})
    assert sorted(oof["id"]) == sorted(folds.loc[folds["fold"] == 1, "image"])  # each once, none missing
    # The gathered probabilities sit on their own ids: scored from oof.csv they give exactly the metrics
    # logged for the best epoch (same weights, same rows).
    classes = [str(i) for i in range(10)]
    y = oof["label"].astype(str).map({c: i for i, c in enumerate(classes)}).to_numpy()
    scores = compute_metrics(y, oof[[f"prob_{c}" for c in classes]].to_numpy())
    truth = folds.set_index("image").loc[oof["id"], "label"].astype(str).to_numpy()
    assert (oof["label"].astype(str).to_numpy() == truth).all()
    best = torch.load(runs / "ddp" / "fold1" / "best.pt", weights_only=True)["epoch"]
    logged = metrics(runs / "ddp" / "fold1").iloc[best]
    assert scores["accuracy"] == logged["val_accuracy"]
    assert scores["log_loss"] == pytest.approx(logged["val_log_loss"], abs=1e-6)
    assert train(demo, "single", "--fold", "1", runs=runs).returncode == 0
    ddp, single = metrics(runs / "ddp" / "fold1"), metrics(runs / "single" / "fold1")
    assert np.array_equal(ddp["lr"], single["lr"])  # same global batches, so the same schedule
    # Same batches and weights at the start; only BatchNorm's half-batch statistics, dropout and
    # augmentation draws differ, so the losses stay close.
    assert ddp["train_loss"].iloc[0] == pytest.approx(single["train_loss"].iloc[0], rel=0.05)
    assert abs(ddp["val_accuracy"].iloc[-1] - single["val_accuracy"].iloc[-1]) <= 0.15
    record = torch.load(runs / "ddp" / "fold1" / "last.pt", weights_only=True)
    assert record["world_size"] == 2 and len(record["rng_ranks"]) == 2


def test_killed_ddp_run_resumes_exactly_and_refuses_another_process_count(demo):
    runs = demo["root"] / "ddp_resume"
    args = ["--fold", "0", "--epochs", "5"]
    assert torchrun(demo, runs, "full", *args).returncode == 0
    last = runs / "killed" / "fold0" / "last.pt"
    code, err = kill_after_epoch(torchrun_cmd(demo, runs, "killed", *args), last, 2)
    assert code != 0, err
    assert 2 <= torch.load(last, weights_only=True)["epoch"] < 5
    proc = train(demo, "killed", *args, "--resume", runs=runs)  # one process
    assert proc.returncode == 2 and "made by 2 process(es), now 1" in proc.stderr
    proc = torchrun(demo, runs, "killed", *args, "--resume")
    assert proc.returncode == 0, proc.stderr[-3000:]
    pd.testing.assert_frame_equal(metrics(runs / "full" / "fold0"), metrics(runs / "killed" / "fold0"))
