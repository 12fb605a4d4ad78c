"""Synthetic rows: the sample folder (images/, manifest.csv, meta.json), the classifier filter, the leak
guard, and how train.py adds synthetic rows to one fold's training split.

A sample folder belongs to exactly one fold of one fold file: its generator saw only that fold's training
rows. Using it for another fold (or after the fold file changed) would leak validation images into
training through the generator, so train.py refuses it.
"""
from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from src.atomic import write_csv
from src.data import ImageSpec, decode_all, to_array
from src.errors import UserError
from src.fold_rows import META, read_fold_meta, resolve_fold_dir
from src.runs import write_json

MANIFEST = "manifest.csv"
MANIFEST_COLUMNS = ["file", "label", "guidance", "seed", "confidence", "predicted", "kept"]


# Derived from a sample set: removed when it is replaced, so no report describes other samples.
DERIVED = ("kept_per_class.csv", "samples.png", "cas.md", "cas.csv")


def new_manifest(fold: int, labels: np.ndarray, seeds: list[int], classes: list[str], guidance: float) -> pd.DataFrame:
    """The manifest of freshly sampled images, before any filter: every row kept."""
    return pd.DataFrame({"file": [f"images/syn_f{fold}_{i:06d}.png" for i in range(len(labels))],
                         "label": [classes[i] for i in labels], "guidance": guidance, "seed": seeds,
                         "confidence": np.nan, "predicted": "", "kept": True})


def write_samples(folder: Path, images: np.ndarray, manifest: pd.DataFrame, meta: dict) -> None:
    """images/*.png, meta.json, then manifest.csv. The old set goes first and the images are renamed into
    place from a temporary folder, so an interrupted run leaves no manifest, never a half set."""
    for old in (MANIFEST, META, *DERIVED):
        (folder / old).unlink(missing_ok=True)
    tmp = folder / f".images.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        for file, image in zip(manifest["file"], images):
            path = tmp / Path(file).name
            if not cv2.imwrite(str(path), image if image.shape[-1] == 1 else image[:, :, ::-1]):
                raise UserError(f"{path}: could not write the image (disk full?)")
        shutil.rmtree(folder / "images", ignore_errors=True)
        os.replace(tmp, folder / "images")
    except OSError as err:
        raise UserError(f"{folder}: could not write the samples ({err.strerror or err})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    write_json(folder / META, meta)
    write_csv(folder / MANIFEST, manifest[MANIFEST_COLUMNS])


def apply_filter(manifest: pd.DataFrame, probs: np.ndarray, classes: list[str], min_confidence: float) -> pd.DataFrame:
    """Keep a sample when the classifier's top class is its conditioning label with probability >=
    min_confidence; records the classifier's confidence in that label and its prediction."""
    index = np.array([classes.index(v) for v in manifest["label"]])
    out = manifest.copy()
    out["confidence"] = probs[np.arange(len(index)), index].round(6)
    out["predicted"] = [classes[i] for i in probs.argmax(1)]
    out["kept"] = (probs.argmax(1) == index) & (out["confidence"] >= min_confidence)
    return out


def kept_table(manifest: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    """Per class: samples, kept, kept fraction, and how often the filter agreed with the label."""
    rows = []
    for name in classes:
        part = manifest[manifest["label"] == name]
        rows.append({"class": name, "sampled": len(part), "kept": int(part["kept"].sum()),
                     "kept_fraction": float(part["kept"].mean()) if len(part) else float("nan"),
                     "filter_agrees": float((part["predicted"] == name).mean()) if len(part) else float("nan")})
    total = {"class": "all", "sampled": len(manifest), "kept": int(manifest["kept"].sum()),
             "kept_fraction": float(manifest["kept"].mean()),
             "filter_agrees": float((manifest["predicted"] == manifest["label"]).mean())}
    return pd.DataFrame(rows + [total])


def manifest_sha256(folder: Path) -> str:
    return hashlib.sha256((folder / MANIFEST).read_bytes()).hexdigest()


def resolve_sample_dir(path: str | Path, fold: int) -> Path:
    return resolve_fold_dir(path, fold, MANIFEST, "--synthetic", f"run gen_synthetic.py sample for fold {fold} first")


def read_sample_dir(folder: Path, fold: int, classes: list[str], fingerprint: dict) -> tuple[pd.DataFrame, dict]:
    """The manifest and meta of a sample folder, after the leak guard and consistency checks."""
    manifest_path = folder / MANIFEST
    meta = read_fold_meta(folder, fold, classes, fingerprint, "gen_synthetic.py sample")
    if not manifest_path.is_file():
        raise UserError(f"{manifest_path}: missing; this is not a complete gen_synthetic.py sample folder "
                        f"(re-run sample)")
    try:
        manifest = pd.read_csv(manifest_path, dtype={"file": str, "label": str, "predicted": str},
                               keep_default_na=False, na_values={"confidence": [""]})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise UserError(f"{manifest_path}: not a readable CSV ({str(err).splitlines()[0]})") from None
    missing = [c for c in MANIFEST_COLUMNS if c not in manifest.columns]
    if missing:
        raise UserError(f"{manifest_path}: missing column(s) {missing}")
    for i, (file, label, kept) in enumerate(zip(manifest["file"], manifest["label"], manifest["kept"])):
        where = f"{manifest_path} line {i + 2}"
        if label not in classes:
            raise UserError(f"{where}: label {label!r} is not one of the data's classes")
        if str(kept) not in ("True", "False"):
            raise UserError(f"{where}: kept must be True or False, got {kept!r}")
        if Path(file).is_absolute() or ".." in Path(file).parts or not (folder / file).is_file():
            raise UserError(f"{where}: image {file!r} not found inside {folder}; re-run gen_synthetic.py sample")
    manifest["kept"] = manifest["kept"].astype(str) == "True"
    return manifest, meta


def select_rows(manifest: pd.DataFrame, classes: list[str], real_labels: np.ndarray, ratio: float, per_class: int,
                unfiltered: bool, source: Path) -> pd.DataFrame:
    """Which synthetic rows join training: per class `per_class` rows (-1 = all), else round(ratio x the
    class's real training rows); the first rows in manifest order, kept rows only unless `unfiltered`."""
    pool = manifest if unfiltered else manifest[manifest["kept"]]
    parts = []
    real_counts = np.bincount(real_labels, minlength=len(classes))
    for c, name in enumerate(classes):
        rows = pool[pool["label"] == name]
        want = len(rows) if per_class == -1 else per_class if per_class > 0 else round(ratio * real_counts[c])
        if want > len(rows):
            raise UserError(f"{source}: class {name!r} needs {want} synthetic rows but has {len(rows)} "
                            f"{'' if unfiltered else 'kept '}samples; sample more (--per-class) or lower "
                            f"--synthetic-ratio / --synthetic-per-class")
        parts.append(rows.iloc[:want])
    return pd.concat(parts)


def load_synthetic_rows(path: str | Path, fold: int, classes: list[str], fingerprint: dict, spec: ImageSpec,
                        interp: str, real_labels: np.ndarray, ratio: float, per_class: int,
                        unfiltered: bool) -> tuple[np.ndarray, np.ndarray, list[str], dict]:
    """(images in the training cache's shape, class indices, ids, provenance record) for one fold."""
    folder = resolve_sample_dir(path, fold)
    manifest, meta = read_sample_dir(folder, fold, classes, fingerprint)
    rows = select_rows(manifest, classes, real_labels, ratio, per_class, unfiltered, folder / MANIFEST)
    images = to_array(decode_all([folder / f for f in rows["file"]]), spec, interp) if len(rows) else \
        np.empty((0, spec.height_px, spec.width_px, spec.in_chans), dtype=np.uint8)
    labels = np.array([classes.index(v) for v in rows["label"]], dtype=np.int64)
    ids = [f"{folder}/{f}" for f in rows["file"]]
    record = {"folder": str(folder), "manifest_sha256": manifest_sha256(folder), "rows": len(rows),
              "per_class": np.bincount(labels, minlength=len(classes)).tolist(),
              "generator_sha256": meta.get("generator_sha256")}
    return images, labels, ids, record
