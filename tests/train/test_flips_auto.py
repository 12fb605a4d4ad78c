"""flips auto: left-right mirrors for colour images, none for grey ones, in training and in infer.py's TTA views."""
import json

import cv2
import numpy as np
import pytest

from src.infer.predictor import Predictor

from helpers import TINY, make_competition, run_script, train


def colour_competition(root):
    """The grey test competition with each image turned into three different colour channels."""
    data = make_competition(root)
    for path in (data / "train").glob("*.png"):
        grey = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        cv2.imwrite(str(path), np.dstack([grey, grey // 2, 255 - grey]))
    return data


@pytest.mark.slow
def test_a_colour_competition_trains_and_predicts_with_mirrors(tmp_path):
    data, folds, runs = colour_competition(tmp_path / "comp"), tmp_path / "folds.csv", tmp_path / "runs"
    proc = run_script("make_folds.py", "--data-dir", str(data), "--out", str(folds), "--n-folds", "2", "--quiet")
    assert proc.returncode == 0, proc.stderr
    proc = run_script("train.py", "--data-dir", str(data), "--folds-csv", str(folds), "--runs-dir", str(runs),
                      "--exp", "colour", "--fold", "all", "--flips", "auto", *TINY)
    assert proc.returncode == 0, proc.stderr
    assert "flips auto: h (colour images)" in proc.stdout
    assert json.loads((runs / "colour" / "fold0" / "config.json").read_text())["flips_used"] == "h"
    assert "hflip" in Predictor.load(runs / "colour", device="cpu").views


@pytest.mark.slow
def test_grey_digits_get_no_mirrors(demo):
    runs = demo["root"] / "flips_auto"
    proc = train(demo, "grey", "--fold", "0", "--flips", "auto", "--epochs", "1", runs=runs)
    assert proc.returncode == 0, proc.stderr
    assert "flips auto: none (grey images)" in proc.stdout
    assert "hflip" not in Predictor.load(runs / "grey", device="cpu", folds=[0]).views
