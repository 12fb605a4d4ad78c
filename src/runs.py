"""The run directory: runs/<exp>/fold<k>/ with config.json, log.csv, curves.png, best.pt, last.pt, oof.csv,
and the experiment-level OOF summary."""
from __future__ import annotations

import hashlib
import io
import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from src.atomic import atomic_path, save_figure, write_csv, write_text  # noqa: E402
from src.config import config_differences  # noqa: E402
from src.errors import UserError  # noqa: E402
from src.metrics import compute_metrics  # noqa: E402

CHECKPOINT_FORMAT = 1


def exp_dir(runs_dir: str | Path, exp: str) -> Path:
    return Path(runs_dir) / exp


def fold_dir(runs_dir: str | Path, exp: str, fold: int) -> Path:
    return exp_dir(runs_dir, exp) / f"fold{fold}"


def fold_finished(folder: Path) -> bool:
    """A fold run is finished when it has best.pt (written at the first improving epoch) and oof.csv
    (written only when the fold ends)."""
    return (folder / "best.pt").is_file() and (folder / "oof.csv").is_file()


def write_json(path: Path, payload: dict) -> None:
    write_text(path, json.dumps(payload, indent=2, sort_keys=False) + "\n")


CHECKSUMS = "checksums.json"


def _read_checksums(folder: Path) -> dict[str, list[str]]:
    path = folder / CHECKSUMS
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, json.JSONDecodeError):
        raise UserError(f"{path}: unreadable checksum manifest; restore it or delete it to skip verification") from None


def save_checkpoint(path: Path, state: dict) -> None:
    """Write a checkpoint atomically and record its sha256 in checksums.json beside it.

    The manifest first lists the old and the new digest, then only the new one, so a kill at any point
    leaves the file on disk matching one listed digest."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    sums = _read_checksums(path.parent)
    try:
        write_json(path.parent / CHECKSUMS, {**sums, path.name: sums.get(path.name, []) + [digest]})
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
        write_json(path.parent / CHECKSUMS, {**sums, path.name: [digest]})
    except OSError as err:
        raise UserError(f"{path}: could not write the checkpoint ({err.strerror}); the previous one, if any, "
                        f"is intact") from None


def load_checkpoint(path: Path) -> dict:
    """Read a checkpoint: verify its recorded sha256, load with weights_only=True (no pickled code can
    run) and check its format."""
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found")
    data = path.read_bytes()
    expected = _read_checksums(path.parent).get(path.name)
    if expected is not None and hashlib.sha256(data).hexdigest() not in expected:
        raise UserError(f"{path}: checksum does not match {CHECKSUMS}; the file changed or is corrupt")
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # truncated file, wrong format, pickled code: all "unusable checkpoint"
        raise UserError(f"{path}: unreadable checkpoint ({str(err).splitlines()[0][:120]})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{path}: not a checkpoint written by this kit (format {CHECKPOINT_FORMAT})")
    return state


def write_log(run_dir: Path, rows: list[dict]) -> None:
    write_csv(run_dir / "log.csv", pd.DataFrame(rows))


def plot_epoch_loss(path: Path, log: list[dict], ylabel: str, log_scale: bool = False) -> None:
    """loss.png of a loop that logs one loss per epoch (the generator, pretraining)."""
    fig, ax = plt.subplots(figsize=(5, 3.4))
    ax.plot([r["epoch"] for r in log], [r["loss"] for r in log], marker="o", ms=3)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    if log_scale:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    save_figure(path, fig)
    plt.close(fig)


def plot_curves(run_dir: Path, rows: list[dict], lr_steps: np.ndarray, lr_planned: np.ndarray, steps_per_epoch: int,
                monitor: str) -> None:
    """curves.png: train/val loss, the monitored metric, and the LR: the schedule's curve per optimiser
    step, with the LR actually used at each epoch's end on top (they differ after plateau drops)."""
    log = pd.DataFrame(rows)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot(log["epoch"], log["train_loss"], marker="o", label="train loss")
    axes[0].plot(log["epoch"], log["val_log_loss"], marker="o", label="val loss (log-loss)")
    axes[0].set_xlabel("epoch")
    axes[0].legend()
    axes[1].plot(log["epoch"], log[f"val_{monitor}"], marker="o", color="tab:green")
    axes[1].set_xlabel("epoch")
    axes[1].set_title(f"val {monitor}")
    axes[2].plot(lr_steps, lr_planned, color="tab:purple", label="schedule")
    axes[2].plot((log["epoch"] + 1) * steps_per_epoch - 1, log["lr"], "o", color="black", ms=3, label="used")
    axes[2].legend()
    axes[2].set_xlabel("optimiser step")
    axes[2].set_title("learning rate")
    axes[2].ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    for ax in axes:
        ax.grid(alpha=0.3)
    save_figure(run_dir / "curves.png", fig)
    plt.close(fig)


def prob_columns(classes: list[str]) -> list[str]:
    return [f"prob_{c}" for c in classes]


def write_oof(run_dir: Path, ids: list[str], labels: np.ndarray, probs: np.ndarray, classes: list[str],
              fold: int) -> None:
    """oof.csv: id, true label, fold, predicted label, one probability column per class."""
    frame = pd.DataFrame({"id": ids, "label": [classes[i] for i in labels], "fold": fold,
                          "pred": [classes[i] for i in probs.argmax(1)]})
    frame = pd.concat([frame, pd.DataFrame(probs, columns=prob_columns(classes))], axis=1)
    write_csv(run_dir / "oof.csv", frame)


def oof_arrays(frame: pd.DataFrame, classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(true class indices, probabilities) of an oof.csv frame (or several concatenated)."""
    index = {c: i for i, c in enumerate(classes)}
    return frame["label"].map(index).to_numpy(), frame[prob_columns(classes)].to_numpy()


def read_oof(path: Path, classes: list[str]) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """(true class indices, probabilities, frame) from an oof.csv."""
    frame = pd.read_csv(path, dtype={"id": str, "label": str, "pred": str})
    return *oof_arrays(frame, classes), frame


def counted_oof(exp: Path, classes: list[str], config: dict, fingerprint: dict) -> list[tuple[str, pd.DataFrame]]:
    """(fold, oof.csv frame) for the folds trained with this config on this data; others (an older run) are
    named and skipped."""
    out = []
    for path in sorted(exp.glob("fold*/oof.csv"), key=lambda p: int(p.parent.name[4:])):
        record = json.loads((path.parent / "config.json").read_text())
        if config_differences(record.get("config", {}), config) or record.get("fingerprint") != fingerprint:
            print(f"OOF summary: skipping {path.parent.name} (trained with another config or data)")
            continue
        out.append((path.parent.name[4:], read_oof(path, classes)[2]))
    if not out:
        raise UserError(f"{exp}: no fold*/oof.csv yet; train a fold first")
    return out


def summarize_oof(exp: Path, classes: list[str], folds: list[tuple[str, pd.DataFrame]]) -> pd.DataFrame:
    """Per-fold and overall OOF metrics (plus mean ± std over folds) of `counted_oof`'s folds; saved as CSV
    and Markdown."""
    rows, all_y, all_p = [], [], []
    for fold, frame in folds:
        y, probs = oof_arrays(frame, classes)
        rows.append({"fold": fold, "n": len(y), **compute_metrics(y, probs)})
        all_y.append(y)
        all_p.append(probs)
    table = pd.DataFrame(rows)
    metric_cols = [c for c in table.columns if c not in ("fold", "n")]
    y, probs = np.concatenate(all_y), np.concatenate(all_p)
    extra = [{"fold": "mean", "n": int(table["n"].sum()), **table[metric_cols].mean().to_dict()},
             {"fold": "std", "n": int(table["n"].sum()), **table[metric_cols].std(ddof=1).to_dict()},
             {"fold": "all (pooled OOF)", "n": len(y), **compute_metrics(y, probs)}]
    table = pd.concat([table, pd.DataFrame(extra)], ignore_index=True)
    write_csv(exp / "oof_summary.csv", table)
    write_text(exp / "oof_summary.md", f"# OOF summary: {exp.name}\n\n{markdown_table(table)}\n")
    return table


def markdown_table(frame: pd.DataFrame, digits: int = 4) -> str:
    """A GitHub Markdown table (pandas' to_markdown needs an extra package)."""
    def cell(v) -> str:
        if isinstance(v, float):
            return "" if math.isnan(v) else f"{v:.{digits}f}"
        return str(v)
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)
