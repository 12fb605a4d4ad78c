"""The notebook baseline runs on the kit's own fold file and reports what a paired comparison needs: one row
per fold, the pooled OOF, and an OOF file with one row per validation image (numbers are not checked)."""
import pandas as pd
import pytest

from helpers import make_competition, run_script, run_subprocess

pytestmark = pytest.mark.slow


def make_folded_competition(root, classes):
    """A tiny competition with its fold file where train.py looks for it by default (<root>/folds/)."""
    make_competition(root / "comp", classes=classes, per_class=10)
    proc = run_script("make_folds.py", "--data-dir", "comp", "--quiet", cwd=root)
    assert proc.returncode == 0, proc.stderr
    return root / "comp"


@pytest.mark.parametrize("classes", [("cat", "dog"), ("cat", "dog", "owl")])
def test_quick_run_reports_each_fold_and_writes_oof_on_the_default_fold_file(tmp_path, classes):
    make_folded_competition(tmp_path, classes)
    proc = run_script("bench/notebook_baseline.py", "--quick", "--data-dir", "comp", "--out", "out/nb.md",
                      cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    folds = pd.read_csv(next((tmp_path / "folds").glob("comp-*.csv")))
    table = pd.read_csv(tmp_path / "out" / "nb.csv")
    per_fold = table[table["fold"].str.isdigit()]
    assert per_fold["fold"].astype(int).tolist() == [0, 1]  # --quick: the first two folds
    assert per_fold["accuracy"].between(0, 1).all()
    assert per_fold["eer"].notna().all() if len(classes) == 2 else table["eer"].isna().all()
    assert set(table["fold"]) >= {"mean", "std", "all (pooled OOF)"}
    oof = pd.read_csv(tmp_path / "out" / "nb_oof.csv", dtype={"id": str, "label": str})
    assert sorted(oof["id"]) == sorted(folds.loc[folds["fold"] < 2, "image"])
    assert list(oof.columns) == ["id", "label", "fold", "pred", *(f"prob_{c}" for c in classes)]
    report = (tmp_path / "out" / "nb.md").read_text()
    assert "Pooled OOF accuracy" in report and "torch threads" in report and "not a measurement" in report


def test_missing_fold_file_says_how_to_make_it(tmp_path):
    make_competition(tmp_path / "comp")
    proc = run_script("bench/notebook_baseline.py", "--quick", "--data-dir", "comp", cwd=tmp_path)
    assert proc.returncode == 2
    assert "python make_folds.py --data-dir comp" in proc.stderr and "Traceback" not in proc.stderr


def test_missing_data_dir_is_a_one_line_error(tmp_path):
    proc = run_script("bench/notebook_baseline.py", "--data-dir", str(tmp_path / "nowhere"))
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "competition folder not found" in proc.stderr


def test_help_exits_cleanly():
    proc = run_script("bench/notebook_baseline.py", "--help")
    assert proc.returncode == 0 and "--no-flip" in proc.stdout


def test_kit_vs_notebook_bench_scores_both_arms_on_the_same_holdout_rows_and_the_labelled_test_set(tmp_path):
    import shutil
    data = make_competition(tmp_path / "comp", classes=("a", "b"), per_class=15, size_px=16)
    (data / "test").mkdir()
    rows = []
    for i, name in enumerate(["a_0", "a_1", "a_2", "b_0", "b_1", "b_2"]):
        shutil.copy(data / "train" / f"{name}.png", data / "test" / f"t{i}.png")
        rows.append((f"t{i}", name[0], "Public" if i % 2 else "Private"))
    sol = pd.DataFrame(rows, columns=["image", "label", "Usage"])
    sol.to_csv(data / "solution.csv", index=False)
    sol[["image"]].assign(label="a").to_csv(data / "sample_submission.csv", index=False)
    out = tmp_path / "cmp.md"
    proc = run_subprocess("bench/kit_vs_notebook.py", "--data-dir", str(data), "--kit-args=--batch-size 8",
                          "--cache-dir", str(tmp_path / "cache"), "--quick", "--test", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    runs = pd.read_csv(out.with_suffix(".csv"))
    assert list(runs["arm"]) == ["notebook", "kit"] and runs["n_holdout"].eq(6).all()  # 20 % of 30, both arms
    for column in ("holdout_accuracy", "oof_final_accuracy", "holdout_eer", "test_accuracy"):
        assert runs[column].between(0, 1).all(), column
    assert runs["n_test"].eq(6).all()
    assert runs["oof_best_accuracy"].isna().tolist() == [True, False]  # the notebook picks no checkpoint
    text = out.read_text()
    assert "Kit gain on the holdout" in text and "x** the notebook's wall time" in text and "optimistic" in text
    assert "on the test set" in text and "test accuracy" in text


def test_the_notebook_trains_on_no_holdout_row_and_scores_its_fold_models_mean_there(tmp_path):
    data = make_competition(tmp_path / "comp", classes=("cat", "dog"), per_class=15)
    folds = tmp_path / "f.csv"
    assert run_script("make_folds.py", "--data-dir", str(data), "--holdout", "0.2", "--n-folds", "3", "--out",
                      str(folds), "--quiet").returncode == 0
    proc = run_script("bench/notebook_baseline.py", "--quick", "--data-dir", str(data), "--folds-csv", str(folds),
                      "--out", str(tmp_path / "nb.md"))
    assert proc.returncode == 0, proc.stderr
    held = pd.read_csv(tmp_path / "nb_holdout.csv", dtype=str)
    frame = pd.read_csv(folds, dtype=str)
    assert set(held["id"]) == set(frame.loc[frame["fold"] == "holdout", "image"]) and len(held) == 6
    oof = pd.read_csv(tmp_path / "nb_oof.csv", dtype=str)
    assert not set(oof["id"]) & set(held["id"])
    table = pd.read_csv(tmp_path / "nb.csv")
    assert table["n_train"].iloc[0] <= 16 and "holdout (mean of the fold models)" in set(table["fold"])
    assert "Holdout accuracy (mean of the fold models)" in (tmp_path / "nb.md").read_text()


def test_the_notebook_reads_other_column_names(tmp_path):
    data = make_competition(tmp_path / "comp", classes=("cat", "dog"), per_class=10)
    pd.read_csv(data / "train.csv").rename(columns={"image": "file", "label": "kind"}).to_csv(
        data / "labels.csv", index=False)
    (data / "train.csv").unlink()
    folds = tmp_path / "f.csv"
    flags = ["--data-dir", str(data), "--train-csv", "labels.csv", "--id-col", "file", "--label-col", "kind"]
    assert run_script("make_folds.py", *flags, "--out", str(folds), "--quiet").returncode == 0
    proc = run_script("bench/notebook_baseline.py", "--quick", *flags, "--folds-csv", str(folds))
    assert proc.returncode == 0, proc.stderr


def test_split_seed_makes_one_fold_file_that_every_seed_shares(tmp_path):
    import importlib.util
    from types import SimpleNamespace

    from helpers import REPO
    spec = importlib.util.spec_from_file_location("kit_vs_notebook", REPO / "bench" / "kit_vs_notebook.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    data = make_competition(tmp_path / "comp", classes=("a", "b"), per_class=15, size_px=16)
    args = SimpleNamespace(folds_csv="", split_seed=7, holdout=0.2, n_folds=2, quick=False, data_dir=str(data),
                           train_csv="train.csv", image_dir="train", id_col="image", label_col="label",
                           cache_dir=str(tmp_path / "cache"))
    shared = bench.fold_file(args, 1, tmp_path)
    assert bench.fold_file(args, 2, tmp_path) == shared and shared.name == "folds_s7.csv"
    args.split_seed = None  # the default: a fold file per seed, each its own holdout
    assert bench.fold_file(args, 1, tmp_path).name == "folds_s1.csv"
