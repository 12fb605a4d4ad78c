"""An experiment's OOF summary, with two numbers named for what they are.

- **final weights** (each fold's `oof_final.csv`): the weights training ended with. Nothing was chosen on the
  validation rows, so their score is an unbiased estimate of what these settings give.
- **selected checkpoint** (`oof.csv`, from `best.pt`): each fold's best epoch by the monitored metric, chosen on
  the very rows it is scored on, so its score is optimistic (the maximum of many noisy looks).

Plus one epoch count for all folds, read off the mean validation curve: a length `train.py --epochs` can reuse.
It is chosen on the same rows too, but once for all folds, so it flatters far less than a per-fold best epoch.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from src.core.atomic import write_csv, write_text
from src.core.config import config_differences
from src.core.errors import UserError
from src.core.metrics import compute_metrics
from src.core.rundir import OOF_BEST, OOF_FINAL, read_oof
from src.core.tables import markdown_table
from src.train.config import TrainConfig

POOLED = "all (pooled OOF)"
WEIGHTS = {"final": "final weights (oof_final.csv): nothing was chosen on these rows",
           "best": "selected checkpoint (best.pt): optimistic, each fold's epoch was chosen on these rows"}


@dataclass
class CvEpoch:
    """The epoch count with the best mean validation curve over folds (one choice for all folds)."""

    epochs: int  # how many epochs: the 0-based epoch index + 1
    value: float  # the mean validation metric there
    final_value: float  # the mean at the last epoch every fold reached
    folds: int
    monitor: str
    last: bool  # the last epoch every fold reached: no shorter run was better on the mean curve
    cut: bool  # some folds ran longer (others stopped early): the curve ends where the shortest fold did


def counted_folds(exp: Path, config: dict, fingerprint: dict) -> list[int]:
    """The folds of `exp` with an oof.csv, trained with this config on this data; others (an older run) are
    named and skipped."""
    out = []
    for path in sorted(exp.glob(f"fold*/{OOF_BEST}"), key=lambda p: int(p.parent.name[4:])):
        record = json.loads((path.parent / "config.json").read_text())
        changed = config_differences(record.get("config", {}), config, TrainConfig)
        if changed or record.get("fingerprint") != fingerprint:
            print(f"OOF summary: skipping {path.parent.name} (trained with another config or data)")
            continue
        out.append(int(path.parent.name[4:]))
    if not out:
        raise UserError(f"{exp}: no fold*/oof.csv yet; train a fold first")
    return out


def fold_metrics(exp: Path, classes: list[str], folds: list[int], name: str, weights: str) -> pd.DataFrame:
    """Per-fold rows, then mean, std (ddof=1) over folds and the pooled OOF rows of one kind of weights."""
    rows, all_y, all_p = [], [], []
    for k in folds:
        y, probs, _ = read_oof(exp / f"fold{k}" / name, classes)
        rows.append({"weights": weights, "fold": str(k), "n": len(y), **compute_metrics(y, probs)})
        all_y.append(y)
        all_p.append(probs)
    table = pd.DataFrame(rows)
    metric_cols = [c for c in table.columns if c not in ("weights", "fold", "n")]
    n = int(table["n"].sum())
    extra = [{"weights": weights, "fold": "mean", "n": n, **table[metric_cols].mean().to_dict()},
             {"weights": weights, "fold": "std", "n": n, **table[metric_cols].std(ddof=1).to_dict()},
             {"weights": weights, "fold": POOLED, "n": n,
              **compute_metrics(np.concatenate(all_y), np.concatenate(all_p))}]
    return pd.concat([table, pd.DataFrame(extra)], ignore_index=True)


def cv_epoch(logs: list[pd.DataFrame], monitor: str, mode: str) -> CvEpoch | None:
    """The epoch whose validation metric, averaged over the folds' log.csv, is best (the earliest on a tie: it
    is cheaper), over the epochs every fold reached; None when the metric was never finite."""
    column = f"val_{monitor}"
    if not logs or any(column not in log for log in logs):
        return None
    reached = min(len(log) for log in logs)
    curve = np.mean([log[column].to_numpy(dtype=np.float64)[:reached] for log in logs], axis=0)
    if reached == 0 or not np.isfinite(curve).any():
        return None
    scores = np.where(np.isfinite(curve), curve, -np.inf if mode == "max" else np.inf)
    index = int(np.argmax(scores) if mode == "max" else np.argmin(scores))
    return CvEpoch(index + 1, float(curve[index]), float(curve[-1]), len(logs), monitor, index == reached - 1,
                   any(len(log) > reached for log in logs))


def validation_readers(config: dict) -> list[str]:
    """What in training, besides best.pt, looked at the validation rows (so the final weights depend on them too)."""
    readers = ["early stopping"] if config.get("patience_epochs") else []
    return readers + (["the plateau scheduler"] if config.get("scheduler") == "plateau" else [])


def summarize_oof(exp: Path, classes: list[str], folds: list[int], monitor: str, mode: str,
                  readers: list[str] = ()) -> tuple[pd.DataFrame, CvEpoch | None]:
    """The final-weights block (when every fold has oof_final.csv), the selected-checkpoint block and the CV
    epoch; written as oof_summary.csv (one `weights` column tells the blocks apart) and oof_summary.md. `readers`:
    validation_readers of the config, named beside the final weights' score."""
    blocks = []
    missing = [k for k in folds if not (exp / f"fold{k}" / OOF_FINAL).is_file()]
    if not missing:
        blocks.append(fold_metrics(exp, classes, folds, OOF_FINAL, "final"))
    blocks.append(fold_metrics(exp, classes, folds, OOF_BEST, "best"))
    table = pd.concat(blocks, ignore_index=True)
    logs = [pd.read_csv(exp / f"fold{k}" / "log.csv") for k in folds if (exp / f"fold{k}" / "log.csv").is_file()]
    cv = cv_epoch(logs, monitor, mode) if len(logs) == len(folds) else None
    notes = [f"Fold(s) {','.join(map(str, missing))} have no {OOF_FINAL} (trained before it was written): only the "
             f"selected checkpoint's optimistic score is shown; `train.py --resume` on the finished folds writes "
             f"it."] if missing else []
    write_csv(exp / "oof_summary.csv", table)
    write_text(exp / "oof_summary.md", f"# OOF summary: {exp.name}\n\n" + "\n".join(
        [*headline(table, cv, monitor, readers), "", *notes, *block_sections(table)]) + "\n")
    return table, cv


def pooled(table: pd.DataFrame, weights: str, metric: str) -> float | None:
    rows = table[(table["weights"] == weights) & (table["fold"] == POOLED)]
    return float(rows[metric].iloc[0]) if len(rows) and metric in rows else None


def headline(table: pd.DataFrame, cv: CvEpoch | None, monitor: str, readers: list[str] = ()) -> list[str]:
    """The lines train.py prints above the table: both pooled scores and the CV epoch."""
    lines = []
    for weights, text in WEIGHTS.items():
        value = pooled(table, weights, monitor)
        if value is not None:
            caveat = (f" (but {' and '.join(readers)} read them while training: slightly optimistic)"
                      if weights == "final" and readers else "")
            lines.append(f"- pooled OOF {monitor} {value:.4f}: {text}{caveat}")
    reached = " (of the epochs every fold reached; some stopped early)" if cv is not None and cv.cut else ""
    if cv is not None and cv.last:
        lines.append(f"- CV-chosen epoch count {cv.epochs}, the last{reached}: no earlier epoch has a better mean "
                     f"validation {cv.monitor} over the {cv.folds} fold(s) ({cv.value:.4f})")
    elif cv is not None:
        lines.append(f"- CV-chosen epoch count {cv.epochs}{reached}: mean validation {cv.monitor} {cv.value:.4f} "
                     f"over {cv.folds} fold(s) there (last epoch {cv.final_value:.4f}); to train that long: "
                     f"`train.py --epochs {cv.epochs}` (the schedule then fits {cv.epochs} epochs)")
    return lines


def block_sections(table: pd.DataFrame) -> list[str]:
    out = []
    for weights, part in table.groupby("weights", sort=False):
        out += [f"## {WEIGHTS[weights][0].upper()}{WEIGHTS[weights][1:]}", "",
                markdown_table(part.drop(columns="weights")), ""]
    return out


def side_by_side(table: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """One row per fold (then mean, std, pooled) with `metrics` of each kind of weights in adjacent columns."""
    blocks = {w: part.set_index("fold") for w, part in table.groupby("weights", sort=False)}
    first = next(iter(blocks.values()))
    out = pd.DataFrame({"fold": first.index, "n": first["n"].to_numpy()})
    for metric in metrics:
        for weights, part in blocks.items():
            out[f"{metric} ({'best.pt' if weights == 'best' else weights})"] = part[metric].to_numpy()
    return out


def summary_text(table: pd.DataFrame, cv: CvEpoch | None, monitor: str, readers: list[str] = ()) -> str:
    """What train.py prints: the headline lines, then the monitored metric and log loss of both kinds of weights
    side by side (oof_summary.md has every metric)."""
    metrics = list(dict.fromkeys([monitor, "log_loss"]))
    return "\n".join([*headline(table, cv, monitor, readers), "", markdown_table(side_by_side(table, metrics))])


def pooled_score(exp: Path, metric: str, weights: str = "final", strict: bool = True) -> float:
    """The pooled OOF `metric` of an experiment's oof_summary.csv, for `weights` (final or best); NaN instead of
    an error when it is not there and not `strict` (a run from before oof_final.csv)."""
    table = pd.read_csv(exp / "oof_summary.csv", dtype={"fold": str})
    if "weights" not in table:  # a summary from before the two blocks: the selected checkpoint's
        table = table.assign(weights="best")
    value = pooled(table, weights, metric)
    if value is None and not strict:
        return float("nan")
    if value is None:
        raise UserError(f"{exp}/oof_summary.csv: no pooled {metric} of the {weights} weights; retrain or "
                        f"`train.py --resume` the experiment's folds")
    return value
