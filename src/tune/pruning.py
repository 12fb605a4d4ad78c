"""What a running trial reports between epochs, and the pruners that compare trials on it like with like.

A trial trains its tuned folds one after the other. At every tenth of a fold's schedule it reports the running mean
of the objective: the final values of the folds it has finished and the current value of the fold it is in. Two
trials at the same step are then at the same fold and the same share of its schedule, and their numbers estimate the
same thing (the mean final metric over the folds so far). Optuna's MedianPruner compares a trial's *best* value over
all its steps with the others' value at this step, which on a second fold pits one fold's peak against another's
running value; the pruner here compares this step with this step.
"""
from __future__ import annotations

import math

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

# Trials of different lengths are compared at the same share of their schedule, not the same epoch: at epoch 3 a
# 30-epoch one-cycle run is still near its peak LR and trails a 10-epoch run that is nearly done. Each fold's
# schedule reports at PROGRESS_STEPS points (the first epoch to reach each tenth).
PROGRESS_STEPS = 10
WARMUP_STEPS = 3  # no pruning in the first 30 % of the first fold: early epochs rank configs poorly (warmup, EMA lag)
STARTUP_TRIALS = 3  # complete trials needed at a step before it prunes there
PRUNERS = ("median", "hyperband", "none")


def progress_step(fold_position: int, epoch: int, epochs: int) -> tuple[int, bool]:
    """(step, is_first_epoch_at_it): the schedule share reached after `epoch` (0-based) of `epochs`, in tenths,
    counted on from the folds before; only the first epoch reaching a new tenth reports."""
    tenth = PROGRESS_STEPS * (epoch + 1) // epochs
    first = tenth > PROGRESS_STEPS * epoch // epochs
    return fold_position * PROGRESS_STEPS + tenth, first


class RunningMean:
    """A trial's objective so far: the mean of its finished folds' final values and the current fold's value."""

    def __init__(self):
        self.finals: list[float] = []
        self.fold, self.last = None, math.nan

    def update(self, fold: int, value: float) -> float:
        if self.fold is not None and fold != self.fold:  # the previous fold ended with its last value
            self.finals.append(self.last)
        self.fold, self.last = fold, value
        return float(np.mean([*self.finals, value]))


class StepMedianPruner(optuna.pruners.BasePruner):
    """Prune a trial whose value at this step is worse than the median of the complete trials' values at the same
    step (once STARTUP_TRIALS of them reported there, and past the first fold's warm-up steps)."""

    def __init__(self, n_startup_trials: int = STARTUP_TRIALS, n_warmup_steps: int = WARMUP_STEPS):
        self.n_startup_trials, self.n_warmup_steps = n_startup_trials, n_warmup_steps

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step is None or step < self.n_warmup_steps:
            return False
        value = trial.intermediate_values[step]
        if math.isnan(value):
            return True
        others = [t.intermediate_values[step] for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                  if step in t.intermediate_values and math.isfinite(t.intermediate_values[step])]
        if len(others) < self.n_startup_trials:
            return False
        median = float(np.median(others))
        return value < median if study.direction == optuna.study.StudyDirection.MAXIMIZE else value > median


def build_pruner(name: str, max_steps: int) -> optuna.pruners.BasePruner:
    """median: stop a trial whose running value is worse than the complete trials' median at the same step;
    hyperband: successive halving over the same steps, in brackets."""
    if name == "median":
        return StepMedianPruner()
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=min(WARMUP_STEPS, max_steps), max_resource=max_steps)
    return optuna.pruners.NopPruner()
