"""ablate.py: its plan (strict spec, shared runs, job list, resume) and paired summary without training, then
end to end on the small demo (2 arms x 2 folds x 1 short epoch: report files, resume, partial results)."""

import numpy as np
import pandas as pd
import pytest
import yaml

from src.compare.plan import job_lines, plan_runs, regimes, run_folds, unique_runs
from src.compare.report import ENSEMBLE, markdown_report, summarize
from src.compare.spec import load_spec, spec_from_dict
from src.core.errors import UserError
from src.data.folds import make_fold_file

from helpers import REPO, make_competition, run_script

SPEC = {"name": "t", "data_dir": "data/x", "seeds": [1, 2], "folds": "0,1", "train": "--epochs 1",
        "arms": {"real": {}, "heavy": {"train": "--augment heavy"}, "tta": {"tta": "auto"}}}


def spec(**changes):
    return spec_from_dict({**SPEC, **changes}, "test.yaml").validate()


def test_spec_is_strict():
    with pytest.raises(UserError, match="unknown key 'seed'"):
        spec_from_dict({**SPEC, "seed": 1}, "test.yaml")
    with pytest.raises(UserError, match="arm 'real' may only have"):
        spec_from_dict({**SPEC, "arms": {"real": {"flags": "x"}, "b": {}}}, "test.yaml")
    with pytest.raises(UserError, match="baseline 'nope'"):
        spec(baseline="nope")
    with pytest.raises(UserError, match="sets --seed"):
        spec(arms={"a": {}, "b": {"train": "--seed 3"}})
    with pytest.raises(UserError, match="labels_per_class 'ten'"):
        spec(labels_per_class=["ten"])


def test_arms_with_the_same_training_flags_share_runs_and_flags_name_the_experiment():
    s = spec()
    plan = plan_runs(s)
    assert len(plan) == 3 * 2 and len(unique_runs(plan)) == 2 * 2  # the TTA arm reuses real's models
    assert plan[("x", "tta", 1)].exp == plan[("x", "real", 1)].exp != plan[("x", "heavy", 1)].exp
    assert plan[("x", "real", 1)].exp != plan[("x", "real", 2)].exp
    edited = plan_runs(spec(arms={"real": {}, "heavy": {"train": "--augment light"}}))
    assert edited[("x", "heavy", 1)].exp != plan[("x", "heavy", 1)].exp  # changed flags: a new experiment
    assert "--seed" in plan[("x", "real", 2)].args and "2" in plan[("x", "real", 2)].args


def test_a_changed_file_behind_a_flag_makes_a_new_experiment(tmp_path):
    config, backbone, samples = tmp_path / "arm.yaml", tmp_path / "backbone.pt", tmp_path / "syn" / "fold0"
    samples.mkdir(parents=True)
    backbone.write_bytes(b"weights v1")
    config.write_text(f"lr: 0.001\npretrained: {backbone}\n")
    (samples / "manifest.csv").write_text("file,label\na.png,0\n")
    arms = {"real": {}, "cfg": {"train": f"--config {config}"}, "syn": {"train": f"--synthetic={samples.parent}"}}

    def names():
        return {arm: run.exp for (_, arm, _), run in plan_runs(spec(arms=arms, seeds=[1])).items()}

    first = names()
    (samples / "last.pt").write_bytes(b"generator state")  # what train.py never reads may change freely
    (samples / "cas").mkdir()
    (samples / "cas" / "log.csv").write_text("epoch,seconds\n0,1.3\n")
    assert names() == first  # nothing train.py reads changed: the finished runs are reused
    config.write_text(f"lr: 0.002\npretrained: {backbone}\n")
    after_config = names()
    assert after_config["cfg"] != first["cfg"] and after_config["real"] == first["real"]
    backbone.write_bytes(b"weights v2")  # named inside the YAML, not on the command line
    after_weights = names()
    assert after_weights["cfg"] != after_config["cfg"] and after_weights["syn"] == first["syn"]
    (samples / "manifest.csv").write_text("file,label\nb.png,1\n")
    assert names()["syn"] != first["syn"]


def test_demo_regimes_get_their_folders_and_flags():
    s = spec(labels_per_class="10,all", regime_train={"10": "--batch-size 16"},
             arms={"real": {}, "syn": {"train": "--synthetic synthetic/g-lpc{lpc}"}})
    plan = plan_runs(s)
    assert plan[("lpc10", "real", 1)].args[:4] == ["--epochs", "1", "--batch-size", "16"]
    assert "data/x_lpc10" in plan[("lpc10", "syn", 1)].args and "synthetic/g-lpc10" in plan[("lpc10", "syn", 1)].args
    assert "synthetic/g-lpcall" in plan[("lpcall", "syn", 2)].args and "data/x" in plan[("lpcall", "syn", 2)].args


def test_job_list_has_one_command_per_unfinished_fold(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_competition(tmp_path / "data" / "x")
    s = spec()
    assert job_lines(s)[0] == "python make_folds.py --data-dir data/x"  # no fold file for this data yet
    make_fold_file("data/x", "train.csv", "train", "image", "label", "", 3, 42, None)  # folds/x-<key>_k3_s42.csv
    lines = job_lines(s)
    assert len(lines) == 2 * 2 * 2 and all(line.startswith("python train.py ") for line in lines)
    assert all("--resume" in line for line in lines)
    run = plan_runs(s)[("x", "real", 1)]
    done = tmp_path / "runs" / run.exp / "fold0"
    done.mkdir(parents=True)
    (done / "best.pt").write_bytes(b"")
    (done / "oof.csv").write_text("")
    lines = job_lines(s)
    assert len(lines) == 7 and not any(run.exp in line and "--fold 0 " in line for line in lines)


def test_a_fold_file_with_a_holdout_plans_its_folds_not_the_holdout(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_competition(tmp_path / "data" / "x", per_class=10)
    make_fold_file("data/x", "train.csv", "train", "image", "label", "", 3, 42, None, holdout=0.2)  # ..._h20.csv
    s = spec(folds="all")
    assert run_folds(s, plan_runs(s)[("x", "real", 1)]) == [0, 1, 2]
    assert len(job_lines(s)) == 2 * 2 * 3


def results(arm_shift: dict, missing: tuple = ()) -> pd.DataFrame:
    rows = []
    base = {(s, k): 0.8 + 0.01 * k + 0.02 * s for s in (1, 2) for k in (0, 1)}
    for arm, shift in arm_shift.items():
        for (seed, fold), value in base.items():
            oof = np.nan if (arm, seed, fold) in missing else value + shift + (0.001 * fold if shift else 0)
            rows.append({"regime": "x", "arm": arm, "seed": seed, "fold": str(fold), "oof": oof,
                         "private": oof, "public": oof})
        rows += [{"regime": "x", "arm": arm, "seed": s, "fold": ENSEMBLE, "oof": 0.9, "private": 0.9}
                 for s in (1, 2)]
    return pd.DataFrame(rows)


def test_summary_pairs_over_folds_and_seeds():
    s = spec()
    summary = summarize(s, results({"real": 0.0, "heavy": 0.05, "tta": -0.05})).set_index("arm")
    assert summary.loc["real", "oof_verdict"] == "baseline"
    assert summary.loc["heavy", "oof_pairs"] == 4 and summary.loc["heavy", "oof_diff"] == pytest.approx(0.0505)
    assert summary.loc["heavy", "oof_verdict"] == "helps" and summary.loc["tta", "oof_verdict"] == "hurts"
    assert summary.loc["heavy", "runs_done"] == 4 and summary.loc["heavy", "ensemble_private_mean"] == 0.9


def test_a_holdout_score_gets_its_own_paired_verdict_beside_the_oof_and_private_ones():
    s = spec()
    frame = results({"real": 0.0, "heavy": 0.05, "tta": 0.0})
    frame["holdout"] = frame["oof"] - np.where(frame["arm"] == "heavy", 0.1, 0.0)  # heavy: better OOF, worse holdout
    summary = summarize(s, frame)
    heavy = summary.set_index("arm").loc["heavy"]
    assert heavy["oof_verdict"] == "helps" and heavy["holdout_verdict"] == "hurts"
    text = markdown_report(s, summary, frame)
    assert "holdout, per fold model" in text and "holdout -4.95 pp" in text and "private LB +5.05 pp" in text


def test_missing_runs_give_a_partial_report_without_verdicts():
    s = spec()
    frame = results({"real": 0.0, "heavy": 0.05, "tta": 0.0}, missing=(("heavy", 2, 1),))
    summary = summarize(s, frame)
    row = summary.set_index("arm").loc["heavy"]
    assert row["runs_done"] == 3 and row["oof_pairs"] == 3 and row["oof_verdict"] == "incomplete"
    text = markdown_report(s, summary, frame)
    assert "PARTIAL: 11 of 12 fold runs finished" in text and "incomplete" in text


def test_an_expensive_regime_can_have_fewer_seeds_and_folds():
    s = spec(labels_per_class=[10, "all"], folds="all", regime_seeds={"all": [1]}, regime_folds={"all": "0,2"})
    plan = plan_runs(s)
    assert {seed for (regime, _, seed) in plan if regime == "lpcall"} == {1}
    assert {seed for (regime, _, seed) in plan if regime == "lpc10"} == {1, 2}
    lpcall = next(r for r in regimes(s) if r.name == "lpcall")
    assert lpcall.folds == "0,2" and next(r for r in regimes(s) if r.name == "lpc10").folds == "all"
    with pytest.raises(UserError, match="regime_seeds key 'ten'"):
        spec(regime_seeds={"ten": [1]})


@pytest.mark.parametrize("path", sorted(REPO.glob("configs/ablations/*.yaml")))
def test_shipped_ablation_specs_load_and_plan(path):
    s = load_spec(path).validate()
    assert plan_runs(s) and all("{lpc}" not in " ".join(run.args) for run in plan_runs(s).values())


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


@pytest.mark.slow
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
    # Verdicts on the final weights' OOF; best.pt's (chosen on the same rows) only beside it, marked.
    assert "OOF accuracy, final weights" in text and "OOF, best.pt (optimistic)" in text
    assert runs["oof"].between(0, 1).all() and runs["oof_best"].between(0, 1).all()
    assert (root / "reports" / "tiny.png").stat().st_size > 0
    assert proc.stdout.count("trained abl-tiny-") == 2  # the TTA arm reused the real arm's models
    tta = runs[(runs["arm"] == "tta") & (runs["fold"] != "ensemble")]
    assert (tta["views"] != "identity").all()


@pytest.mark.slow
def test_rerun_trains_nothing_and_print_jobs_is_empty(ablation):
    root, spec, _ = ablation
    logs = sorted((root / "reports" / "tiny" / "logs").glob("abl-*.log"))
    before = [p.read_text() for p in logs]
    proc = run_script("ablate.py", str(spec), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "trained " not in proc.stdout and [p.read_text() for p in logs] == before
    jobs = run_script("ablate.py", str(spec), "--print-jobs")
    assert jobs.returncode == 0 and jobs.stdout.strip() == ""


@pytest.mark.slow
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


@pytest.mark.slow
def test_bad_spec_fails_in_one_line(tmp_path, demo):
    spec = write_spec(tmp_path / "bad.yaml", demo, tmp_path, arms={"real": {}, "b": {"tta": "auto", "x": 1}})
    proc = run_script("ablate.py", str(spec))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "arm 'b' may only have" in proc.stderr
