"""Writing a sample folder (images/, meta.json, manifest.csv, in that order) and the classifier filter that
marks which samples are kept.

A sample folder belongs to exactly one fold of one fold file: its generator saw only that fold's training
rows. train.py reads it through src.data.extra_rows, whose leak guard refuses it for any other fold.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from src.core.atomic import write_csv
from src.core.errors import UserError
from src.core.rundir import write_json
from src.data.extra_rows import MANIFEST, MANIFEST_COLUMNS, META
from src.data.images import write_image

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
            write_image(tmp / Path(file).name, image)
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


