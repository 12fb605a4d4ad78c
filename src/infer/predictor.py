"""A trained experiment as a predictor: every fold's best.pt (or final weights), averaged over folds and TTA views.

    from src.infer.predictor import Predictor
    p = Predictor.load("runs/demo")
    p.predict("digit.png")  # Prediction(label='7', probs={'0': 0.001, ...})
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import nn

from src.core.config import config_differences, config_from_dict
from src.core.errors import UserError
from src.core.metrics import eer_point
from src.core.rundir import fold_finished, load_checkpoint, read_oof
from src.data.augment import resolve_flips, trained_flips
from src.data.cache import cached_images, default_cache_dir
from src.data.folds import locate_fold_file
from src.data.images import ImageSpec, decode_all, to_array
from src.data.rows import Rows
from src.infer.tta import VIEWS, parse_views
from src.train.config import TrainConfig
from src.train.cv import train_cache_dir
from src.train.engine import Runtime, norm_tensors, predict_probs, setup_runtime
from src.train.models import build_model


@dataclass
class FoldModel:
    fold: int
    model: nn.Module
    norm: tuple
    epoch: int  # the epoch whose weights these are


# Which weights stand for a fold. best.pt's epoch was picked on the fold's validation labels: right for a
# submission, but anything fed back into that fold's training (pseudo-labels) must use the final weights.
WEIGHTS = ("best", "final")


@dataclass
class Prediction:
    label: str
    probs: dict[str, float]


def read_experiment(exp_dir: Path, folds: list[int] | None = None) -> dict:
    """The first fold's config.json of an experiment, after checking that every fold (or the given ones)
    finished (best.pt and oof.csv)."""
    config = exp_dir / f"fold{(folds or [0])[0]}" / "config.json"
    if not config.is_file():
        raise UserError(f"{exp_dir}: no trained folds (expected {config}); run train.py --exp {exp_dir.name} first")
    try:
        info = json.loads(config.read_text())
        n_folds = int(info["n_folds"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        raise UserError(f"{config}: not a config.json written by train.py") from None
    wanted = range(n_folds) if folds is None else folds
    unfinished = [k for k in wanted if not fold_finished(exp_dir / f"fold{k}")]
    if unfinished:
        folds = ",".join(map(str, unfinished))
        raise UserError(f"{exp_dir}: fold(s) {folds} of {n_folds} not finished (no best.pt/oof.csv); train or "
                        f"resume them first (python train.py --exp {exp_dir.name} --fold {folds} --resume)")
    return info


def parse_threshold(text: str) -> float | str | None:
    """A --threshold value: '' (argmax), 'eer', or a probability."""
    if text in ("", "eer"):
        return text or None
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 <= value <= 1:
        raise UserError(f"--threshold {text!r}: give a probability between 0 and 1, or 'eer'")
    return value


def fold_weights(run_dir: Path, weights: str) -> dict:
    """A fold's checkpoint with `model` holding the requested weights: best.pt's, or the last epoch's
    (last.pt's EMA average when the run kept one) with `epoch` the epoch they come from."""
    if weights == "best":
        return load_checkpoint(run_dir / "best.pt")
    state = load_checkpoint(run_dir / "last.pt")
    if not state.get("finished"):
        raise UserError(f"{run_dir}/last.pt: training has not finished; resume it first")
    model = state["ema"] if state.get("ema") is not None else state["model"]
    return {**state, "model": model, "epoch": state["epoch"] - 1}


class Predictor:
    """Fold ensemble of one experiment, with the TTA views it averages over."""

    def __init__(self, exp_dir: Path, cfg: TrainConfig, classes: list[str], spec: ImageSpec, folds_csv: str,
                 fingerprint: dict, folds: list[FoldModel], rt: Runtime, views: list[str]):
        self.exp_dir, self.cfg, self.classes, self.spec, self.folds_csv = exp_dir, cfg, classes, spec, folds_csv
        self.fingerprint = fingerprint
        self.folds, self.rt, self.views = folds, rt, views
        self.threshold: float | None = None

    @classmethod
    def load(cls, exp_dir: str | Path, device: str = "auto", tta: str = "auto",
             threshold: float | str | None = None, folds: list[int] | None = None,
             weights: str = "best") -> "Predictor":
        """Load every fold's best.pt (weights_only), or only `folds`'; `threshold` (binary only): a float, or
        'eer' from OOF. weights='final' takes each fold's last epoch instead (its EMA average when it has one)."""
        exp_dir = Path(exp_dir)
        parse_threshold("" if threshold is None else str(threshold))  # a bad value fails before any loading
        if weights not in WEIGHTS:
            raise ValueError(f"weights must be one of {WEIGHTS}")
        info = read_experiment(exp_dir, folds)
        fold_ids = list(range(info["n_folds"])) if folds is None else folds
        states = [fold_weights(exp_dir / f"fold{k}", weights) for k in fold_ids]
        first = states[0]
        if tta == "greedy":
            raise UserError("--tta greedy chooses views on OOF rows; only infer.py's submission flow does that")
        cfg = dataclasses.replace(config_from_dict(first["config"], TrainConfig, source=str(exp_dir)), device=device)
        rt = setup_runtime(cfg)
        spec = ImageSpec(**first["image_spec"])
        folds = []
        for k, state in zip(fold_ids, states):
            same = ("classes", "image_spec", "fingerprint")
            if any(state[key] != first[key] for key in same) or \
                    config_differences(state["config"], first["config"], TrainConfig):
                raise UserError(f"{exp_dir}/fold{k}: config, classes or data differ from fold "
                                f"{fold_ids[0]}'s; "
                                f"retrain the experiment's folds with one config")
            # The weights come from the checkpoint: never re-read (or require) the original --pretrained file.
            # cfg keeps it, so a retrain from this experiment (pseudo-labelling) starts from the same weights.
            model = build_model(dataclasses.replace(cfg, pretrained=""), spec.in_chans, len(first["classes"]))
            try:
                model.load_state_dict(state["model"])
            except RuntimeError:
                raise UserError(f"{exp_dir}/fold{k}: weights do not fit model {cfg.model}") from None
            model.to(rt.device).eval()
            norm = norm_tensors(state["mean"], state["std"], rt, state.get("input_size_px", 0))
            folds.append(FoldModel(k, model, norm, state["epoch"]))
        folds_csv = str(locate_fold_file(info["folds_csv"], first["fingerprint"].get("folds_csv_sha256")))
        predictor = cls(exp_dir, cfg, first["classes"], spec, folds_csv, first["fingerprint"], folds, rt,
                        parse_views(tta, trained_flips(cfg.augment, resolve_flips(cfg.flips, spec.in_chans))))
        predictor.threshold = predictor.resolve_threshold(threshold)
        return predictor

    def resolve_threshold(self, threshold: float | str | None) -> float | None:
        """None (argmax), a probability, or 'eer': the equal-error-rate point of the training OOF files."""
        threshold = parse_threshold("" if threshold is None else str(threshold))
        if threshold is None:
            return None
        if len(self.classes) != 2:
            raise UserError(f"a decision threshold needs a binary task; {self.exp_dir} has {len(self.classes)} classes")
        if threshold != "eer":
            return threshold
        if self.views != ["identity"]:
            # oof.csv holds single-view predictions: a threshold fitted there must be applied to the same.
            raise UserError("threshold 'eer' outside infer.py's submission flow needs --tta none")
        y, probs = self.pooled_oof()
        return eer_point(y, probs[:, 1])[1]

    def pooled_oof(self) -> tuple[np.ndarray, np.ndarray]:
        """True labels and probabilities of all folds' oof.csv (written by train.py, identity view)."""
        parts = [read_oof(self.exp_dir / f"fold{f.fold}" / "oof.csv", self.classes)
                 for f in self.folds]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def prepare(self, decoded: list[np.ndarray]) -> np.ndarray:
        """Decoded images -> the uint8 cache shape this experiment was trained on (a few files, in memory)."""
        return to_array(decoded, self.spec, self.cfg.resize_interp)

    def cached(self, paths: list[Path], quiet: bool = True) -> Rows:
        """Image files at this experiment's cache shape through the disk cache: decoded once, for this run and
        every later one (the training images are usually cached already)."""
        folder = train_cache_dir(self.cfg)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError:  # trained with a --cache-dir this machine lacks (a node-local scratch folder)
            folder = default_cache_dir(self.cfg.data_dir)
            print(f"image cache: {self.cfg.cache_dir} (recorded at training) is not usable here; using {folder}")
        return cached_images(paths, folder, self.cfg.resize_interp, quiet, spec=self.spec)

    def predict_views(self, images: np.ndarray, views: list[str], folds: list[FoldModel] | None = None,
                      quiet: bool = True) -> np.ndarray:
        """Probabilities of shape (folds, views, N, classes)."""
        folds = self.folds if folds is None else folds
        batch = self.cfg.batch_size * 4
        return np.stack([np.stack([predict_probs(f.model, images, batch, f.norm, self.rt, view=VIEWS[v],
                                                 desc=f"fold {f.fold} {v}", quiet=quiet) for v in views])
                         for f in folds])

    def predict_array(self, images: np.ndarray, quiet: bool = True) -> np.ndarray:
        """Fold- and view-averaged probabilities (N, classes) of a uint8 array already shaped by prepare()."""
        return self.predict_views(images, self.views, quiet=quiet).mean(axis=(0, 1))

    def labels_from_probs(self, probs: np.ndarray) -> list[str]:
        if self.threshold is not None:
            return [self.classes[int(p >= self.threshold)] for p in probs[:, 1]]
        return [self.classes[i] for i in probs.argmax(1)]

    def predict_files(self, paths: list[str | Path]) -> np.ndarray:
        """Fold- and view-averaged probabilities (N, classes) for image files of any size."""
        return self.predict_array(self.prepare(decode_all([Path(p) for p in paths])))

    def predict_paths(self, paths: list[str | Path]) -> list[Prediction]:
        probs = self.predict_files(paths)
        return [Prediction(label, dict(zip(self.classes, map(float, row))))
                for label, row in zip(self.labels_from_probs(probs), probs)]

    def predict(self, path: str | Path) -> Prediction:
        """Label and per-class probabilities for one image file."""
        return self.predict_paths([path])[0]
