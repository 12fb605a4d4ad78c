"""ablate.py end to end on the small demo: 2 arms x 2 folds x 1 short epoch, report files, resume and
partial results."""
import pandas as pd
import pytest
import yaml
from conftest import run_script

pytestmark = pytest.mark.slow


def write_spec(path, demo, root, **changes):
    spec = {"name": "tiny", "data_dir": str(demo["data"]), "folds": "0,1", "seeds": [7],
            "train": f"--folds-csv {demo['folds']} --epochs 1 --batch-size 32 --lr-warmup-epochs 0.5",
            "runs_dir": str(root / "runs"), "report_dir": str(root / "reports"),
            "arms": {"real": {}, "no-aug": {"train": "--augment none"}, "tta": {"tta": "auto"}}, **changes}
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def ablation(demo, tmp_path_factory):
    root = tmp_path_factory.mktemp("ablate")
    spec = write_spec(root / "tiny.yaml", demo, root)
    proc = run_script("ablate.py", str(spec), "--quiet")
    assert proc.returncode == 0, proc.stderr
    return root, spec, proc


def test_report_has_every_arm_with_paired_differences(ablation):
    root, _, proc = ablation
    summary = pd.read_csv(root / "reports" / "tiny.csv")
    assert summary["arm"].tolist() == ["real", "no-aug", "tta"]
    assert summary["runs_done"].tolist() == [2, 2, 2] and summary["oof_pairs"].tolist()[1:] == [2, 2]
    # Two (fold, seed) pairs per arm: below the 3 a verdict needs.
    assert summary["oof_verdict"].tolist() == ["baseline", "too few pairs", "too few pairs"]
    runs = pd.read_csv(root / "reports" / "tiny_runs.csv", dtype={"fold": str})
    assert len(runs[runs["fold"] != "ensemble"]) == 6 and runs["private"].between(0, 1).all()
    text = (root / "reports" / "tiny.md").read_text()
    assert "Status: complete" in text and "Student t interval" in text and "**no-aug** vs real" in text
    assert (root / "reports" / "tiny.png").stat().st_size > 0
    assert proc.stdout.count("trained abl-tiny-") == 2  # the TTA arm reused the real arm's models
    tta = runs[(runs["arm"] == "tta") & (runs["fold"] != "ensemble")]
    assert (tta["views"] != "identity").all()


def test_rerun_trains_nothing_and_print_jobs_is_empty(ablation):
    root, spec, _ = ablation
    logs = sorted((root / "reports" / "tiny" / "logs").glob("abl-*.log"))
    before = [p.read_text() for p in logs]
    proc = run_script("ablate.py", str(spec), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "trained " not in proc.stdout and [p.read_text() for p in logs] == before
    jobs = run_script("ablate.py", str(spec), "--print-jobs")
    assert jobs.returncode == 0 and jobs.stdout.strip() == ""


def test_missing_fold_is_reported_as_partial_and_failed_jobs_fail_the_command(ablation, demo):
    root, _, _ = ablation
    spec = write_spec(root / "broken.yaml", demo, root, name="broken",
                      arms={"real": {}, "syn": {"train": f"--synthetic {root / 'nowhere'}"}})
    proc = run_script("ablate.py", str(spec), "--quiet")
    assert proc.returncode == 1 and "1 training job(s) failed" in proc.stderr
    assert "nowhere" in proc.stderr and "broken/logs/" in proc.stderr
    text = (root / "reports" / "broken.md").read_text()
    assert "PARTIAL: 2 of 4 fold runs finished" in text and "incomplete" in text
    jobs = run_script("ablate.py", str(spec), "--print-jobs").stdout.strip().splitlines()
    assert len(jobs) == 2 and all("--synthetic" in line for line in jobs)


def test_bad_spec_fails_in_one_line(tmp_path, demo):
    spec = write_spec(tmp_path / "bad.yaml", demo, tmp_path, arms={"real": {}, "b": {"tta": "auto", "x": 1}})
    proc = run_script("ablate.py", str(spec))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "arm 'b' may only have" in proc.stderr
