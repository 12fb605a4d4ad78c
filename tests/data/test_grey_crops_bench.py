"""bench/grey_crops.py rebuilds the grey-crop stand-in the same way every time, and refuses to overwrite it."""
import pandas as pd
import pytest

from helpers import run_script

pytestmark = pytest.mark.slow


def test_the_grey_crops_are_rebuilt_identically_with_their_flipped_labels_recorded(tmp_path):
    for name in ("a", "b"):
        proc = run_script("bench/grey_crops.py", "--out-dir", str(tmp_path / name))
        assert proc.returncode == 0, proc.stderr
    a, b = (pd.read_csv(tmp_path / name / "train.csv") for name in ("a", "b"))
    assert a.equals(b) and len(a) == 4000 and set(a["label"]) == {"even", "odd"}
    flips = pd.read_csv(tmp_path / "a" / "label_flips.csv")
    assert len(flips) == 80 and (flips["given_label"] != flips["true_label"]).all()
    assert (tmp_path / "a" / "train" / "crop_00000.png").read_bytes() == \
        (tmp_path / "b" / "train" / "crop_00000.png").read_bytes()
    again = run_script("bench/grey_crops.py", "--out-dir", str(tmp_path / "a"))
    assert again.returncode == 2 and "exists" in again.stderr
