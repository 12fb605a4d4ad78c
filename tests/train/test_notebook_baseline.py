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


def test_kit_vs_notebook_bench_runs_both_arms_on_the_same_folds(tmp_path):
    data = make_competition(tmp_path / "comp", classes=("a", "b"), per_class=12, size_px=16)
    assert run_script("make_folds.py", "--data-dir", str(data), "--out", str(tmp_path / "f.csv"),
                      "--quiet").returncode == 0
    out = tmp_path / "cmp.md"
    proc = run_subprocess("bench/kit_vs_notebook.py", "--data-dir", str(data), "--folds-csv", str(tmp_path / "f.csv"),
                          "--kit-args=--batch-size 8 --model smallcnn", "--cache-dir", str(tmp_path / "cache"),
                          "--quick", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    runs = pd.read_csv(out.with_suffix(".csv"))
    assert list(runs["arm"]) == ["notebook", "kit"] and runs["accuracy"].between(0, 1).all()
    assert "x** the notebook's wall time" in out.read_text()
