"""Training curves as PNG: a fold's loss / metric / LR panel, and the one-loss-per-epoch plot of the generator
and of pretraining."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from src.core.atomic import save_figure


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
    semi = "mask_rate" in log  # consistency training: a fourth panel for the unlabelled stream
    fig, axes = plt.subplots(1, 4 if semi else 3, figsize=(17 if semi else 13, 3.6))
    axes[0].plot(log["epoch"], log["train_loss"], marker="o", label="train loss")
    axes[0].plot(log["epoch"], log["val_log_loss"], marker="o", label="val loss (log-loss)")
    if semi:  # train loss is the labelled loss plus the weighted unlabelled one
        axes[0].plot(log["epoch"], log["unlabeled_loss"], marker="o", label="unlabelled loss (unweighted)")
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
    if semi:
        axes[3].plot(log["epoch"], log["mask_rate"], marker="o", label="confident share (mask rate)")
        if log["pseudo_accuracy"].notna().any():
            axes[3].plot(log["epoch"], log["pseudo_accuracy"], marker="o", label="their targets' accuracy")
        axes[3].set_ylim(-0.02, 1.02)
        axes[3].set_xlabel("epoch")
        axes[3].set_title("unlabelled images")
        axes[3].legend()
    for ax in axes:
        ax.grid(alpha=0.3)
    save_figure(run_dir / "curves.png", fig)
    plt.close(fig)
