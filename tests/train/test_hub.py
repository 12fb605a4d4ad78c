"""Hub weights through timm's own loader, offline: a local Hugging Face cache layout of timm's tiny
test_resnet.r160_in1k (random weights of the right shape) read with HF_HUB_OFFLINE=1, as on Kaggle."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from src.data.folds import make_fold_file
from src.train.hub import PROXY_VARIABLES

from helpers import REPO, make_competition, run_subprocess

pytestmark = pytest.mark.slow

MODEL, REPO_ID = "test_resnet.r160_in1k", "timm/test_resnet.r160_in1k"


def write_hf_cache(hf_home: Path) -> dict[str, torch.Tensor]:
    """hub/models--timm--test_resnet.r160_in1k/{refs/main, snapshots/<commit>/{config.json, model.safetensors}}:
    what huggingface_hub reads from the cache; returns the weights written."""
    import timm
    from timm.models import save_for_hf
    model = timm.create_model(MODEL, pretrained=False)
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = hf_home / "hub" / f"models--{REPO_ID.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    save_for_hf(model, str(repo / "snapshots" / commit), safe_serialization=True)
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def comp(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    data = make_competition(root / "data", per_class=6)
    make_fold_file(str(data), "train.csv", "train", "image", "label", "", 3, 0, data / "folds.csv")
    return root, data


def train_hub(root: Path, data: Path, hf_home: Path, exp: str, *flags: str):
    return run_subprocess("train.py", "--data-dir", str(data), "--folds-csv", str(data / "folds.csv"), "--runs-dir",
                          str(root / "runs"), "--exp", exp, "--fold", "0", "--epochs", "1", "--batch-size", "4",
                          "--lr", "1e-9", "--lr-warmup-epochs", "0", "--ema-decay", "0", "--quiet", *flags,
                          env={"HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"})


def test_pretrained_timm_loads_the_cached_weights_with_a_new_head_grey_stem_and_the_pretrained_input(comp):
    root, data = comp
    weights = write_hf_cache(root / "hf")
    proc = train_hub(root, data, root / "hf", "timm", "--model", MODEL, "--pretrained", "timm")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"pretrained: {REPO_ID} through timm's hub loader" in proc.stdout
    best = torch.load(root / "runs" / "timm" / "fold0" / "best.pt", weights_only=True)
    # The pretrained input size (160) for the cache and the model; the pretrained mean/std, averaged for grey.
    assert best["image_spec"] == {"height_px": 160, "width_px": 160, "in_chans": 1} and best["input_size_px"] == 160
    assert best["mean"] == [0.5] and best["std"] == [0.5]
    model = best["model"]
    assert model["fc.weight"].shape[0] == 3  # the classifier is re-initialised for our 3 classes
    # lr 1e-9 for one epoch: the backbone is still the file's; the first conv is its RGB filters summed.
    assert torch.allclose(model["layer1.0.conv1.weight"], weights["layer1.0.conv1.weight"], atol=1e-6)
    assert torch.allclose(model["conv1.0.weight"], weights["conv1.0.weight"].sum(1, keepdim=True), atol=1e-5)


def test_an_hf_hub_model_trains_and_predicts_offline(comp):
    root, data = comp
    hf_home = root / "hf2"
    write_hf_cache(hf_home)
    proc = train_hub(root, data, hf_home, "hub", "--pretrained", f"hf-hub:{REPO_ID}", "--image-size-px", "32",
                     "--input-size-px", "64", "--normalize", "data", "--fold", "all")
    assert proc.returncode == 0, proc.stderr[-2000:]
    best = torch.load(root / "runs" / "hub" / "fold0" / "best.pt", weights_only=True)
    assert best["config"]["model"] == f"hf-hub:{REPO_ID}" and best["image_spec"]["height_px"] == 32
    assert best["input_size_px"] == 64  # a 32 px cache fed to the model at 64 px, upscaled on the device
    assert best["mean"] != [0.5]  # --normalize data: the training images' own statistics
    record = json.loads((root / "runs" / "hub" / "fold0" / "config.json").read_text())
    assert record["pretrained_weights"] == REPO_ID
    # The hub architecture is rebuilt from the cached config.json when the experiment predicts (no test/ here:
    # infer.py writes the OOF report).
    proc = run_subprocess("infer.py", "--exp", "hub", "--runs-dir", str(root / "runs"), "--out-dir",
                          str(root / "out"), "--tta", "none", "--quiet",
                          env={"HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "No submission" in proc.stdout and (root / "out" / "hub_oof_probs.csv").is_file()


def test_missing_hub_weights_fail_in_one_line_before_anything_is_written(comp, tmp_path):
    root, data = comp
    proc = train_hub(tmp_path, data, tmp_path / "empty_hf", "x", "--model", MODEL, "--pretrained", "timm")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    line = proc.stderr.strip()
    assert "\n" not in line and "not in the Hugging Face cache" in line and "HF_HUB_OFFLINE is set" in line
    assert "--pretrained PATH" in line and str(tmp_path / "empty_hf") in line
    assert not (tmp_path / "runs").exists()
    proc = train_hub(tmp_path, data, tmp_path / "empty_hf", "x", "--model", "smallcnn", "--pretrained", "timm")
    assert proc.returncode == 2 and "timm has no hub weights for 'smallcnn'" in proc.stderr
    # Not offline, but the hub does not answer (here: a closed local port): the same line, in seconds.
    proc = run_subprocess("train.py", "--data-dir", str(data), "--folds-csv", str(data / "folds.csv"), "--runs-dir",
                          str(tmp_path / "runs"), "--model", MODEL, "--pretrained", "timm", "--quiet",
                          env={"HF_HOME": str(tmp_path / "empty_hf"), "HF_HUB_OFFLINE": "0",
                               "HF_ENDPOINT": "http://127.0.0.1:9", **{v: "" for v in PROXY_VARIABLES}})
    assert proc.returncode == 2 and "could not be downloaded" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "runs").exists()


def test_drop_path_rate_reaches_a_model_built_from_hub_weights(comp, tmp_path):
    """config.json records drop_path_rate; the model must have it too (it used to be dropped for hub weights)."""
    root, _ = comp
    write_hf_cache(tmp_path / "hf")
    code = ("from timm.layers import DropPath; from src.train.config import TrainConfig; "
            "from src.train.models import build_model; "
            f"m = build_model(TrainConfig(model='{MODEL}', pretrained='timm', drop_path_rate=0.1), 1, 3); "
            "print(max([x.drop_prob for x in m.modules() if isinstance(x, DropPath)], default=0))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert float(proc.stdout.strip().splitlines()[-1]) == pytest.approx(0.1)
