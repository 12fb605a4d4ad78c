"""DDP building blocks without a process group: batch shards, row shares, fold from the environment, and
the refusals (uneven batch, SyncBatchNorm on CPU, resume with another process count)."""
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from test_trainer import make_trainer

from src.core.errors import UserError
from src.data.folds import fold_from_env
from src.train.distributed import Dist, ShardedBatches, check_shares, dist_from_env, rank_share
from src.train.engine import Runtime


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
    script = Path(__file__).resolve().parent.parent / "cluster" / "run_lines.sbatch"
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
