import numpy as np
import pytest

from src.core.metrics import logloss
from src.infer.ensemble import blend, fit_weights, nested_blend


def noisy_probs(y, noise, seed):
    rng = np.random.default_rng(seed)
    logits = np.eye(3)[y] * 2 + rng.normal(0, noise, (len(y), 3))
    e = np.exp(logits)
    return e / e.sum(1, keepdims=True)


def test_fitted_weights_are_non_negative_sum_to_one_and_favour_the_better_model():
    y = np.tile(np.arange(3), 40)
    good, bad = noisy_probs(y, 0.5, 0), noisy_probs(y, 3.0, 1)
    w = fit_weights(y, [good, bad])
    assert w.sum() == pytest.approx(1) and (w >= 0).all() and w[0] > 0.7
    assert np.allclose(blend([good, bad], np.array([1.0, 0.0])), good)


def test_nested_blend_never_uses_a_folds_own_labels():
    y = np.tile(np.arange(3), 40)
    fold_of = np.arange(len(y)) % 4
    probs = [noisy_probs(y, 0.5, 0), noisy_probs(y, 3.0, 1)]
    out, weights = nested_blend(y, fold_of, probs)
    assert len(weights) == 4
    # Scramble fold 0's labels: fold 0's blended rows must not change (weights come from folds 1-3)...
    scrambled = y.copy()
    scrambled[fold_of == 0] = (scrambled[fold_of == 0] + 1) % 3
    out2, _ = nested_blend(scrambled, fold_of, probs)
    assert np.allclose(out2[fold_of == 0], out[fold_of == 0])
    # ...while the other folds' rows, whose weights were fitted with fold 0's labels, do change.
    assert not np.allclose(out2[fold_of == 1], out[fold_of == 1])


def test_a_choice_made_inside_the_nested_blend_sees_only_the_fitting_rows():
    y = np.tile(np.arange(3), 40)
    fold_of = np.arange(len(y)) % 4
    views = {"good": noisy_probs(y, 0.5, 0), "bad": noisy_probs(y, 3.0, 1)}
    seen = []

    def best_view(labels):
        def choose(rows):  # like infer.py's greedy TTA: pick on the fitting rows' labels
            seen.append(rows.copy())
            return views[min(views, key=lambda v: logloss(labels[rows], views[v][rows]))]
        return choose

    out, _ = nested_blend(y, fold_of, [best_view(y), views["bad"]])
    assert len(seen) == 4 and all(not rows[fold_of == k].any() for k, rows in enumerate(seen))
    scrambled = y.copy()
    scrambled[fold_of == 0] = (scrambled[fold_of == 0] + 1) % 3
    out2, _ = nested_blend(scrambled, fold_of, [best_view(scrambled), views["bad"]])
    assert np.allclose(out2[fold_of == 0], out[fold_of == 0])
