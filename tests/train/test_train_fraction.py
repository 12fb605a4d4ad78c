"""train_fraction: a per-class, seeded subsample of a fold's training rows (tune.py's cheap fidelities use it)."""
import numpy as np
import pandas as pd
import pytest

from src.core.config import config_from_dict
from src.core.errors import UserError
from src.train.config import TrainConfig
from src.train.cv import subsample

from helpers import train


def test_subsample_keeps_each_class_share_in_order_and_depends_only_on_the_seed():
    labels = np.array([0] * 60 + [1] * 30 + [2] * 2)
    rows = np.arange(len(labels))
    kept = subsample(rows, labels, 1 / 3, seed=7)
    assert [int((labels[kept] == c).sum()) for c in range(3)] == [20, 10, 1]  # a rare class keeps one row
    assert (np.diff(kept) > 0).all() and np.array_equal(kept, subsample(rows, labels, 1 / 3, seed=7))
    assert not np.array_equal(kept, subsample(rows, labels, 1 / 3, seed=8))
    assert subsample(rows, labels, 1.0, seed=7) is rows


def test_a_fraction_outside_zero_to_one_is_refused():
    for value in (0.0, 1.5):
        with pytest.raises(UserError, match="train_fraction must be in"):
            config_from_dict({"train_fraction": value}, TrainConfig).validate()


@pytest.mark.slow
def test_train_trains_on_the_subsample_and_validates_on_every_row(demo):
    runs = demo["root"] / "fraction"
    proc = train(demo, "half", "--fold", "0", "--train-fraction", "0.5", runs=runs)
    assert proc.returncode == 0, proc.stderr
    assert "fold 0: 80 of 160 training rows (train_fraction 0.5, per class)" in proc.stdout
    assert len(pd.read_csv(runs / "half" / "fold0" / "train_rows.csv")) == 80
    assert len(pd.read_csv(runs / "half" / "fold0" / "oof.csv")) == 40
