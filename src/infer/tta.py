"""Test-time augmentation: named views of a uint8 NHWC batch, and how a set of views is chosen.

Views act on the uint8 batch on the device (before normalisation), so a shift fills with replicated
edge pixels, never with a "normalised zero".
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from src.core.errors import UserError
from src.core.metrics import logloss

View = Callable[[torch.Tensor], torch.Tensor]


def identity(x: torch.Tensor) -> torch.Tensor:
    return x


def hflip(x: torch.Tensor) -> torch.Tensor:
    return x.flip(2)


def vflip(x: torch.Tensor) -> torch.Tensor:
    return x.flip(1)


def shift(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Move content down by dy and right by dx pixels; uncovered rows/columns repeat the edge pixels."""
    rows = (torch.arange(x.shape[1], device=x.device) - dy).clamp(0, x.shape[1] - 1)
    cols = (torch.arange(x.shape[2], device=x.device) - dx).clamp(0, x.shape[2] - 1)
    return x[:, rows][:, :, cols]


VIEWS: dict[str, View] = {
    "identity": identity,
    "hflip": hflip,
    "vflip": vflip,
    "shift_left": lambda x: shift(x, 0, -1),
    "shift_right": lambda x: shift(x, 0, 1),
    "shift_up": lambda x: shift(x, -1, 0),
    "shift_down": lambda x: shift(x, 1, 0),
}
SHIFTS = ["shift_left", "shift_right", "shift_up", "shift_down"]


def candidate_views(flips: str) -> list[str]:
    """Views that match how a model was trained: one-pixel shifts always, flips only if it saw flips
    (a flipped digit or letter is another symbol, so flips are never a default for such data)."""
    views = ["identity"] + SHIFTS
    if "h" in flips:
        views.append("hflip")
    if "v" in flips:
        views.append("vflip")
    return views


def parse_views(text: str, flips: str) -> list[str]:
    """--tta value -> candidate view names: auto (by training flips), none, greedy, or a comma list."""
    if text in ("auto", "greedy"):
        return candidate_views(flips)
    if text == "none":
        return ["identity"]
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in VIEWS]
    if unknown or not names:
        raise UserError(f"--tta {text!r}: unknown view(s) {unknown}; choose from auto, none, greedy or a comma "
                        f"list of {list(VIEWS)}")
    return names


def greedy_views(y: np.ndarray, probs_by_view: dict[str, np.ndarray]) -> list[str]:
    """Forward selection on OOF log-loss: start from identity, add the view that helps most, stop when none does."""
    chosen = ["identity"] if "identity" in probs_by_view else [next(iter(probs_by_view))]
    best = logloss(y, probs_by_view[chosen[0]])
    while True:
        trials = {name: logloss(y, np.mean([probs_by_view[v] for v in chosen + [name]], axis=0))
                  for name in probs_by_view if name not in chosen}
        if not trials or min(trials.values()) >= best:
            return chosen
        name = min(trials, key=trials.get)
        chosen.append(name)
        best = trials[name]


def with_identity(views: list[str]) -> list[str]:
    """The views to predict: identity always (for the no-TTA rows of the leaderboard and holdout tables), first."""
    return list(dict.fromkeys(["identity"] + views))


def ensemble_variants(p, views: np.ndarray) -> dict[str, np.ndarray]:
    """What the leaderboard and holdout tables compare, from a (folds, with_identity(p.views), N, C) array: the first
    fold alone, the fold ensemble without TTA, and with the chosen views."""
    n = len(p.folds)
    return {f"fold {p.folds[0].fold}, no TTA": views[0, 0], f"{n}-fold ensemble, no TTA": views[:, 0].mean(0),
            f"{n}-fold ensemble + TTA ({'+'.join(p.views)})": chosen_mean(p, views)}


def chosen_mean(p, views: np.ndarray) -> np.ndarray:
    """Mean over folds and the chosen views (`p.views`, a Predictor's) of a (folds, with_identity(p.views), N, C)
    array."""
    index = [with_identity(p.views).index(v) for v in p.views]
    return views[:, index].mean(axis=(0, 1))
