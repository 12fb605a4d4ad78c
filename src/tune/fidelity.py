"""Multi-fidelity search: successive halving over complete, cheaper runs.

A configuration is first trained at a low fidelity: fewer epochs AND a per-class subsample of the training rows,
each scaled by sqrt(cost), so a rung costs 1/ETA^k of a full run and its schedule still runs to the end (a cut-off
one-cycle run is still at its peak LR and ranks configs poorly). The best 1/ETA of each rung is trained again at the
next, up to full fidelity (the base config's epochs and every training row). The base config itself is trained at
full fidelity first, always: the study's pick is made among full-fidelity trials only (ties go to the base config),
so it can never prefer something worse than the base config on the tuned folds by accident.

Under a budget every cheap run keeps room for one more full run after it, and when no new cheap run fits, the best
run of the highest rung reached is promoted straight to full fidelity (as in a Hyperband bracket with a larger eta):
on 2 cores a 15-minute budget then evaluates many cheap configurations and still trains one besides the base config
in full, where climbing every rung would spend the budget on the 1/3 run.

Each run is one Optuna trial with user attributes `rung` (0 = cheapest) and `fidelity` (its share of a full run's
cost); a promoted run is queued with the values it was chosen with and `promoted_from` naming the trial it beat the
others in. TPE learns from every rung's values (it sees more cheap ones).
"""
from __future__ import annotations

import dataclasses
import math
import time

import optuna
from optuna.trial import FrozenTrial, TrialState

from src.train.config import TrainConfig
from src.tune.space import dependent_values

ETA = 3  # each rung keeps the best third
RUNGS = 4  # fidelities 1/27, 1/9, 1/3 and 1 of a full run's cost


def cost_share(rung: int, rungs: int = RUNGS, eta: int = ETA) -> float:
    """A rung's cost as a share of a full-fidelity run."""
    return float(eta) ** (rung - (rungs - 1))


# Epoch counts that must shrink with a cheap run's epochs (or a short run is mostly warmup, or refused).
EPOCH_KEYS = ("lr_warmup_epochs", "freeze_epochs", "mixup_off_epoch", "loss_switch_epoch", "patience_epochs",
              "lr_step_epochs", "plateau_patience_epochs")
BELOW_EPOCHS = ("freeze_epochs", "mixup_off_epoch", "loss_switch_epoch")  # must stay below epochs when set


def fidelity_values(values: dict, base: TrainConfig, rung: int, rungs: int = RUNGS, eta: int = ETA) -> dict:
    """A trial's values at `rung`: of its full-fidelity config, epochs and the training-row share each scaled by
    sqrt(cost), and every epoch count with the epochs; full fidelity (the top rung) leaves them as they are."""
    share = cost_share(rung, rungs, eta)
    if share >= 1:
        return dict(values)
    scale = math.sqrt(share)
    values = dependent_values(base, values)  # the full-fidelity trial's epoch points, then shrunk with it
    merged = {**dataclasses.asdict(base), **values}
    epochs = max(1, round(merged["epochs"] * scale))
    out = {**values, "epochs": epochs, "train_fraction": round(merged["train_fraction"] * scale, 4)}
    for key in EPOCH_KEYS:
        value = merged[key]
        if not value:
            continue
        if isinstance(value, float):
            out[key] = value * epochs / merged["epochs"]
        else:
            scaled = max(1, round(value * epochs / merged["epochs"]))
            out[key] = min(scaled, epochs - 1) if key in BELOW_EPOCHS else scaled
    for key in BELOW_EPOCHS:  # a one-epoch run has no room for a switch point
        if key in out and out[key] < 1:
            out[key] = 0
    return out


def rung_of(trial: FrozenTrial, rungs: int = RUNGS) -> int:
    """A trial's rung; trials of studies without fidelities ran at full fidelity."""
    return int(trial.user_attrs.get("rung", rungs - 1))


def is_full(trial: FrozenTrial, rungs: int = RUNGS) -> bool:
    return rung_of(trial, rungs) == rungs - 1


def promotions(study: optuna.Study, rung: int, maximize: bool, rungs: int = RUNGS, eta: int = ETA) -> list[FrozenTrial]:
    """The complete trials of `rung - 1` that earn a run at `rung`: the best 1/eta of those so far, less those
    already run or queued there."""
    below = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if rung_of(t, rungs) == rung - 1]
    if not below:
        return []
    ranked = sorted(below, key=lambda t: (-t.value if maximize else t.value, t.number))
    chosen = ranked[:len(below) // eta]
    done = {t.user_attrs.get("promoted_from") for t in study.trials if rung_of(t, rungs) == rung}
    return [t for t in chosen if t.number not in done]


class Planner:
    """When a trial of each rung may start: a full run's seconds are measured (the base config's first run) and
    every rung costs its share of that, or what its runs so far took when that is more (a run's fixed costs, such
    as building the model and writing its reports, do not shrink with its fidelity); a cheap trial starts only if
    one full run still fits after it: the best candidate's own estimate (full_run_s), or the slowest full run so
    far when that is more."""

    def __init__(self, deadline: float | None, reserve_s: float = 0.0, rungs: int = RUNGS, eta: int = ETA):
        self.deadline, self.reserve_s, self.rungs, self.eta = deadline, reserve_s, rungs, eta
        self.full_s: float | None = None
        self.observed_s: dict[int, float] = {}  # rung -> mean seconds of its complete runs
        self.next_full_s: float | None = None  # the full run a cheap trial must leave room for

    def seconds(self, rung: int) -> float:
        return max((self.full_s or 0.0) * cost_share(rung, self.rungs, self.eta), self.observed_s.get(rung, 0.0))

    def fits(self, rung: int, then_full: bool = False, seconds: float | None = None) -> bool:
        """Whether a trial of `rung` (taking `seconds`, else the rung's size) can finish before the deadline,
        keeping `reserve_s` for the held-out runs and, with `then_full` below the top rung, one full run after it."""
        if self.deadline is None:
            return True
        need = (self.seconds(rung) if seconds is None else seconds) + self.reserve_s
        if then_full and rung < self.rungs - 1:
            need += max(self.full_s or 0.0, self.next_full_s or 0.0)
        return time.monotonic() + need < self.deadline


def full_run_s(seconds: float, train_s: float, images_share: float) -> float:
    """A cheap run's estimate of the same config in full: its fixed part (building, validating, reports) as it
    was, its training seconds scaled up by the images it trained on (epochs x rows, as a share of a full run's)."""
    return (seconds - train_s) + train_s / max(images_share, 1e-9)


def shortcut(study: optuna.Study, maximize: bool, rungs: int = RUNGS) -> FrozenTrial | None:
    """The trial to promote straight to full fidelity when the budget allows no more climbing: the best complete
    run of the highest rung below full whose values have not run (or been queued) in full."""
    trials = study.get_trials(deepcopy=False)
    in_full = [t.params for t in trials if is_full(t, rungs)]
    below = [t for t in trials if t.state == TrialState.COMPLETE and not is_full(t, rungs) and t.params not in in_full]
    if not below:
        return None
    return min(below, key=lambda t: (-rung_of(t, rungs), -t.value if maximize else t.value, t.number))


def fidelity_counts(study: optuna.Study, rungs: int = RUNGS, eta: int = ETA) -> str:
    """'28 configurations; runs at each fidelity: 1/27 of a full run 27 (27 complete), ...' for summary.md."""
    runs = [t for t in study.trials if t.state != TrialState.WAITING]
    configs = {tuple(sorted(t.params.items())) for t in runs}
    if not any("rung" in t.user_attrs for t in runs):
        return f"{len(configs)} configurations, every run at full fidelity"
    parts = []
    for rung in range(rungs):
        share = cost_share(rung, rungs, eta)
        at = [t for t in runs if rung_of(t, rungs) == rung]
        done = sum(t.state == TrialState.COMPLETE for t in at)
        label = "full" if share >= 1 else f"1/{round(1 / share)} of a full run"
        parts.append(f"{label} {len(at)} ({done} complete)")
    return (f"{len(configs)} configurations; runs at each fidelity: {', '.join(parts)} (the pick is made among "
            f"full-fidelity runs, the base config's included)")
