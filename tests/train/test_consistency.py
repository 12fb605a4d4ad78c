"""Consistency training (FixMatch) inside train.py: the two streams of an epoch, which unlabelled predictions become
targets, fold safety (no validation image in a fold's unlabelled stream), exact resume, and bad input."""
import json
import shutil
import sys

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from src.core.errors import UserError
from src.train.consistency import Consistency, SemiSampler, check_unlabeled_batch, epoch_stats, semi_steps
from src.train.distributed import Dist

from helpers import REPO, TINY, kill_after_epoch, log_metrics, make_competition, run_script, train

SEMI = ["--consistency-weight", "1", "--unlabeled-dir", "unlabeled_small"]


def test_an_epoch_is_one_pass_over_the_longer_stream_while_the_shorter_one_cycles():
    sampler = SemiSampler(n_labelled=10, n_unlabeled=25, batch_size=4, ratio=1.5, seed=1)  # 6 unlabelled per step
    batches = list(sampler)
    assert len(batches) == len(sampler) == semi_steps(10, 25, 4, 1.5) == 4
    unlabeled = np.concatenate([u for _, u in batches])
    assert len(unlabeled) == 24 and len(set(unlabeled)) == 24  # one pass, no image twice
    labelled = np.concatenate([rows for rows, _ in batches])
    assert len(labelled) == 16 and set(labelled) == set(range(10))  # every labelled row, then a new permutation
    again = list(SemiSampler(10, 25, 4, 1.5, seed=1))
    assert all((a[0] == b[0]).all() and (a[1] == b[1]).all() for a, b in zip(batches, again))
    assert semi_steps(n_labelled=40, n_unlabeled=10, batch_size=4, ratio=1) == 10  # more labels: their pass decides


def test_under_ddp_each_rank_takes_its_share_of_both_parts_of_every_global_batch():
    one = list(SemiSampler(12, 30, 4, 2, seed=3))
    ranks = [list(SemiSampler(12, 30, 4, 2, seed=3, info=Dist(rank=r, world_size=2))) for r in (0, 1)]
    for step, (rows, u_rows) in enumerate(one):
        assert (np.concatenate([ranks[0][step][0], ranks[1][step][0]]) == rows).all()
        assert (np.concatenate([ranks[0][step][1], ranks[1][step][1]]) == u_rows).all()


def test_only_weak_predictions_at_or_above_the_threshold_become_targets():
    # softmax confidences: 0.954 (class 0), 0.478 (class 1), 0.963 (class 2; the truth says 1), 0.987 (no truth)
    weak = torch.tensor([[4.0, 0.0, 0.5], [0.0, 1.0, 0.68], [0.0, 0.1, 4.0], [5.0, 0.0, 0.0]])
    strong = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 2.0, 0.0], [0.5, 0.5, 0.0]], requires_grad=True)
    consistency = Consistency(weight=2.0, threshold=0.95, weak_augment=None, device=torch.device("cpu"))
    loss = consistency.loss(weak, strong, torch.tensor([0, 1, 1, -1]))
    mask = torch.tensor([1.0, 0.0, 1.0, 1.0])
    assert ((torch.softmax(weak, 1).max(1).values >= 0.95).float() == mask).all()
    expected = 2.0 * (F.cross_entropy(strong, torch.tensor([0, 1, 2, 0]), reduction="none") * mask).sum() / 4
    assert loss.item() == pytest.approx(expected.item())  # the unconfident image counts as zero, not left out
    loss.backward()
    assert strong.grad[1].abs().sum() == 0 and strong.grad[0].abs().sum() > 0
    stats = epoch_stats(consistency.images, consistency.counts)
    assert stats["mask_rate"] == 0.75
    assert stats["pseudo_accuracy"] == 0.5  # of the confident ones with a known truth: right, wrong
    assert stats["unlabeled_loss"] == pytest.approx(expected.item() / 2)


def test_the_unlabelled_batch_must_split_evenly_over_the_processes_with_two_images_each():
    check_unlabeled_batch(32, 1.0, Dist())
    check_unlabeled_batch(32, 0.25, Dist(rank=0, world_size=2))  # 8 images, 4 per process
    with pytest.raises(UserError, match="gives 7 unlabelled images per step; it needs a multiple of 2"):
        check_unlabeled_batch(14, 0.5, Dist(rank=0, world_size=2))
    with pytest.raises(UserError, match="at least 2"):
        check_unlabeled_batch(32, 0.01, Dist())


def with_unlabeled(tmp_path, holdout=False):
    """A tiny competition (3 classes x 6; x 9 with a holdout of 9) with 2 folds and an unlabeled/ folder of 9 new
    images."""
    data = make_competition(tmp_path / "comp", per_class=9 if holdout else 6)
    extra = make_competition(tmp_path / "extra", seed=1, per_class=3)
    (data / "unlabeled").mkdir()
    for path in (extra / "train").glob("*.png"):
        shutil.copy(path, data / "unlabeled" / f"u_{path.name}")
    folds = tmp_path / "folds.csv"
    proc = run_script("make_folds.py", "--data-dir", str(data), "--n-folds", "2", "--out", str(folds), "--quiet",
                      *(["--holdout", "0.34"] if holdout else []))
    assert proc.returncode == 0, proc.stderr
    return data, folds


@pytest.mark.slow
def test_a_copy_of_a_validation_image_never_enters_that_fold_s_unlabelled_stream(tmp_path):
    data, folds = with_unlabeled(tmp_path, holdout=True)
    fold_of = pd.read_csv(folds).set_index("image")["fold"]
    copied = fold_of[fold_of == "0"].index[0]  # validation in fold 0, training in fold 1
    shutil.copy(data / "train" / f"{copied}.png", data / "unlabeled" / "looks_new.png")
    held = fold_of[fold_of == "holdout"].index[0]  # a holdout image under another name: out of every fold's stream
    shutil.copy(data / "train" / f"{held}.png", data / "unlabeled" / "looks_new_too.png")
    runs = tmp_path / "runs"
    proc = run_script("train.py", "--data-dir", str(data), "--folds-csv", str(folds), "--runs-dir", str(runs),
                      "--fold", "all", *TINY, "--batch-size", "4", "--consistency-weight", "1")
    assert proc.returncode == 0, proc.stderr
    record = [json.loads((runs / "baseline" / f"fold{k}" / "config.json").read_text())["extra_rows"]["unlabeled"]
              for k in (0, 1)]
    assert [r["rows"] for r in record] == [9, 10]
    assert [r["copies_of_validation_rows_left_out"] for r in record] == [1, 0]
    assert [r["copies_of_holdout_rows_left_out"] for r in record] == [1, 1]
    assert record[0]["folders"] == ["unlabeled"] and record[0]["transductive"] is False
    assert "fold 0: consistency training on 9 unlabelled images from unlabeled; 1 copies of its validation images " \
           "left out; 1 copies of its holdout images left out; 2 steps per epoch" in proc.stdout
    # The defaults: label smoothing 0.1 over 3 classes trains confidences toward 0.933, below the 0.95 threshold.
    assert "note: consistency_threshold 0.95 is above the 0.933 a label_smoothing 0.1 loss" in proc.stdout
    log = pd.read_csv(runs / "baseline" / "fold0" / "log.csv")
    assert log["mask_rate"].between(0, 1).all() and log["pseudo_accuracy"].isna().all()  # no truth file here
    assert (runs / "baseline" / "fold0" / "curves.png").is_file()


@pytest.mark.slow
def test_bad_consistency_input_is_one_line_exit_2_and_writes_no_run(tmp_path):
    data, folds = with_unlabeled(tmp_path)
    (data / "empty").mkdir()
    runs = tmp_path / "runs"
    base = ["--data-dir", str(data), "--folds-csv", str(folds), "--runs-dir", str(runs), "--fold", "0", *TINY]
    cases = [(["--consistency-weight", "1", "--unlabeled-dir", "nowhere"], "folder of unlabelled images not found"),
             (["--consistency-weight", "1", "--unlabeled-dir", str(tmp_path)], "must name a folder inside"),
             (["--consistency-weight", "1", "--unlabeled-dir", "test"], "say so with --unlabeled-test"),
             (["--consistency-weight", "1", "--consistency-ratio", "0.01"], "at least 2"),
             (["--consistency-weight", "1", "--unlabeled-dir", "empty"], "no images in empty"),
             (["--consistency-weight", "1", "--unlabeled-dir", "train"], "is a labelled training image"),
             (["--consistency-weight", "1", "--consistency-threshold", "1.5"], "consistency_threshold"),
             (["--consistency-weight", "1", "--consistency-threshold", "0"], "consistency_threshold"),
             (["--unlabeled-test"], "consistency_weight is 0"),
             (["--consistency-weight", "1", "--mixup-alpha", "0.2"], "mixup_alpha and cutmix_alpha 0")]
    for args, message in cases:
        proc = run_script("train.py", *base, *args)
        assert proc.returncode == 2 and message in proc.stderr, (args, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert not (runs / "baseline").exists()


@pytest.mark.slow
def test_few_labels_run_logs_the_mask_rate_and_the_pseudo_labels_accuracy(demo):
    runs = demo["root"] / "semi"
    proc = train(demo, "semi", "--fold", "0", *SEMI, "--consistency-threshold", "0.5", runs=runs)
    assert proc.returncode == 0, proc.stderr
    log = pd.read_csv(runs / "semi" / "fold0" / "log.csv")
    assert log["mask_rate"].between(0, 1).all() and log["mask_rate"].iloc[-1] > 0
    assert log["pseudo_accuracy"].dropna().between(0, 1).all() and log["pseudo_accuracy"].notna().any()
    assert (log["unlabeled_loss"] >= 0).all()
    plain = train(demo, "plain", "--fold", "0", runs=runs)
    assert plain.returncode == 0
    assert not log["train_loss"].equals(pd.read_csv(runs / "plain" / "fold0" / "log.csv")["train_loss"])


@pytest.mark.slow
def test_a_killed_consistency_run_resumes_exactly_like_an_uninterrupted_one(demo):
    runs = demo["root"] / "semi_resume"
    args = ["--fold", "0", "--epochs", "4", *SEMI, "--consistency-threshold", "0.5"]
    assert train(demo, "full", *args, runs=runs).returncode == 0
    cmd = [sys.executable, str(REPO / "train.py"), "--data-dir", str(demo["data"]), "--folds-csv",
           str(demo["folds"]), "--runs-dir", str(runs), "--exp", "killed", *TINY, *args]
    last = runs / "killed" / "fold0" / "last.pt"
    code, err = kill_after_epoch(cmd, last, 2)
    assert code == 130, err
    assert 2 <= torch.load(last, weights_only=True)["epoch"] < 4
    assert train(demo, "killed", *args, "--resume", runs=runs).returncode == 0
    columns = ["mask_rate", "pseudo_accuracy", "unlabeled_loss"]
    full, resumed = (pd.read_csv(runs / e / "fold0" / "log.csv") for e in ("full", "killed"))
    pd.testing.assert_frame_equal(log_metrics(runs / "full" / "fold0"), log_metrics(runs / "killed" / "fold0"))
    pd.testing.assert_frame_equal(full[columns], resumed[columns])
