"""bench/suite.py keeps running: its quick mode over four small sets, and the build of a missing set."""
import pandas as pd
import pytest

from helpers import make_competition, run_script

pytestmark = pytest.mark.slow


def test_suite_quick_mode_scores_each_set_and_judges_against_an_earlier_run(tmp_path):
    # Two small sets (each costs a handful of fresh processes); the others differ only in their folder and flags.
    photos = make_competition(tmp_path / "photos", per_class=10, size_px=16)
    digits = make_competition(tmp_path / "digits", per_class=10, size_px=12, seed=1)
    out = tmp_path / "suite.md"
    sets = ["--sets", "demo,hymenoptera", "--set", f"demo={digits}", "--set", f"hymenoptera={photos}"]
    earlier = tmp_path / "earlier.csv"  # an earlier sitting's table, as --out wrote it (its judged columns)
    pd.DataFrame({"set": ["hymenoptera", "mean over sets"], "kit": [0.5, 0.5], "gain pp": [0.0, 0.0],
                  "seed spread pp": [float("nan"), float("nan")]}).to_csv(earlier, index=False)
    proc = run_script("bench/suite.py", "--quick", "--seeds", "1", *sets, "--out", str(out), "--against", str(earlier))
    assert proc.returncode == 0, proc.stderr
    assert "Against the earlier run, per set: hymenoptera" in proc.stdout  # the sets both sittings ran
    table = pd.read_csv(out.with_suffix(".csv"))
    assert list(table["set"]) == ["demo", "hymenoptera", "mean over sets"]
    assert table[["notebook", "kit", "gain pp", "time ratio"]].notna().all().all()
    assert table["gain pp"].iloc[-1] == pytest.approx(table["gain pp"].iloc[:-1].mean())
    assert (tmp_path / "suite_hymenoptera.md").is_file()  # each set's own per-seed table is kept
    assert set(pd.read_csv(tmp_path / "suite_demo.csv")["arm"]) == {"kit", "notebook"}
    text = out.read_text()
    assert "not a measurement" in text and "Machine:" in text and "mean gain" in text


def test_a_missing_built_set_is_built_by_the_suite(tmp_path):
    proc = run_script("bench/suite.py", "--sets", "greycrops", "--data-root", str(tmp_path), "--build-only")
    assert proc.returncode == 0, proc.stderr
    assert len(pd.read_csv(tmp_path / "greycrops" / "train.csv")) == 4000


def test_suite_names_a_missing_set_in_one_line(tmp_path):
    proc = run_script("bench/suite.py", "--quick", "--sets", "trashnet", "--set", f"trashnet={tmp_path / 'nope'}")
    assert proc.returncode == 2 and "no train.csv for set 'trashnet'" in proc.stderr
    proc = run_script("bench/suite.py", "--sets", "cifar")
    assert proc.returncode == 2 and "unknown set 'cifar'" in proc.stderr


def suite_module():
    import importlib.util

    from helpers import REPO
    spec = importlib.util.spec_from_file_location("suite", REPO / "bench" / "suite.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def table(kit, gains, spreads):
    sets = ["demo", "trashnet"]
    return pd.DataFrame({"set": sets + ["mean over sets"], "kit": kit + [sum(kit) / 2],
                         "gain pp": gains + [sum(gains) / 2], "seed spread pp": spreads + [float("nan")]})


def test_a_candidate_replaces_the_earlier_one_only_when_the_mean_gain_rises_and_no_set_loses_beyond_its_spread():
    judged = suite_module().judged
    before = table([0.99, 0.70], [0.1, -2.0], [0.3, 1.0])
    assert "may replace it." in judged(table([0.99, 0.73], [0.1, 1.0], [0.3, 1.0]), before)
    verdict = judged(table([0.97, 0.80], [-1.9, 8.0], [0.3, 1.0]), before)  # demo -2 pp: beyond its 0.3 spread
    assert "may NOT replace it (demo loses more than its seed spread)" in verdict
    verdict = judged(table([0.99, 0.695], [0.1, -2.5], [0.3, 1.0]), before)  # -0.5 pp on trashnet is within 1.0
    assert "may NOT replace it (the mean gain does not rise)" in verdict
    one_seed = table([0.989, 0.75], [0.0, 3.0], [float("nan")] * 2)  # no spread: any loss counts
    earlier_one_seed = table([0.99, 0.70], [0.1, -2.0], [float("nan")] * 2)
    assert "demo loses more than its seed spread" in judged(one_seed, earlier_one_seed)
