"""Active-learning simulation: uncertainty asks for the least certain images, random does not, every pool
image is asked for at most once, and the script runs end to end on the small demo."""
import numpy as np
import pandas as pd
import pytest

import src.labels.active as active
from src.train.config import TrainConfig

from helpers import run_script


def fake_pool(n_pool=40):
    zeros = np.zeros((n_pool, 4, 4, 1), np.uint8)
    return active.Pool(zeros[:4], np.arange(4) % 2, zeros, np.arange(n_pool) % 2, zeros[:6], np.arange(6) % 2,
                       ["a", "b"], None, {})


def test_uncertainty_asks_for_the_least_certain_and_never_twice(monkeypatch):
    asked = []

    def fake_train(cfg, pool, chosen, seed, budget):
        asked.append(chosen.copy())
        # Pool row i is certain in proportion to i: the first rows are the most uncertain.
        p = 0.5 + 0.5 * np.arange(len(pool.pool_labels)) / len(pool.pool_labels)
        return len(chosen) / 100, np.stack([p, 1 - p], axis=1)

    monkeypatch.setattr(active, "train_and_score", fake_train)
    curve = active.simulate(TrainConfig(), fake_pool(), "uncertainty", batch=5, rounds=3, rank_by="entropy",
                            seed=0, train_images=10, quiet=True)
    assert curve["labels"].tolist() == [4, 9, 14, 19]
    assert asked[1].tolist() == [0, 1, 2, 3, 4] and asked[3].tolist() == list(range(15))
    asked.clear()
    active.simulate(TrainConfig(), fake_pool(), "random", batch=5, rounds=3, rank_by="entropy", seed=0,
                    train_images=10, quiet=True)
    assert len(set(asked[3].tolist())) == 15 and asked[3].tolist() != list(range(15))


def test_labels_to_reach():
    curve = pd.DataFrame({"labels": [10, 20, 30], "test_accuracy": [0.9, 0.97, 0.96]})
    assert active.labels_to_reach(curve, 0.97) == 20 and np.isnan(active.labels_to_reach(curve, 0.99))


@pytest.mark.slow
def test_active_learning_script_on_the_small_demo(demo, tmp_path):
    proc = run_script("active_learning.py", "--data-dir", str(demo["data"]), "--batch", "10", "--rounds", "1",
                      "--train-images", "300", "--out-dir", str(tmp_path), "--name", "t", "--quiet")
    assert proc.returncode == 0, proc.stderr
    curves = pd.read_csv(tmp_path / "active_learning_t.csv")
    assert sorted(curves["labels"].unique()) == [200, 210] and set(curves["strategy"]) == {"uncertainty", "random"}
    assert (tmp_path / "active_learning_t.png").is_file() and "labels to reach 97%" in proc.stdout
