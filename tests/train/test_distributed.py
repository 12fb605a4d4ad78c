"""Data-parallel training: the DDP building blocks without a process group (batch shards, row shares, fold
from the environment, the refusals), then torchrun on CPU (gloo, 2 processes) on the small demo: every
validation row once in oof.csv, results close to one process, the fold from $SLURM_ARRAY_TASK_ID, and
exact resume after a kill."""
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from src.core.errors import UserError
from src.core.metrics import compute_metrics
from src.data.folds import fold_from_env
from src.train.distributed import Dist, ShardedBatches, check_shares, dist_from_env, rank_share
from src.train.engine import Runtime

from helpers import REPO, TINY, kill_after_epoch, log_metrics, make_trainer, train


def test_ranks_split_the_single_process_batches_exactly():
    def batches(seed):
        generator = torch.Generator().manual_seed(seed)
        return torch.utils.data.BatchSampler(torch.utils.data.RandomSampler(range(103), generator=generator),
                                             10, drop_last=True)
    single = list(batches(7))
    shards = [list(ShardedBatches(batches(7), Dist(rank, 2, rank, 2))) for rank in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == len(single) == 10
    for whole, a, b in zip(single, *shards):
        assert len(a) == len(b) == 5 and list(a) + list(b) == list(whole)
    assert list(ShardedBatches(batches(8), Dist(0, 2, 0, 2)))[0] != shards[0][0]  # the seed moves with the epoch


def test_row_shares_cover_every_row_once_in_order():
    rows = np.arange(11)
    parts = [rank_share(rows, Dist(r, 3, r, 3)) for r in range(3)]
    assert np.array_equal(np.concatenate(parts), rows) and sorted(map(len, parts)) == [3, 4, 4]
    assert rank_share(rows, Dist()) is rows


def test_layout_from_torchrun_environment():
    info = dist_from_env({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"})
    assert (info.rank, info.world_size, info.local_rank, info.local_world_size, info.enabled) == (3, 4, 1, 2, True)
    assert not dist_from_env({}).enabled and dist_from_env({}).is_main


def test_ddp_needs_an_even_global_batch_full_batches_and_a_validation_row_per_rank():
    two = Dist(0, 2, 0, 2)
    check_shares(100, 10, 64, two, "fold 0")
    check_shares(10, 1, 63, Dist(), "fold 0")  # one process: anything goes
    with pytest.raises(UserError, match="--batch-size 63 does not split over 2 processes"):
        check_shares(100, 10, 63, two, "fold 0")
    with pytest.raises(UserError, match="fold 0: 64 training rows fit in one batch of 64"):
        check_shares(64, 10, 64, two, "fold 0")
    with pytest.raises(UserError, match="1 validation rows for 2 processes"):
        check_shares(100, 1, 64, two, "fold 0")


def test_fold_comes_from_flag_then_kit_then_slurm():
    env = {"SLURM_ARRAY_TASK_ID": "3", "KIT_FOLD": ""}
    assert fold_from_env("1", env) == ("1", "--fold")
    assert fold_from_env(None, env) == ("3", "$SLURM_ARRAY_TASK_ID")
    assert fold_from_env(None, {**env, "KIT_FOLD": "all"}) == ("all", "$KIT_FOLD")
    assert fold_from_env(None, {}) == ("0", "default")


def test_sync_batchnorm_on_cpu_and_an_uneven_batch_are_refused_before_training(tmp_path):
    rt = Runtime(torch.device("cpu"), None, False, Dist(0, 2, 0, 2))  # a rank of 2; no process group needed
    with pytest.raises(UserError, match="--sync-batchnorm needs CUDA"):
        make_trainer(tmp_path, rt, sync_batchnorm=True)
    with pytest.raises(UserError, match="does not split over 2"):
        make_trainer(tmp_path, rt, batch_size=15)


def test_slurm_line_runner_runs_the_array_tasks_line(tmp_path):
    jobs = tmp_path / "jobs.txt"
    jobs.write_text("echo first > out.txt\necho second > out.txt\n")
    script = REPO / "cluster" / "run_lines.sbatch"
    env = {**os.environ, "SLURM_ARRAY_TASK_ID": "2", "SLURM_SUBMIT_DIR": str(tmp_path)}
    assert subprocess.run(["bash", str(script), str(jobs)], env=env, capture_output=True).returncode == 0
    assert (tmp_path / "out.txt").read_text() == "second\n"
    env["SLURM_ARRAY_TASK_ID"] = "3"
    proc = subprocess.run(["bash", str(script), str(jobs)], env=env, capture_output=True, text=True)
    assert proc.returncode == 2 and "no line 3" in proc.stderr


def test_train_loader_ranks_together_see_exactly_the_single_process_batches():
    from src.train.engine import ArrayBatches, train_loader
    images, labels = np.zeros((50, 4, 4, 1), np.uint8), np.arange(50)  # label = row number

    def batches(info):
        loader = train_loader(ArrayBatches(images, labels), 8, seed=5, num_workers=0, pin_memory=False, info=info)
        return [set(y.tolist()) for _, y in loader]
    single = batches(Dist())
    ranks = [batches(Dist(r, 2, r, 2)) for r in (0, 1)]
    assert len(single) == len(ranks[0]) == len(ranks[1]) == 6
    for whole, a, b in zip(single, *ranks):
        assert len(a) == len(b) == 4 and a | b == whole


def torchrun_cmd(demo, runs, exp, *extra, nproc=2):
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
            str(REPO / "train.py"), "--data-dir", str(demo["data"]), "--folds-csv", str(demo["folds"]),
            "--runs-dir", str(runs), "--exp", exp, *TINY, *extra]


def torchrun(demo, runs, exp, *extra, env=None, nproc=2):
    return subprocess.run(torchrun_cmd(demo, runs, exp, *extra, nproc=nproc), cwd=REPO, capture_output=True,
                          text=True, timeout=300, env={**os.environ, **(env or {})})


@pytest.mark.slow
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
    logged = log_metrics(runs / "ddp" / "fold1").iloc[best]
    assert scores["accuracy"] == logged["val_accuracy"]
    assert scores["log_loss"] == pytest.approx(logged["val_log_loss"], abs=1e-6)
    assert train(demo, "single", "--fold", "1", runs=runs).returncode == 0
    ddp, single = log_metrics(runs / "ddp" / "fold1"), log_metrics(runs / "single" / "fold1")
    assert np.array_equal(ddp["lr"], single["lr"])  # same global batches, so the same schedule
    # Same batches and weights at the start; only BatchNorm's half-batch statistics, dropout and
    # augmentation draws differ, so the losses stay close.
    assert ddp["train_loss"].iloc[0] == pytest.approx(single["train_loss"].iloc[0], rel=0.05)
    assert abs(ddp["val_accuracy"].iloc[-1] - single["val_accuracy"].iloc[-1]) <= 0.15
    record = torch.load(runs / "ddp" / "fold1" / "last.pt", weights_only=True)
    assert record["world_size"] == 2 and len(record["rng_ranks"]) == 2


@pytest.mark.slow
def test_killed_ddp_run_resumes_exactly_and_refuses_another_process_count(demo):
    runs = demo["root"] / "ddp_resume"
    args = ["--fold", "0", "--epochs", "3"]
    assert torchrun(demo, runs, "full", *args).returncode == 0
    last = runs / "killed" / "fold0" / "last.pt"
    code, err = kill_after_epoch(torchrun_cmd(demo, runs, "killed", *args), last, 1)
    assert code != 0, err
    assert 1 <= torch.load(last, weights_only=True)["epoch"] < 3
    proc = train(demo, "killed", *args, "--resume", runs=runs)  # one process
    assert proc.returncode == 2 and "made by 2 process(es), now 1" in proc.stderr
    proc = torchrun(demo, runs, "killed", *args, "--resume")
    assert proc.returncode == 0, proc.stderr[-3000:]
    pd.testing.assert_frame_equal(log_metrics(runs / "full" / "fold0"), log_metrics(runs / "killed" / "fold0"))


@pytest.mark.slow
def test_consistency_training_runs_under_torchrun_with_each_rank_on_its_share(demo):
    runs = demo["root"] / "ddp_semi"
    semi = ["--fold", "0", "--epochs", "1", "--consistency-weight", "1", "--unlabeled-dir", "unlabeled_small",
            "--consistency-threshold", "0.2"]  # low: after one epoch some of the 10-class predictions pass it
    proc = torchrun(demo, runs, "semi", *semi)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp = pd.read_csv(runs / "semi" / "fold0" / "log.csv")
    single = train(demo, "single", *semi, runs=runs)
    assert single.returncode == 0, single.stderr
    one = pd.read_csv(runs / "single" / "fold0" / "log.csv")
    # Same global batches, split over the ranks: the losses agree closely (BatchNorm sees half a batch per rank).
    assert ddp["train_loss"].iloc[0] == pytest.approx(one["train_loss"].iloc[0], rel=0.05)
    assert ddp["mask_rate"].between(0, 1).all() and ddp["mask_rate"].iloc[0] > 0
    assert ddp["pseudo_accuracy"].notna().all()  # counted over both ranks' shares
