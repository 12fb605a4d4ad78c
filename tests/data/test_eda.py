"""eda.py: hashes, duplicate finder (planted exact, resized and cross-split copies, label conflicts), drift
flag, unreadable files reported instead of fatal, and the report files."""
import cv2
import numpy as np
import pandas as pd
import pytest

from src.data.eda import dhash, drift_table, hamming_pairs

from helpers import run_script


def noise_competition(root, n=24, size_px=32, seed=0):
    """Random-texture images (no two alike) with planted duplicates: train 1 is an exact copy of train 0 with
    another label, train 2 a resized copy of train 3, test 0 an exact copy of train 5; test 3 is corrupt."""
    rng = np.random.default_rng(seed)
    smooth = lambda: cv2.GaussianBlur(rng.integers(0, 256, (size_px, size_px), dtype=np.uint8), (5, 5), 0)  # noqa: E731
    train = [smooth() for _ in range(n)]
    train[1] = train[0].copy()
    train[2] = cv2.resize(cv2.resize(train[3], (48, 48)), (size_px, size_px), interpolation=cv2.INTER_AREA)
    test = [train[5].copy()] + [smooth() for _ in range(5)]
    (root / "train").mkdir(parents=True)
    (root / "test").mkdir()
    labels = ["a", "b"] + [("a", "b", "c")[i % 3] for i in range(2, n)]
    labels[2] = labels[3]  # the resized copy keeps its label: no conflict there
    for i, image in enumerate(train):
        cv2.imwrite(str(root / "train" / f"t{i:02d}.png"), image)
    for i, image in enumerate(test):
        cv2.imwrite(str(root / "test" / f"x{i}.png"), image)
    (root / "test" / "x3.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    (root / "train" / "t04.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")  # before a duplicate, in train
    pd.DataFrame({"image": [f"t{i:02d}" for i in range(n)], "label": labels}).to_csv(root / "train.csv", index=False)
    return root


def test_dhash_survives_resizing_and_hamming_pairs_are_exact():
    rng = np.random.default_rng(1)
    image = cv2.GaussianBlur(rng.integers(0, 256, (64, 64), dtype=np.uint8), (7, 7), 0)[:, :, None]
    small = cv2.resize(image, (32, 32), interpolation=cv2.INTER_AREA)[:, :, None]
    assert bin(dhash(image) ^ dhash(small)).count("1") <= 6
    hashes = np.array([0b0000, 0b0001, 0b0111, 0b1000], dtype=np.uint64)
    pairs = {tuple(p) for p in hamming_pairs(hashes, hashes, 1, same=True, chunk=2)}
    assert pairs == {(0, 1, 1), (0, 3, 1)}


def test_drift_flag_when_test_is_brighter():
    train = pd.DataFrame({"height_px": [8] * 4, "width_px": [8] * 4, "channels": [1] * 4,
                          "mean": [10.0, 12, 11, 13], "std": [5.0] * 4, "file_kb": [1.0] * 4})
    test = train.assign(mean=[40.0, 42, 41, 43])
    drift = drift_table(train, test).set_index("statistic")
    assert drift.loc["mean", "drift"] == "WARNING" and drift.loc["std", "drift"] == ""


@pytest.mark.slow
def test_eda_script_finds_planted_duplicates_and_reports_unreadable_files(tmp_path):
    data = noise_competition(tmp_path / "comp")
    proc = run_script("eda.py", "--data-dir", str(data), "--out-dir", str(tmp_path / "reports"), "--quiet")
    assert proc.returncode == 0, proc.stderr
    report = (tmp_path / "reports" / "eda_comp.md").read_text()
    folder = tmp_path / "reports" / "eda_comp"
    for name in ("class_balance.png", "image_stats.png", "samples.png", "duplicates.png", "duplicates.csv",
                 "files.csv"):
        assert (folder / name).is_file(), name
    pairs = pd.read_csv(folder / "duplicates.csv", dtype=str).fillna("")
    found = {(r.where, r.kind, r.id_a, r.id_b) for r in pairs.itertuples()}
    assert ("train-train", "exact", "t00", "t01") in found
    assert ("train-train", "near", "t02", "t03") in found
    assert ("train-test", "exact", "t05", "x0.png") in found
    assert len(pairs) == 3  # random textures are not near one another
    assert pairs.set_index("id_a")["labels_disagree"].to_dict() == {"t00": "True", "t02": "False", "t05": "False"}
    assert "1 train pairs are (near) copies with different labels" in report
    assert "x3.png" in report and "t04" in report and "unreadable: 2" in report
    assert "train | 32x32x1 | 23" in report
    # Exact copies are exactly 0 hash bits apart, unreadable rows or not (hashes must stay 64-bit integers).
    proc = run_script("eda.py", "--data-dir", str(data), "--out-dir", str(tmp_path / "exact"), "--hash-bits", "0",
                      "--quiet")
    exact = pd.read_csv(tmp_path / "exact" / "eda_comp" / "duplicates.csv", dtype=str)
    assert proc.returncode == 0 and set(zip(exact["id_a"], exact["id_b"])) == {("t00", "t01"), ("t05", "x0.png")}


@pytest.mark.slow
def test_eda_without_a_usable_test_folder(tmp_path):
    data = noise_competition(tmp_path / "comp")
    for f in (data / "test").iterdir():
        f.write_bytes(b"not an image")
    proc = run_script("eda.py", "--data-dir", str(data), "--out-dir", str(tmp_path / "r1"), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "no drift check" in (tmp_path / "r1" / "eda_comp.md").read_text()
    import shutil
    shutil.rmtree(data / "test")
    proc = run_script("eda.py", "--data-dir", str(data), "--out-dir", str(tmp_path / "r2"), "--quiet")
    assert proc.returncode == 0 and "test: 0 images" in (tmp_path / "r2" / "eda_comp.md").read_text()


@pytest.mark.slow
def test_eda_refuses_bad_options_in_one_line(tmp_path):
    data = noise_competition(tmp_path / "comp")
    proc = run_script("eda.py", "--data-dir", str(data), "--near-similarity", "1.5")
    assert proc.returncode == 2 and proc.stderr.startswith("error: --near-similarity")
