import math

import pytest

from src.train.config import TrainConfig
from src.train.schedule import EarlyStopping, PlateauScale, Schedule, build_schedule, lr_factor_at


def sched(kind, total=100, warmup=10, min_ratio=0.01, every=30, gamma=0.1):
    return Schedule(kind, 10, total, warmup, min_ratio, every, gamma)


def test_warmup_rises_linearly_to_peak():
    s = sched("cosine")
    values = [lr_factor_at(i, s) for i in range(10)]
    assert values[0] == pytest.approx(0.1)
    assert values[-1] == pytest.approx(1.0)
    assert all(b > a for a, b in zip(values, values[1:]))


def test_cosine_decays_from_peak_to_floor():
    s = sched("cosine")
    assert lr_factor_at(10, s) == pytest.approx(1.0)
    assert lr_factor_at(99, s) == pytest.approx(0.01)
    tail = [lr_factor_at(i, s) for i in range(10, 100)]
    assert all(b <= a for a, b in zip(tail, tail[1:]))


def test_onecycle_starts_low_peaks_once_and_ends_at_floor():
    s = sched("onecycle", warmup=0)
    values = [lr_factor_at(i, s) for i in range(100)]
    assert values[0] == pytest.approx(1 / 25)
    assert max(values) == pytest.approx(1.0, abs=1e-3)
    assert values.index(max(values)) == 30
    assert values[-1] == pytest.approx(0.01)


def test_step_schedule_multiplies_by_gamma_every_interval():
    s = sched("step")
    assert lr_factor_at(10, s) == 1.0
    assert lr_factor_at(39, s) == 1.0
    assert lr_factor_at(40, s) == pytest.approx(0.1)
    assert lr_factor_at(70, s) == pytest.approx(0.01)


def test_schedule_is_built_in_optimizer_steps():
    cfg = TrainConfig(epochs=10, lr_warmup_epochs=1.5, scheduler="cosine")
    s = build_schedule(cfg, steps_per_epoch=20)
    assert (s.total_steps, s.warmup_steps) == (200, 30)


def test_plateau_scale_drops_after_patience():
    p = PlateauScale(patience_epochs=1, factor=0.5, mode="max")
    for value in (0.5, 0.6, 0.6):
        p.update(value)
    assert p.scale == 1.0
    p.update(0.59)
    assert p.scale == 0.5
    restored = PlateauScale(1, 0.5, "max")
    restored.load_state_dict(p.state_dict())
    assert restored.state_dict() == p.state_dict()


def test_early_stopping_counts_patience_and_respects_min_delta():
    stop = EarlyStopping(mode="max", patience_epochs=2, min_delta=0.01)
    assert stop.update(0.90, 0)
    assert not stop.update(0.905, 1)  # below min_delta: not an improvement
    assert not stop.should_stop
    assert not stop.update(0.80, 2)
    assert stop.should_stop
    assert (stop.best, stop.best_epoch) == (0.90, 0)


def test_early_stopping_min_mode_and_disabled_patience():
    stop = EarlyStopping(mode="min", patience_epochs=0)
    assert stop.update(1.0, 0) and stop.update(0.5, 1)
    for epoch in range(2, 20):
        stop.update(0.9, epoch)
    assert not stop.should_stop and stop.best == 0.5 and not math.isnan(stop.best)


def test_nan_is_never_an_improvement():
    stop = EarlyStopping(mode="max", patience_epochs=3)
    assert not stop.update(float("nan"), 0)
    assert stop.update(0.5, 1) and stop.best == 0.5
    assert not stop.update(float("nan"), 2)
