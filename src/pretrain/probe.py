"""How good is a frozen representation? kNN and linear-probe accuracy on the labelled rows, cross-validated
over the committed folds, for the pretrained backbone next to its own random initialisation.

This is the only part of pretrain.py that reads labels, and it runs after the weights are written.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from src.core.atomic import write_csv, write_text
from src.core.errors import UserError
from src.core.repro import derived_seed, seed_everything
from src.core.rundir import load_checkpoint
from src.core.tables import markdown_table
from src.data.contract import LabelTable
from src.data.images import ImageSpec, decode_all, to_array
from src.pretrain.config import PretrainConfig
from src.pretrain.trainer import build_backbone
from src.train.engine import Runtime, norm_tensors, to_input
from src.train.models import classifier_prefixes


@torch.no_grad()
def embed(backbone: torch.nn.Module, images: np.ndarray, mean: list[float], std: list[float], rt: Runtime,
          batch_size: int = 512) -> np.ndarray:
    """L2-normalised pooled features (N, D) of a uint8 NHWC array, in order."""
    backbone.eval()
    norm = norm_tensors(mean, std, rt)
    out = []
    for start in range(0, len(images), batch_size):
        x = to_input(torch.from_numpy(images[start:start + batch_size]), norm, rt)
        with torch.autocast(rt.device.type, dtype=rt.amp_dtype, enabled=rt.amp_dtype is not None):
            features = backbone.forward_head(backbone.forward_features(x), pre_logits=True)
        out.append(F.normalize(features.float(), dim=1).cpu())
    return torch.cat(out).numpy()


def knn_predict(train_x: np.ndarray, train_y: np.ndarray, query_x: np.ndarray, num_classes: int, k: int,
                temperature: float) -> np.ndarray:
    """Class predictions by a weighted vote of the k most cosine-similar training rows (weight exp(sim / T)),
    as in Wu et al. 2018; features must be L2-normalised."""
    k = min(k, len(train_x))
    similarity = torch.from_numpy(query_x) @ torch.from_numpy(train_x).T
    top, index = similarity.topk(k, dim=1)
    votes = torch.zeros(len(query_x), num_classes, dtype=torch.float64)
    votes.scatter_add_(1, torch.from_numpy(train_y)[index], (top.double() / temperature).exp())
    return votes.argmax(1).numpy()


def linear_probe_predict(train_x: np.ndarray, train_y: np.ndarray, query_x: np.ndarray, seed: int) -> np.ndarray:
    """Multinomial logistic regression on standardised frozen features."""
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0, random_state=seed))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # a near-converged probe is still a fair probe
        model.fit(train_x, train_y)
    return model.predict(query_x)


def cross_validate(features: np.ndarray, labels: np.ndarray, fold_of: np.ndarray, num_classes: int,
                   cfg: PretrainConfig) -> list[dict]:
    """kNN and linear-probe accuracy of each fold's validation rows, fitted on the other folds' rows."""
    rows = []
    for fold in range(int(fold_of.max()) + 1):
        fit, held = fold_of != fold, fold_of == fold
        knn = knn_predict(features[fit], labels[fit], features[held], num_classes, cfg.probe_k, cfg.probe_temperature)
        linear = linear_probe_predict(features[fit], labels[fit], features[held], cfg.seed)
        rows.append({"fold": fold, "n_fit": int(fit.sum()), "n_val": int(held.sum()),
                     "knn_accuracy": float((knn == labels[held]).mean()),
                     "linear_accuracy": float((linear == labels[held]).mean())})
    return rows


def run_probe(cfg: PretrainConfig, split: tuple[LabelTable, np.ndarray, Path], weights: Path, rt: Runtime,
              quiet: bool) -> pd.DataFrame:
    """Probe `weights` (a pretrain.py backbone.pt) and the same network at its initial weights on the labelled
    rows of `split` (cv.load_split's table, fold per row, fold file); writes probe_<data>.md/.csv beside the
    weights and returns the per-fold table."""
    state = load_checkpoint(weights)
    if state.get("kind") != "ssl":
        raise UserError(f"{weights}: not a pretrain.py backbone file")
    table, fold_of, folds_path = split
    made = state["config"]
    spec = ImageSpec(**state["image_spec"])
    images = to_array(decode_all(table.paths, quiet=quiet), spec, made["resize_interp"])
    results = []
    for name, tensors in (("initial weights", None), ("pretrained", state["model"])):
        seed_everything(derived_seed(made["seed"]))  # the initialisation pretraining started from
        backbone = build_backbone(made["model"], spec.in_chans)
        if tensors is not None:
            result = backbone.load_state_dict(tensors, strict=False)
            missing = [k for k in result.missing_keys if not k.startswith(classifier_prefixes(backbone))]
            if missing or result.unexpected_keys:
                raise UserError(f"{weights}: does not match model {made['model']} "
                                f"(e.g. {(missing or result.unexpected_keys)[0]})")
        features = embed(backbone.to(rt.device), images, state["mean"], state["std"], rt)
        for row in cross_validate(features, table.labels, fold_of, len(table.classes), cfg):
            results.append({"weights": name, **row})
    frame = pd.DataFrame(results)
    out = probe_path(weights, cfg.data_dir)
    write_csv(out.with_suffix(".csv"), frame)
    summary = probe_summary(frame)
    write_text(out, f"# Frozen-feature quality of {weights}\n\n"
               f"{len(table.labels)} labelled rows of {table.source}, cross-validated over {folds_path} "
               f"({int(fold_of.max()) + 1} folds); kNN k={cfg.probe_k}, T={cfg.probe_temperature}.\n\n"
               f"{markdown_table(summary)}\n")
    return frame


def probe_path(weights: Path, data_dir: str) -> Path:
    """probe_<data name>.md beside the weights: one report per labelled data set probed."""
    return weights.parent / f"probe_{Path(data_dir).name}.md"


def probe_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean ± std over folds per weights and probe."""
    rows = []
    for name, group in frame.groupby("weights", sort=False):
        rows.append({"weights": name, "folds": len(group),
                     "kNN accuracy": f"{group.knn_accuracy.mean():.4f} ± {group.knn_accuracy.std(ddof=0):.4f}",
                     "linear-probe accuracy": f"{group.linear_accuracy.mean():.4f} ± "
                                              f"{group.linear_accuracy.std(ddof=0):.4f}"})
    return pd.DataFrame(rows)
