"""Learning-rate schedule as one pure function of the optimiser step (the same curve is plotted),
and the metric-driven pieces of a schedule: the plateau LR scale and early stopping.

`plateau` cannot be a function of the step alone: it is warmup then constant, multiplied by a factor
that `PlateauScale` lowers when the monitored metric stalls.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from src.train.config import TrainConfig


@dataclass(frozen=True)
class Schedule:
    kind: str
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    min_ratio: float
    step_every_steps: int
    step_gamma: float


def build_schedule(cfg: TrainConfig, steps_per_epoch: int) -> Schedule:
    return Schedule(kind=cfg.scheduler, steps_per_epoch=steps_per_epoch, total_steps=cfg.epochs * steps_per_epoch,
                    warmup_steps=round(cfg.lr_warmup_epochs * steps_per_epoch), min_ratio=cfg.lr_min_ratio,
                    step_every_steps=max(1, cfg.lr_step_epochs * steps_per_epoch), step_gamma=cfg.lr_step_gamma)


def lr_factor_at(step: int, s: Schedule) -> float:
    """Multiplier of the peak LR for optimiser step `step` (0-based)."""
    if s.kind == "onecycle":
        # Smith's one-cycle: cosine up from peak/25 over the warmup (30 % if none given), cosine down to the floor.
        up = s.warmup_steps or max(1, int(0.3 * s.total_steps))
        if step < up:
            return 1 / 25 + (1 - 1 / 25) * (1 - math.cos(math.pi * step / up)) / 2
        return _cosine(step - up, s.total_steps - up, s.min_ratio)
    if step < s.warmup_steps:
        return (step + 1) / s.warmup_steps
    after = step - s.warmup_steps
    if s.kind == "cosine":
        return _cosine(after, s.total_steps - s.warmup_steps, s.min_ratio)
    if s.kind == "step":
        return s.step_gamma ** (after // s.step_every_steps)
    if s.kind in ("constant", "plateau"):
        return 1.0
    raise ValueError(f"unknown scheduler {s.kind!r}")


def _cosine(step: int, steps: int, min_ratio: float) -> float:
    progress = min(1.0, step / max(1, steps - 1))
    return min_ratio + (1 - min_ratio) * (1 + math.cos(math.pi * progress)) / 2


class PlateauScale:
    """LR multiplier for the plateau scheduler: times `factor` after `patience` epochs without improvement."""

    def __init__(self, patience_epochs: int, factor: float, mode: str):
        self.patience_epochs, self.factor, self.mode = patience_epochs, factor, mode
        self.scale, self.best, self.bad_epochs = 1.0, None, 0

    def update(self, value: float) -> None:
        if is_better(value, self.best, self.mode):
            self.best, self.bad_epochs = value, 0
            return
        self.bad_epochs += 1
        if self.bad_epochs > self.patience_epochs:
            self.scale *= self.factor
            self.bad_epochs = 0

    def state_dict(self) -> dict:
        return {"scale": self.scale, "best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict) -> None:
        self.scale, self.best, self.bad_epochs = state["scale"], state["best"], state["bad_epochs"]


def is_better(value: float, best: float | None, mode: str, min_delta: float = 0.0) -> bool:
    """True when `value` beats `best` by more than `min_delta` in direction `mode` ('max' or 'min').

    NaN (e.g. ROC-AUC on a fold missing a class) never counts as an improvement."""
    if value != value:
        return False
    if best is None:
        return True
    return value > best + min_delta if mode == "max" else value < best - min_delta


class EarlyStopping:
    """Tracks the best monitored value; `should_stop` after `patience_epochs` epochs without improvement."""

    def __init__(self, mode: str, patience_epochs: int, min_delta: float = 0.0):
        self.mode, self.patience_epochs, self.min_delta = mode, patience_epochs, min_delta
        self.best, self.best_epoch, self.bad_epochs = None, -1, 0

    def update(self, value: float, epoch: int) -> bool:
        """Record an epoch's value; returns True when it is a new best. NaN before any real value (the metric
        is undefined on these validation rows) cannot judge the run, so it does not count against patience."""
        if is_better(value, self.best, self.mode, self.min_delta):
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
            return True
        if self.best is not None or value == value:
            self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience_epochs > 0 and self.bad_epochs >= self.patience_epochs

    def state_dict(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_epoch, self.bad_epochs = state["best"], state["best_epoch"], state["bad_epochs"]
