"""Blending experiments: plain mean, or non-negative weights fitted on OOF log-loss, scored honestly.

Weights fitted on all OOF rows and scored on the same rows look better than they are. The nested
score fits on the other folds' OOF rows and scores each fold's rows with weights that never saw them.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import minimize

from src.core.metrics import logloss


def blend(probs: list[np.ndarray], weights: np.ndarray) -> np.ndarray:
    return np.tensordot(weights, np.stack(probs), axes=1)


def fit_weights(y: np.ndarray, probs: list[np.ndarray]) -> np.ndarray:
    """Non-negative weights summing to 1 that minimise log-loss (softmax parametrisation, L-BFGS)."""
    if len(probs) == 1:
        return np.ones(1)

    def loss(theta: np.ndarray) -> float:
        w = np.exp(theta - theta.max())
        return logloss(y, blend(probs, w / w.sum()))

    theta = minimize(loss, np.zeros(len(probs)), method="L-BFGS-B").x
    w = np.exp(theta - theta.max())
    return w / w.sum()


def nested_fit(fold_of: np.ndarray, fit, apply) -> tuple[np.ndarray, list]:
    """Held-out predictions where each fold's rows use parameters fitted on the other folds only.

    fit(train_rows) -> params; apply(params, held_rows) -> predictions for those rows."""
    out, params = None, []
    for k in np.unique(fold_of):
        held = fold_of == k
        fitted = fit(~held)
        part = apply(fitted, held)
        out = np.zeros((len(fold_of),) + part.shape[1:], dtype=part.dtype) if out is None else out
        out[held] = part
        params.append(fitted)
    return out, params


def nested_blend(y: np.ndarray, fold_of: np.ndarray, probs_for: list) -> tuple[np.ndarray, list[np.ndarray]]:
    """OOF blend where each fold's rows use weights fitted on the other folds only; also returns those weights.

    probs_for holds, per experiment, its OOF probabilities, or a function of the fitting rows that returns
    them with any choice of its own (infer.py's greedy TTA views) made on those rows only: then that choice
    is nested too, and the score stays honest."""
    def fit(rows: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        probs = [p(rows) if callable(p) else p for p in probs_for]
        return probs, fit_weights(y[rows], [p[rows] for p in probs])

    out, params = nested_fit(fold_of, fit=fit, apply=lambda fitted, rows: blend([p[rows] for p in fitted[0]],
                                                                                fitted[1]))
    return out, [weights for _, weights in params]
