"""bench/suite.py keeps running: its quick mode over four small sets, and the build of a missing set."""
import pandas as pd
import pytest

from helpers import make_competition, run_script

pytestmark = pytest.mark.slow


def test_suite_quick_mode_scores_each_set_and_judges_against_an_earlier_run(demo, tmp_path):
    # Two sets (each costs a handful of fresh processes); the other two differ only in their folder and flags.
    photos = make_competition(tmp_path / "photos", per_class=10, size_px=16)
    out = tmp_path / "suite.md"
    sets = ["--sets", "demo,hymenoptera", "--set", f"demo={demo['data']}", "--set", f"hymenoptera={photos}"]
    proc = run_script("bench/suite.py", "--quick", "--seeds", "1", *sets, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    table = pd.read_csv(out.with_suffix(".csv"))
    assert list(table["set"]) == ["demo", "hymenoptera", "mean over sets"]
    assert table[["notebook", "kit", "gain pp", "time ratio"]].notna().all().all()
    assert table["gain pp"].iloc[-1] == pytest.approx(table["gain pp"].iloc[:-1].mean())
    assert (tmp_path / "suite_hymenoptera.md").is_file()  # each set's own per-seed table is kept
    assert set(pd.read_csv(tmp_path / "suite_demo.csv")["arm"]) == {"kit", "notebook"}
    text = out.read_text()
    assert "not a measurement" in text and "Machine:" in text and "mean gain" in text
    judged = run_script("bench/suite.py", "--quick", "--seeds", "1", *sets[2:], "--sets", "hymenoptera",
                        "--against", str(out.with_suffix(".csv")))
    assert judged.returncode == 0, judged.stderr
    assert "Against the earlier run, per set: hymenoptera" in judged.stdout


def test_a_missing_built_set_is_built_by_the_suite(tmp_path):
    proc = run_script("bench/suite.py", "--sets", "greycrops", "--data-root", str(tmp_path), "--build-only")
    assert proc.returncode == 0, proc.stderr
    assert len(pd.read_csv(tmp_path / "greycrops" / "train.csv")) == 4000


def test_suite_names_a_missing_set_in_one_line(tmp_path):
    proc = run_script("bench/suite.py", "--quick", "--sets", "trashnet", "--set", f"trashnet={tmp_path / 'nope'}")
    assert proc.returncode == 2 and "no train.csv for set 'trashnet'" in proc.stderr
    proc = run_script("bench/suite.py", "--sets", "cifar")
    assert proc.returncode == 2 and "unknown set 'cifar'" in proc.stderr
