"""infer.py's flow: fast unit tests of its helpers, then infer.py, score.py and the Predictor API end to end on a
tiny 5-fold run of the small demo."""
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from src.core.errors import UserError
from src.infer.predictor import Predictor, parse_threshold
from src.infer.tta import chosen_mean, with_identity

from helpers import copy_run, make_competition, run_script


def test_threshold_parsing():
    assert parse_threshold("") is None and parse_threshold("eer") == "eer" and parse_threshold("0.3") == 0.3
    for bad in ("abc", "1.5", "-0.1", "nan"):
        with pytest.raises(UserError, match="between 0 and 1"):
            parse_threshold(bad)


def test_identity_is_predicted_once_and_chosen_views_are_averaged_by_name():
    assert with_identity(["shift_up", "identity"]) == ["identity", "shift_up"]
    assert with_identity(["hflip"]) == ["identity", "hflip"]
    p = SimpleNamespace(views=["hflip", "vflip"])  # identity computed but not chosen
    views = np.stack([np.full((1, 2), v, dtype=float) for v in (0.0, 1.0, 3.0)])[None]  # (folds, views, N, C)
    assert chosen_mean(p, views).tolist() == [[2.0, 2.0]]


def infer(tiny_run, *args):
    return run_script("infer.py", "--runs-dir", str(tiny_run), "--quiet", *args)


@pytest.mark.slow
def test_infer_writes_a_submission_matching_the_sample_and_scores_it(demo, tiny_run, tmp_path):
    proc = infer(tiny_run, "--exp", "tiny", "--out-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    # The training images were decoded once, when tiny_run trained (maybe in another process): reused here.
    cached = [line for line in proc.stdout.splitlines() if line.startswith("image cache:")]
    assert "reused" in cached[0] and "(200 images 28x28x1" in cached[0] and "(1000 images" in cached[1]
    sample = pd.read_csv(demo["data"] / "sample_submission.csv", dtype=str)
    sub = pd.read_csv(tmp_path / "tiny.csv", dtype=str)
    assert list(sub.columns) == list(sample.columns) and (sub["image"] == sample["image"]).all()
    assert set(sub["label"]) <= {str(i) for i in range(10)}
    probs = pd.read_csv(tmp_path / "tiny_test_probs.csv")
    assert len(probs) == 1000 and probs.filter(like="prob_").sum(axis=1).round(4).eq(1).all()
    assert len(pd.read_csv(tmp_path / "tiny_oof_probs.csv")) == 200
    report = (tmp_path / "tiny.md").read_text()
    for text in ("TTA on OOF rows", "mean of all 5", "chosen: identity+shift_left", "5-fold ensemble + TTA",
                 "Local leaderboard"):
        assert text in report, text
    scored = run_script("score.py", str(tmp_path / "tiny.csv"), "--solution", str(demo["data"] / "solution.csv"))
    assert scored.returncode == 0 and "accuracy public" in scored.stdout and "private" in scored.stdout
    lb = json.loads((tmp_path / "tiny_lb.json").read_text())
    assert lb["experiments"] == ["tiny"] and 0 <= lb["private"] <= 1 and lb["metric"] == "accuracy"
    table = run_script("runs.py", "--runs-dir", str(tiny_run), "--submissions-dir", str(tmp_path), "--out",
                       str(tmp_path / "table"))
    assert table.returncode == 0 and "5/5" in table.stdout and f"{lb['private']:.4f}" in table.stdout


@pytest.mark.slow
def test_greedy_tta_and_proba_submission(demo, tiny_run, tmp_path):
    proc = infer(tiny_run, "--exp", "tiny", "--out-dir", str(tmp_path), "--tta", "greedy", "--proba")
    assert proc.returncode == 2 and "use --proba" not in proc.stderr and "not the class names" in proc.stderr
    assert not (tmp_path / "tiny.csv").exists()  # nothing half-written
    proc = infer(tiny_run, "--exp", "tiny", "--out-dir", str(tmp_path), "--tta", "greedy", "--name", "g")
    assert proc.returncode == 0, proc.stderr
    report = (tmp_path / "g.md").read_text()
    assert "greedy, nested" in report and "| chosen: identity" in report


@pytest.mark.slow
def test_predictor_round_trip_matches_the_submission_probabilities(demo, tiny_run, tmp_path):
    assert infer(tiny_run, "--exp", "tiny", "--out-dir", str(tmp_path)).returncode == 0
    probs = pd.read_csv(tmp_path / "tiny_test_probs.csv", dtype={"image": str}).set_index("image")
    predictor = Predictor.load(tiny_run / "tiny", device="cpu")
    pred = predictor.predict(demo["data"] / "test" / "te_00003.png")
    expected = probs.loc["te_00003"]
    assert pred.probs == pytest.approx({c: expected[f"prob_{c}"] for c in predictor.classes}, abs=1e-5)
    assert pred.label == max(pred.probs, key=pred.probs.get)
    proc = infer(tiny_run, "--exp", "tiny", "--images", str(demo["data"] / "test" / "te_00003.png"))
    assert proc.returncode == 0 and "te_00003.png" in proc.stdout and pred.label in proc.stdout


@pytest.mark.slow
@pytest.mark.parametrize("missing", ["best.pt", "oof.csv"])
def test_missing_or_unfinished_fold_is_named(tiny_run, tmp_path, missing):
    shutil.copytree(tiny_run / "tiny", tmp_path / "partial")
    (tmp_path / "partial" / "fold3" / missing).unlink()
    proc = run_script("infer.py", "--runs-dir", str(tmp_path), "--exp", "partial", "--out-dir", str(tmp_path))
    assert proc.returncode == 2 and "fold(s) 3 of 5 not finished" in proc.stderr
    assert not list(tmp_path.glob("*.csv"))


@pytest.mark.slow
def test_two_experiments_blend_with_nested_fitted_weights(tiny_run, tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(tiny_run / "tiny", runs / "tiny")
    shutil.copytree(tiny_run / "tiny", runs / "twin")
    proc = run_script("infer.py", "--runs-dir", str(runs), "--exp", "tiny", "twin", "--blend", "fitted",
                      "--tta", "greedy", "--out-dir", str(tmp_path), "--quiet")
    assert proc.returncode == 0, proc.stderr
    report = (tmp_path / "tiny+twin.md").read_text()
    assert "## Blend on OOF rows" in report
    assert "fitted weights, nested (each fold scored with weights and greedy TTA views chosen on the others)" in report
    assert "weights used (fitted): tiny=0.500, twin=0.500" in report  # identical models: any split is optimal


@pytest.mark.slow
def test_a_changed_fold_file_is_refused(demo, tiny_run, tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(tiny_run / "tiny", runs / "tiny")
    folds = pd.read_csv(demo["folds"])
    folds["fold"] = folds["fold"].sample(frac=1, random_state=0).to_numpy()
    folds.to_csv(tmp_path / "shuffled.csv", index=False)
    config = runs / "tiny" / "fold0" / "config.json"
    record = json.loads(config.read_text())
    record["folds_csv"] = str(tmp_path / "shuffled.csv")
    config.write_text(json.dumps(record))
    proc = run_script("infer.py", "--runs-dir", str(runs), "--exp", "tiny", "--out-dir", str(tmp_path / "out"))
    assert proc.returncode == 2 and "folds_csv_sha256" in proc.stderr and "cannot be trusted" in proc.stderr
    assert not (tmp_path / "out").exists()


def competition_copy(demo, tmp_path, sample: pd.DataFrame) -> Path:
    """A data folder sharing the demo's test images, with its own sample submission and no solution."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "test").symlink_to(demo["data"] / "test")
    sample.to_csv(data / "sample_submission.csv", index=False)
    return data


@pytest.mark.slow
def test_proba_submission_fills_class_columns(demo, tiny_run, tmp_path):
    sample = pd.read_csv(demo["data"] / "sample_submission.csv")[["image"]]
    for c in ["3", "1", "0", "2", "4", "5", "6", "7", "8", "9"]:
        sample[c] = 0.1
    data = competition_copy(demo, tmp_path, sample)
    proc = infer(tiny_run, "--exp", "tiny", "--data-dir", str(data), "--proba", "--out-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    sub = pd.read_csv(tmp_path / "tiny.csv")
    assert list(sub.columns) == list(sample.columns) and sub.iloc[:, 1:].sum(axis=1).round(4).eq(1).all()


@pytest.mark.slow
def test_sample_id_without_a_test_image_is_refused(demo, tiny_run, tmp_path):
    sample = pd.read_csv(demo["data"] / "sample_submission.csv")
    sample.loc[5, "image"] = "te_missing"
    data = competition_copy(demo, tmp_path, sample)
    proc = infer(tiny_run, "--exp", "tiny", "--data-dir", str(data), "--out-dir", str(tmp_path / "out"))
    assert proc.returncode == 2
    assert proc.stderr.strip().endswith("line 7: image for id 'te_missing' not found in " + str(data / "test"))
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_unreadable_test_image_is_named(demo, tiny_run, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(demo["data"] / "test", data / "test")
    (data / "test" / "te_00010.png").write_bytes(b"\x89PNG broken")
    shutil.copy(demo["data"] / "sample_submission.csv", data / "sample_submission.csv")
    proc = infer(tiny_run, "--exp", "tiny", "--data-dir", str(data), "--out-dir", str(tmp_path / "out"))
    assert proc.returncode == 2 and "te_00010.png: truncated PNG" in proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_experiments_with_different_classes_cannot_be_blended(tiny_run, tmp_path):
    tiny_run = copy_run(tiny_run, tmp_path / "runs")
    data = make_competition(tmp_path / "binary", classes=("cat", "dog"), per_class=6)
    run_script("make_folds.py", "--data-dir", str(data), "--n-folds", "3", "--out", str(data / "folds.csv"))
    proc = run_script("train.py", "--data-dir", str(data), "--folds-csv", str(data / "folds.csv"), "--runs-dir",
                      str(tiny_run), "--exp", "binary", "--fold", "all", "--epochs", "1", "--batch-size", "4",
                      "--lr-warmup-epochs", "0", "--monitor", "eer")
    assert proc.returncode == 0, proc.stderr
    proc = infer(tiny_run, "--exp", "tiny", "binary", "--out-dir", str(tmp_path / "out"))
    assert proc.returncode == 2 and "only experiments on the same data can be blended" in proc.stderr
    image = str(data / "train" / "dog_1.png")
    proc = infer(tiny_run, "--exp", "binary", "--images", image, "--threshold", "eer", "--tta", "none")
    assert proc.returncode == 0 and "dog_1.png" in proc.stdout


@pytest.mark.slow
def test_a_folder_without_test_images_gets_the_oof_report_and_no_submission(tiny_run, tmp_path):
    cv_only = tmp_path / "cv_only"  # neither test/ nor sample_submission.csv: a cross-validation only folder
    cv_only.mkdir()
    proc = infer(tiny_run, "--exp", "tiny", "--data-dir", str(cv_only), "--out-dir", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    assert "No submission" in proc.stdout
    report = (tmp_path / "out" / "tiny.md").read_text()
    assert report.startswith("# OOF report tiny") and "TTA on OOF rows" in report
    assert len(pd.read_csv(tmp_path / "out" / "tiny_oof_probs.csv")) == 200
    assert not (tmp_path / "out" / "tiny.csv").exists()
    proc = infer(tiny_run, "--exp", "tiny", "--data-dir", str(tmp_path / "typo"), "--out-dir", str(tmp_path / "o2"))
    assert proc.returncode == 2 and "typo: data folder not found" in proc.stderr and not (tmp_path / "o2").exists()


@pytest.mark.slow
def test_a_run_whose_fold_file_was_renamed_finds_it_by_content(demo, tiny_run, tmp_path):
    runs = copy_run(tiny_run, tmp_path / "runs")
    (tmp_path / "folds").mkdir()
    renamed = tmp_path / "folds" / "mnist_small-0a1b2c3d_k5_s42.csv"
    shutil.copy(demo["folds"], renamed)  # a run trained before fold files got their id key in the name
    for config in (runs / "tiny").glob("fold*/config.json"):
        record = json.loads(config.read_text())
        record["folds_csv"] = str(tmp_path / "folds" / "mnist_small_k5_s42.csv")
        config.write_text(json.dumps(record))
    assert Predictor.load(runs / "tiny", device="cpu").folds_csv == str(renamed)
