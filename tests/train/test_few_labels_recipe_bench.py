"""bench/few_labels_recipe.py keeps running: its quick mode end to end, every stage in the table (numbers are
not checked: one epoch), and its table's running total."""
import importlib.util

import pandas as pd
import pytest

from helpers import REPO, TINY, run_script


@pytest.mark.slow
def test_recipe_bench_quick_mode_runs_every_stage_and_writes_one_table(demo, tmp_path):
    folds = tmp_path / "folds2.csv"
    proc = run_script("make_folds.py", "--data-dir", str(demo["data"]), "--n-folds", "2", "--out", str(folds),
                      "--quiet")
    assert proc.returncode == 0, proc.stderr
    tiny = " ".join(x for x in TINY if x not in ("--epochs", "2"))
    out = tmp_path / "recipe.md"
    proc = run_script("bench/few_labels_recipe.py", "--data-dir", str(demo["data"]), "--quick", "--rounds", "1",
                      "--unlabeled-dir", "unlabeled_small", "--work", str(tmp_path / "work"), "--out", str(out),
                      f"--train-args=--folds-csv {folds} {tiny}",
                      f"--pretrain-args=--folds-csv {folds} --batch-size 32 --no-include-test")
    assert proc.returncode == 0, proc.stderr
    table = pd.read_csv(out.with_suffix(".csv"))
    assert [s.split(" (")[0] for s in table["stage"]] == ["ssl pretraining", "consistency", "pseudo-label round 1"]
    trained = table[table["stage"] != "ssl pretraining (no labels)"]
    assert trained[["oof_accuracy_final", "public", "private"]].notna().all().all()
    assert (table["wall_s"] > 0).all() and table["cumulative_min"].is_monotonic_increasing
    assert table["cumulative_min"].iloc[-1] * 60 == pytest.approx(table["wall_s"].sum())
    assert "Few-labels recipe" in out.read_text()


def test_recipe_bench_without_a_competition_is_one_line_exit_2_and_writes_nothing(tmp_path):
    proc = run_script("bench/few_labels_recipe.py", "--data-dir", str(tmp_path / "none"), "--work",
                      str(tmp_path / "work"), "--out", str(tmp_path / "r.md"))
    assert proc.returncode == 2 and "no train.csv" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "work").exists()
    assert not (tmp_path / "r.md").exists()


def test_the_supervised_yardstick_has_no_running_total_and_adds_to_none():
    spec = importlib.util.spec_from_file_location("few_labels_recipe", REPO / "bench" / "few_labels_recipe.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rows = [{"stage": "supervised", "wall_s": 60.0, "private": 0.8}, {"stage": "ssl", "wall_s": 120.0},
            {"stage": "consistency", "wall_s": 240.0, "private": 0.97}]
    table = bench.stage_table(rows, supervised=True)
    assert table["cumulative_min"].isna().tolist() == [True, False, False]
    assert table["cumulative_min"].iloc[1:].tolist() == [2.0, 6.0]
    assert bench.stage_table(rows, supervised=False)["cumulative_min"].tolist() == [1.0, 3.0, 7.0]
    assert "holdout_accuracy" not in table.columns  # no stage scored it: no empty column
