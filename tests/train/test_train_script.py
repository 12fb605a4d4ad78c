"""Smoke tests: the real scripts, end to end, on a small version of the demo competition."""
import json
import shutil
import sys

import pandas as pd
import pytest
import torch

from helpers import REPO, TINY, kill_after_epoch, log_metrics, run_script, train

pytestmark = pytest.mark.slow

def test_prepare_demo_builds_a_stratified_competition_idempotently(demo, tmp_path):
    data = demo["data"]
    train_csv = pd.read_csv(data / "train.csv")
    assert len(train_csv) == 200 and (train_csv["label"].value_counts() == 20).all()
    assert len(list((data / "unlabeled").glob("*.png"))) == 3800
    solution = pd.read_csv(data / "solution.csv")
    assert len(solution) == 1000 and (solution["label"].value_counts() == 100).all()
    assert (solution["Usage"] == "Public").mean() == pytest.approx(0.3)
    sample = pd.read_csv(data / "sample_submission.csv")
    assert list(sample.columns) == ["image", "label"] and (sample["image"] == solution["image"]).all()
    assert set(train_csv["image"]).isdisjoint(solution["image"])
    copy = tmp_path / "copy"  # the shared demo stays read-only even if a regression rewrote the folder
    shutil.copytree(data, copy)
    before = (copy / "train.csv").stat().st_mtime_ns
    proc = run_script("prepare_demo.py", "--out-dir", str(copy), "--labels-per-class", "20")
    assert "nothing to do" in proc.stdout and (copy / "train.csv").stat().st_mtime_ns == before


def test_train_writes_a_complete_run_directory(demo):
    proc = train(demo, "smoke", "--fold", "0,1")
    assert proc.returncode == 0, proc.stderr
    assert "image cache: " in proc.stdout  # built or reused, with its path and size
    exp = demo["root"] / "runs" / "smoke"
    run = exp / "fold0"
    for name in ("config.json", "log.csv", "curves.png", "best.pt", "last.pt", "oof.csv", "oof_final.csv"):
        assert (run / name).is_file(), name
    assert len(pd.read_csv(run / "log.csv")) == 2
    oof = pd.read_csv(run / "oof.csv", dtype={"label": str})
    assert len(oof) == 40 and oof.filter(like="prob_").sum(axis=1).round(4).eq(1).all()
    folds = pd.read_csv(demo["folds"], dtype={"image": str})
    assert set(oof["id"]) == set(folds.loc[folds["fold"] == 0, "image"])
    best = torch.load(run / "best.pt", weights_only=True)
    assert best["classes"] == [str(i) for i in range(10)] and best["config"]["epochs"] == 2
    summary = pd.read_csv(exp / "oof_summary.csv", dtype={"fold": str})
    assert list(summary["fold"][:2]) == ["0", "1"] and "accuracy" in summary
    assert list(summary["weights"].drop_duplicates()) == ["final", "best"]  # the unbiased number first
    assert (exp / "oof_summary.md").read_text().startswith("# OOF summary")
    # Both pooled figures, each named for what it is, and the CV epoch train.py --epochs can reuse.
    assert "OOF summary" in proc.stdout and "nothing was chosen on these rows" in proc.stdout
    assert "optimistic" in proc.stdout and "CV-chosen epoch count" in proc.stdout
    for name in ("confusion.png", "per_class.md", "per_class.csv", "wrong.png", "wrong.csv"):
        assert (exp / name).is_file(), name
    assert len(pd.read_csv(exp / "per_class.csv")) == 10
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(run / "tb"), size_guidance={"images": 0})
    events.Reload()
    assert {"train/train_loss", "val/accuracy", "lr"} <= set(events.Tags()["scalars"])
    assert len(events.Scalars("val/accuracy")) == 2
    assert {"train/sample_batch", "val/confusion_matrix_best"} <= set(events.Tags()["images"])


def test_no_tensorboard_flag_writes_no_event_files_and_changes_nothing_learned(demo):
    runs = demo["root"] / "tb_off"
    for exp, flag in (("on", "--tensorboard"), ("off", "--no-tensorboard")):
        assert train(demo, exp, "--fold", "0", flag, runs=runs).returncode == 0
    assert (runs / "on" / "fold0" / "tb").is_dir() and not (runs / "off" / "fold0" / "tb").exists()
    pd.testing.assert_frame_equal(log_metrics(runs / "on" / "fold0"), log_metrics(runs / "off" / "fold0"))


def test_a_one_epoch_smoke_run_trains_with_the_warmup_clipped(demo):
    runs = demo["root"] / "one_epoch"
    proc = run_script("train.py", "--data-dir", str(demo["data"]), "--folds-csv", str(demo["folds"]), "--runs-dir",
                      str(runs), "--exp", "smoke1", "--epochs", "1", "--quiet")  # default warmup: 1 epoch
    assert proc.returncode == 0, proc.stderr
    assert "warming up for 0.5 epochs instead" in proc.stderr
    printed = run_script("train.py", "--epochs", "1", "--print-config")  # stdout stays clean JSON
    assert printed.returncode == 0 and json.loads(printed.stdout)["lr_warmup_epochs"] == 0.5
    assert len(log_metrics(runs / "smoke1" / "fold0")) == 1


def test_same_seed_gives_identical_metrics(demo):
    runs = demo["root"] / "determinism"
    for exp in ("a", "b"):
        assert train(demo, exp, "--fold", "0", runs=runs).returncode == 0
    pd.testing.assert_frame_equal(log_metrics(runs / "a" / "fold0"), log_metrics(runs / "b" / "fold0"))


def test_kill_and_resume_early_and_late_ends_exactly_like_an_uninterrupted_run(demo):
    runs = demo["root"] / "resume"
    args = ["--fold", "0", "--epochs", "6", "--augment", "heavy"]
    assert train(demo, "full", *args, runs=runs).returncode == 0
    expected = log_metrics(runs / "full" / "fold0")
    for attempt, kill_epoch in enumerate((1, 4)):  # right after the first epoch, and one before the last
        exp = f"killed{attempt}"
        cmd = [sys.executable, str(REPO / "train.py"), "--data-dir", str(demo["data"]), "--folds-csv",
               str(demo["folds"]), "--runs-dir", str(runs), "--exp", exp, *TINY, *args]
        last = runs / exp / "fold0" / "last.pt"
        code, err = kill_after_epoch(cmd, last, kill_epoch)
        assert code == 130, err  # killed mid-run, not finished
        assert "--resume" in err.strip().splitlines()[-1]
        assert 1 <= torch.load(last, weights_only=True)["epoch"] < 6
        assert train(demo, exp, *args, "--resume", runs=runs).returncode == 0
        pd.testing.assert_frame_equal(expected, log_metrics(runs / exp / "fold0"))


def test_an_existing_run_needs_resume_or_overwrite(demo):
    runs = demo["root"] / "existing"
    assert train(demo, "x", "--fold", "0", "--epochs", "1", runs=runs).returncode == 0
    proc = train(demo, "x", "--fold", "0", "--epochs", "1", runs=runs)
    assert proc.returncode == 2 and "--resume" in proc.stderr and "--overwrite" in proc.stderr
    assert train(demo, "x", "--fold", "0", "--epochs", "1", "--overwrite", runs=runs).returncode == 0


def test_a_run_from_before_augment_fill_resumes_only_with_the_zero_fill_it_began_with(demo):
    from src.core.rundir import load_checkpoint, save_checkpoint
    runs = demo["root"] / "old_fill"
    assert train(demo, "x", "--fold", "0", "--epochs", "1", runs=runs).returncode == 0
    last = runs / "x" / "fold0" / "last.pt"
    state = load_checkpoint(last)
    for key in ("augment_fill", "consistency_weight", "consistency_threshold", "consistency_ratio",
                "consistency_augment", "unlabeled_dir", "unlabeled_test"):  # as code before the key wrote it
        del state["config"][key]
    save_checkpoint(last, state)
    record = json.loads((last.parent / "config.json").read_text())
    (last.parent / "config.json").write_text(json.dumps({**record, "config": state["config"]}))
    proc = train(demo, "x", "--fold", "0", "--epochs", "1", "--resume", "--augment-fill", "reflection", runs=runs)
    assert proc.returncode == 2 and "made with augment_fill='zeros', now augment_fill='reflection'" in proc.stderr
    proc = train(demo, "x", "--fold", "0", "--epochs", "1", "--resume", runs=runs)  # the default: zeros, as then
    assert proc.returncode == 0, proc.stderr


def test_a_refused_resume_rewrites_nothing_in_the_run_folder(demo):
    runs = demo["root"] / "refused"
    assert train(demo, "x", "--fold", "0", "--epochs", "2", runs=runs).returncode == 0
    run = runs / "x" / "fold0"
    before = {name: (run / name).read_bytes() for name in ("config.json", "train_rows.csv", "last.pt", "log.csv")}
    proc = train(demo, "x", "--fold", "0", "--epochs", "2", "--lr", "0.5", "--resume", runs=runs)
    assert proc.returncode == 2 and "made with lr=" in proc.stderr
    assert {name: (run / name).read_bytes() for name in before} == before


@pytest.mark.parametrize("extra, message", [
    (["--fold", "7"], "--fold 7 is out of range"),
    (["--model", "resnet_does_not_exist"], "is not a timm model name"),
    (["--pretrained", "/nonexistent/weights.pt"], "file not found"),
    (["--monitor", "eer"], "--monitor eer needs a binary task"),
    (["--model", "vit_tiny_patch16_224"], "cannot take 28x28x1 input"),
])
def test_bad_arguments_fail_before_training_and_write_nothing(demo, extra, message):
    runs = demo["root"] / "bad"
    proc = train(demo, "bad", *extra, runs=runs)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and message in proc.stderr
    assert not (runs / "bad").exists()


def test_missing_image_fails_with_the_row_named(tmp_path, demo):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train").symlink_to(demo["data"] / "train")
    frame = pd.read_csv(demo["data"] / "train.csv")
    frame.loc[7, "image"] = "tr_missing"
    frame.to_csv(data / "train.csv", index=False)
    proc = run_script("train.py", "--data-dir", str(data), "--folds-csv", str(demo["folds"]),
                      "--runs-dir", str(tmp_path / "runs"), *TINY)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {data / 'train.csv'} line 9: image for id 'tr_missing' not found in " \
                                  f"{data / 'train'}"
    assert not (tmp_path / "runs").exists()


def test_an_existing_fold_is_found_before_any_other_fold_trains(demo):
    runs = demo["root"] / "prechecked"
    assert train(demo, "x", "--fold", "1", "--epochs", "1", runs=runs).returncode == 0
    proc = train(demo, "x", "--fold", "all", "--epochs", "1", runs=runs)
    assert proc.returncode == 2 and "fold1 already holds a run" in proc.stderr
    assert not (runs / "x" / "fold0").exists()
