"""gen_synthetic.py end to end on the small demo, and train.py --synthetic with its leak guard."""
import json
import shutil

import pandas as pd
import pytest

from helpers import run_script, train

pytestmark = pytest.mark.slow

GEN_TINY = ["--epochs", "2", "--batch-size", "32", "--resolution-px", "16", "--per-class", "6", "--sample-steps", "3",
            "--quiet"]


@pytest.fixture(scope="module")
def generated(demo, tmp_path_factory):
    """Fold 0's generator, samples filtered by the CAS baseline, and the CAS report: one `all` run."""
    root = tmp_path_factory.mktemp("gen")
    cas_config = root / "cas.yaml"
    cas_config.write_text("epochs: 2\nbatch_size: 32\nlr_warmup_epochs: 0.5\n")
    proc = run_gen(demo, root, "all", "--fold", "0", "--cas-config", str(cas_config), "--filter-confidence", "0")
    assert proc.returncode == 0, proc.stderr
    return root / "syn" / "tiny"


def run_gen(demo, root, *args):
    return run_script("gen_synthetic.py", *args, "--data-dir", str(demo["data"]), "--folds-csv", str(demo["folds"]),
                      "--out-dir", str(root / "syn"), "--exp", "tiny", *GEN_TINY)


def test_all_writes_generator_samples_manifest_and_cas_report(generated):
    fold = generated / "fold0"
    for name in ("generator.pt", "last.pt", "log.csv", "loss.png", "grid.png", "samples.png", "manifest.csv",
                 "meta.json", "kept_per_class.csv", "cas.md", "cas.csv", "config.json"):
        assert (fold / name).is_file(), name
    manifest = pd.read_csv(fold / "manifest.csv", dtype={"label": str, "predicted": str})
    assert list(manifest.columns) == ["file", "label", "guidance", "seed", "confidence", "predicted", "kept"]
    assert len(manifest) == 60 and (manifest["label"].value_counts() == 6).all()
    assert manifest["seed"].is_unique and manifest["confidence"].between(0, 1).all()
    assert all((fold / f).is_file() for f in manifest["file"])
    cas = pd.read_csv(fold / "cas.csv")
    assert cas["trained on"].tolist() == ["real", "synthetic (all samples)", "synthetic (kept by filter)"]
    assert cas["train rows"].tolist() == [160, 60, int(manifest["kept"].sum())]
    assert cas["all"][:2].between(0, 1).all()
    kept = manifest[manifest["kept"]]
    assert (kept["predicted"] == kept["label"]).all()  # the filter keeps only samples it agrees with
    config = json.loads((fold / "config.json").read_text())
    assert config["n_train"] == 160 and config["fold"] == 0


def test_train_with_synthetic_rows_uses_them_for_training_only(demo, generated):
    proc = train(demo, "with-syn", "--fold", "0", "--synthetic", str(generated), "--synthetic-ratio", "0.25",
                 "--synthetic-unfiltered")
    assert proc.returncode == 0, proc.stderr
    run = demo["root"] / "runs" / "with-syn" / "fold0"
    trained = set(pd.read_csv(run / "train_rows.csv", dtype=str)["id"])
    synthetic = {i for i in trained if "/images/syn_f0_" in i}
    assert len(synthetic) == 40  # 0.25 x 16 real rows per class x 10 classes
    validated = set(pd.read_csv(run / "oof.csv", dtype=str)["id"])
    folds = pd.read_csv(demo["folds"], dtype=str)
    assert validated == set(folds.loc[folds["fold"] == "0", "image"])
    assert not validated & trained and not synthetic & validated
    record = json.loads((run / "config.json").read_text())
    assert record["extra_rows"]["synthetic"]["rows"] == 40
    manifest_sha = record["extra_rows"]["synthetic"]["manifest_sha256"]
    assert len(manifest_sha) == 64 and record["config"]["synthetic"] == str(generated)


def test_train_refuses_samples_made_for_another_fold(demo, generated):
    proc = train(demo, "leak", "--fold", "1", "--synthetic", str(generated / "fold0"))
    assert proc.returncode == 2
    assert "made for fold 0, not fold 1" in proc.stderr and "leak" in proc.stderr
    proc = train(demo, "leak2", "--fold", "1", "--synthetic", str(generated))
    assert proc.returncode == 2 and "no manifest.csv" in proc.stderr


def test_train_refuses_a_manifest_pointing_to_a_missing_image(demo, generated, tmp_path):
    broken = tmp_path / "fold0"
    shutil.copytree(generated / "fold0", broken, ignore=shutil.ignore_patterns("*.pt", "cas"))
    (broken / "images" / "syn_f0_000007.png").unlink()
    proc = train(demo, "broken", "--fold", "0", "--synthetic", str(broken))
    assert proc.returncode == 2
    assert "manifest.csv line 9: image 'images/syn_f0_000007.png' not found" in proc.stderr
    assert not (demo["root"] / "runs" / "broken").exists()


def test_sample_refuses_a_fold_without_a_generator_and_keeps_existing_samples(demo, generated, tmp_path):
    proc = run_gen(demo, generated.parent.parent, "sample", "--fold", "2")
    assert proc.returncode == 2 and "no trained generator" in proc.stderr
    before = (generated / "fold0" / "manifest.csv").read_bytes()
    proc = run_gen(demo, generated.parent.parent, "sample", "--fold", "0")
    assert proc.returncode == 2 and "--overwrite" in proc.stderr
    assert (generated / "fold0" / "manifest.csv").read_bytes() == before


def test_a_refused_generator_resume_rewrites_nothing(demo, generated):
    fold = generated / "fold0"
    before = {name: (fold / name).read_bytes() for name in ("config.json", "last.pt", "generator.pt")}
    proc = run_gen(demo, generated.parent.parent, "train", "--fold", "0", "--resume", "--lr", "0.01")
    assert proc.returncode == 2 and "made with lr=" in proc.stderr
    assert {name: (fold / name).read_bytes() for name in before} == before
