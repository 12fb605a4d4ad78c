"""The run table: every experiment under runs/ in one row (what differs from the defaults, folds done,
OOF score, leaderboard, time), sorted by OOF; and the config difference between two experiments."""
from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from src.core.atomic import write_csv, write_text
from src.core.config import config_differences
from src.core.errors import UserError
from src.core.metrics import METRICS, compute_metrics, metric_mode, monitor_direction
from src.core.rundir import OOF_BEST, OOF_FINAL, fold_finished, read_oof
from src.core.tables import markdown_table
from src.train.config import TrainConfig
from src.train.oof_summary import cv_epoch

# Where a run was written or how fast it ran, not what it learned: left out of "changes".
NOT_SETTINGS = ("exp", "runs_dir", "device", "threads", "num_workers")
LB_SUFFIX = "_lb.json"
RUN_TABLE_NOTE = ("OOF of the final weights: nothing was chosen on those rows. best.pt's OOF is optimistic: each "
                  "fold's epoch was picked on the rows it is scored on. cv_epochs: the epoch count with the best "
                  "mean validation curve over the folds (`train.py --epochs N`). holdout_accuracy: infer.py's "
                  "accuracy on the fold file's holdout rows (make_folds.py --holdout), which no fold trained, "
                  "selected or tuned on.")


def fold_records(exp: Path) -> dict[int, dict]:
    """fold -> the fold's config.json record (written when the fold started)."""
    out = {}
    for path in exp.glob("fold*/config.json"):
        if path.parent.name[4:].isdigit():
            try:
                out[int(path.parent.name[4:])] = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                raise UserError(f"{path}: unreadable run record; delete the fold folder or restore it") from None
    return dict(sorted(out.items()))


def settings_changed(config: dict, defaults: dict | None = None) -> dict:
    """The config keys whose values differ from TrainConfig's defaults (keys from an older or newer
    version of the config count when they are not at today's default)."""
    defaults = defaults if defaults is not None else asdict(TrainConfig())
    return {k: v for k, v in config.items() if k not in NOT_SETTINGS and defaults.get(k, object()) != v}


def short(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def read_leaderboards(submissions_dir: Path) -> dict[str, dict]:
    """exp -> the newest single-experiment scores from infer.py's <name>_lb.json files: public/private from the
    newest submission that has them, the holdout score from the newest that has one (--holdout-only writes no
    leaderboard score)."""
    out = {}
    for path in sorted(Path(submissions_dir).glob(f"*{LB_SUFFIX}")):
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue  # a hand-edited or foreign file must not break the table
        if len(record.get("experiments", [])) != 1:
            continue  # blends are not one experiment's score
        exp, written = record["experiments"][0], record.get("written", "")
        mine = out.setdefault(exp, {})
        for keys in (("public", "private"), ("holdout_accuracy",)):
            if any(record.get(k) is not None for k in keys) and written > mine.get(f"{keys[0]}_written", ""):
                mine.update({k: record.get(k) for k in keys}, **{f"{keys[0]}_written": written})
                if keys[0] == "public":
                    mine["submission"] = path.name[:-len(LB_SUFFIX)]
    return out


def fold_scores(folder: Path, classes: list[str], metric: str) -> dict[str, float]:
    """A finished fold's `metric` from its final weights (oof_final.csv, when written) and its best.pt (oof.csv)."""
    out = {}
    for weights, name in (("final", OOF_FINAL), ("best", OOF_BEST)):
        if (folder / name).is_file():
            y, probs, _ = read_oof(folder / name, classes)
            out[weights] = compute_metrics(y, probs).get(metric, np.nan)
    return out


def mean_std(values: list[float]) -> tuple[float, float]:
    return (float(np.mean(values)) if values else np.nan, float(np.std(values, ddof=1)) if len(values) > 1 else np.nan)


def experiment_row(exp: Path, metric: str, leaderboards: dict) -> dict | None:
    """One row of the run table, or None when `exp` holds no fold run. The final weights' OOF score is the
    unbiased one; best.pt's is optimistic (each fold's epoch was picked on its validation rows)."""
    records = fold_records(exp)
    if not records:
        return None
    first = records[min(records)]
    config, classes = first["config"], first["classes"]
    mixed = any(config_differences(r["config"], config, TrainConfig) for r in records.values())
    scores, seconds, dates, logs = {"final": [], "best": []}, 0.0, [], []
    for k in records:
        folder, log = exp / f"fold{k}", None
        if (folder / "log.csv").is_file():
            log = pd.read_csv(folder / "log.csv")
            seconds += float(log["seconds"].sum()) if "seconds" in log else 0.0
            dates.append((folder / "log.csv").stat().st_mtime)
        if fold_finished(folder):
            for weights, value in fold_scores(folder, classes, metric).items():
                scores[weights].append(value)
            logs += [] if log is None else [log]
    if len(scores["final"]) != len(scores["best"]):  # some folds from before oof_final.csv: no mixed mean
        scores["final"] = []
    monitor = config.get("monitor", "accuracy")
    cv = cv_epoch(logs, monitor, monitor_direction(monitor, config.get("monitor_mode", "auto"))) if logs else None
    changes = settings_changed(config)
    lb = leaderboards.get(exp.name, {})
    (final, final_std), (best, best_std) = mean_std(scores["final"]), mean_std(scores["best"])
    return {
        "exp": exp.name, "model": config.get("model", "?"),
        "changes": " ".join(f"{k}={short(v)}" for k, v in changes.items() if k != "model") or "(defaults)",
        "folds": f"{len(scores['best'])}/{first.get('n_folds', '?')}",
        f"oof_{metric}": final, f"oof_{metric}_std": final_std, f"oof_{metric}_best": best,
        f"oof_{metric}_best_std": best_std, "cv_epochs": cv.epochs if cv else np.nan,
        **{k: np.nan if lb.get(k) is None else lb[k] for k in ("holdout_accuracy", "public", "private")},
        "train_minutes": seconds / 60, "last_epoch_at": datetime.fromtimestamp(max(dates)).strftime("%Y-%m-%d %H:%M")
        if dates else "", "note": "folds trained with different configs" if mixed else ""}


def run_table(runs_dir: str | Path, metric: str, submissions_dir: str | Path) -> pd.DataFrame:
    """Every experiment under `runs_dir`, best final-weights OOF first (then best.pt's, for runs from before
    oof_final.csv; experiments without a finished fold last)."""
    if metric not in METRICS:
        raise UserError(f"--metric {metric}: choose from {', '.join(METRICS)}")
    root = Path(runs_dir)
    if not root.is_dir():
        raise UserError(f"{root}: no such folder; train something first (python train.py) or pass --runs-dir")
    leaderboards = read_leaderboards(Path(submissions_dir))
    rows = [r for exp in sorted(p for p in root.iterdir() if p.is_dir())
            if (r := experiment_row(exp, metric, leaderboards))]
    if not rows:
        raise UserError(f"{root}: no experiments (folders with fold*/config.json) yet")
    frame = pd.DataFrame(rows)
    key = frame[f"oof_{metric}"].fillna(frame[f"oof_{metric}_best"])
    order = key.sort_values(ascending=metric_mode(metric) == "min", na_position="last", kind="stable").index
    return frame.loc[order].reset_index(drop=True)


def table_text(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The table as strings: OOF as mean ± std over folds, empty cells for what is not there."""
    out = frame.copy()
    for column, label in ((f"oof_{metric}_best", f"OOF {metric}, best.pt (optimistic)"),
                          (f"oof_{metric}", f"OOF {metric}, final weights")):
        mean, std = out.pop(column), out.pop(f"{column}_std")
        out.insert(4, label, [("" if np.isnan(m) else f"{m:.4f}") + ("" if np.isnan(s) else f" ± {s:.4f}")
                              for m, s in zip(mean, std)])
    out["cv_epochs"] = ["" if pd.isna(v) else str(int(v)) for v in out["cv_epochs"]]
    for col in ("holdout_accuracy", "public", "private"):
        out[col] = ["" if pd.isna(v) else f"{v:.4f}" for v in out[col]]
    if not (out["holdout_accuracy"] != "").any():
        out = out.drop(columns="holdout_accuracy")
    out["train_minutes"] = [f"{v:.1f}" for v in out["train_minutes"]]
    if not out["note"].astype(bool).any():
        out = out.drop(columns="note")
    return out


def write_run_table(frame: pd.DataFrame, metric: str, out: Path) -> tuple[Path, Path]:
    """<out>.csv (numbers) and <out>.md (the table as printed)."""
    md = out.with_suffix(".md")
    write_csv(out.with_suffix(".csv"), frame)
    write_text(md, f"# Runs, by OOF {metric} of the final weights\n\n{RUN_TABLE_NOTE}\n\n"
                   f"{markdown_table(table_text(frame, metric))}\n")
    return out.with_suffix(".csv"), md


def config_diff(runs_dir: str | Path, a: str, b: str) -> pd.DataFrame:
    """key | A | B for every config key (and run fact: data, fold file, classes) that differs."""
    if a == b:
        raise UserError(f"--diff {a} {b}: name two different experiments")
    sides = []
    for name in (a, b):
        records = fold_records(Path(runs_dir) / name)
        if not records:
            raise UserError(f"{Path(runs_dir) / name}: no fold runs; names under {runs_dir}: "
                            f"{', '.join(sorted(p.name for p in Path(runs_dir).iterdir() if p.is_dir())) or 'none'}")
        first = records[min(records)]
        facts = {"folds trained": ",".join(map(str, records)), "folds_csv": first.get("folds_csv"),
                 "classes": ",".join(first.get("classes", [])), "world_size": first.get("world_size", 1),
                 "git_commit": first.get("git_commit")}
        sides.append({**first["config"], **{f"({k})": v for k, v in facts.items()}})
    keys = list(dict.fromkeys([*sides[0], *sides[1]]))
    rows = [{"key": k, a: short(sides[0].get(k, "(absent)")), b: short(sides[1].get(k, "(absent)"))}
            for k in keys if k != "exp" and sides[0].get(k, "(absent)") != sides[1].get(k, "(absent)")]
    return pd.DataFrame(rows, columns=["key", a, b])
