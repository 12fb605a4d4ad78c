"""The bad-input suite: every case runs a real script and must end with one line `error: ...`,
exit code 2, no traceback and no output written."""
import shutil

import cv2
import numpy as np
import pandas as pd
import pytest

from src.data.folds import make_fold_file

from helpers import make_competition, run_script

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """A valid 3-class competition with its 3-fold file; each case edits a copy."""
    root = tmp_path_factory.mktemp("clean")
    data = make_competition(root / "data", per_class=6)
    make_fold_file(str(data), "train.csv", "train", "image", "label", "", 3, 0, data / "folds.csv")
    return data


def edit_csv(name):
    def change(data, fn):
        frame = pd.read_csv(data / name, dtype=str, keep_default_na=False)
        edited = fn(frame)  # edits in place, or returns a new frame
        (edited if isinstance(edited, pd.DataFrame) else frame).to_csv(data / name, index=False)
    return change


def set_cell(row, col, value):
    return lambda f: f.loc.__setitem__((row, col), value)


train_csv, folds_csv = edit_csv("train.csv"), edit_csv("folds.csv")


def write(name, content):
    return lambda data: (data / name).write_bytes(content)


def symlink_out(data):
    outside = data.parent / "outside.png"
    shutil.copy(data / "train" / "cat_1.png", outside)
    (data / "train" / "cat_1.png").unlink()
    (data / "train" / "cat_1.png").symlink_to(outside)


def bomb(data):
    cv2.imwrite(str(data / "train" / "cat_1.png"), np.zeros((8000, 8000), np.uint8))


def few_images(data):
    """Only two 'cat' images left, in train.csv and the fold file alike."""
    for name in ("train.csv", "folds.csv"):
        frame = pd.read_csv(data / name)
        frame[~frame["image"].isin(["cat_0", "cat_1", "cat_2", "cat_3"])].to_csv(data / name, index=False)


CASES = {
    "empty train.csv": (write("train.csv", b""), [], "file is empty"),
    "header only": (write("train.csv", b"image,label\n"), [], "header but no rows"),
    "missing label column": (lambda d: train_csv(d, lambda f: f.pop("label")), [], "missing column(s) ['label']"),
    "NaN label": (lambda d: train_csv(d, set_cell(3, "label", "NaN")), [], "line 5: empty 'label'"),
    "label with trailing space": (lambda d: train_csv(d, set_cell(2, "label", "cat ")), [], "whitespace"),
    "labels differing in case": (lambda d: train_csv(d, set_cell(2, "label", "Cat")), [], "differ only in case"),
    "duplicate ids": (lambda d: train_csv(d, set_cell(5, "image", "cat_0")), [], "duplicate image 'cat_0'"),
    "missing image file": (lambda d: train_csv(d, set_cell(1, "image", "cat_99")), [], "'cat_99' not found"),
    "id escaping the folder": (lambda d: train_csv(d, set_cell(1, "image", "../../etc/passwd")), [], "outside"),
    "absolute path id": (lambda d: train_csv(d, set_cell(1, "image", "/etc/passwd")), [], "points outside"),
    "symlink out of the folder": (symlink_out, [], "links outside"),
    "truncated PNG": (lambda d: (d / "train" / "cat_1.png").write_bytes((d / "train" / "cat_1.png").read_bytes()[:-30]),
                      [], "truncated PNG"),
    "zero-byte image": (lambda d: (d / "train" / "cat_1.png").write_bytes(b""), [], "empty file"),
    "decompression bomb": (bomb, [], "decompression-bomb guard"),
    "fold file missing an id": (lambda d: folds_csv(d, lambda f: f.iloc[:-1]), [],
                                "train id(s) missing"),
    "fold file with an extra id": (lambda d: folds_csv(d, lambda f: f.loc.__setitem__(len(f), ["extra", "cat", "0"])),
                                   [], "not in train.csv"),
    "fold index out of range": (lambda d: None, ["--fold", "3"], "--fold 3 is out of range"),
    "class with fewer images than folds": (few_images, [], "class 'cat' has 2 image(s), fewer than 3 folds"),
    "unknown config key": (write("exp.yaml", b"lr: 0.01\nwarmup: 2\n"), ["--config", "{data}/exp.yaml"],
                           "unknown key 'warmup'"),
    "config value of the wrong type": (write("exp.yaml", b"epochs: ten\n"), ["--config", "{data}/exp.yaml"],
                                       "'epochs' must be int"),
    "unwritable output folder": (write("not_a_folder", b"x"), ["--runs-dir", "{data}/not_a_folder/runs"],
                                 "cannot write run directories there"),
    "binary metric on a multi-class task": (lambda d: None, ["--monitor", "eer"], "needs a binary task"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gives_one_line_exit_2_and_writes_nothing(clean, tmp_path, case):
    change, extra, message = CASES[case]
    data = tmp_path / "data"
    shutil.copytree(clean, data, symlinks=True)
    change(data)
    runs = tmp_path / "runs"
    extra = [a.replace("{data}", str(data)) for a in extra]
    proc = run_script("train.py", "--data-dir", str(data), "--folds-csv", str(data / "folds.csv"),
                      "--runs-dir", str(runs), "--epochs", "2", "--quiet", *extra)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], proc.stderr
    assert not runs.exists() or not any(runs.rglob("*"))


@pytest.mark.parametrize("script, args, message", [
    ("train.py", ["--lr", "fast"], "invalid float value: 'fast'"),
    ("make_folds.py", ["--n-folds", "1", "--data-dir", "nowhere"], "need at least 2 folds"),
    ("prepare_demo.py", ["--test-size", "5", "--out-dir", "{tmp}/demo"], "100 <= --test-size <= 2500"),
])
def test_bad_arguments_of_each_script_give_one_line(tmp_path, script, args, message):
    proc = run_script(script, *[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert message in proc.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "demo").exists()
