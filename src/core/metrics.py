"""Validation metrics by name, each a function of (true class indices, class probabilities)."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import f1_score, log_loss, roc_auc_score, roc_curve


def label_accuracy(y: np.ndarray, pred: np.ndarray) -> float:
    """Accuracy of predicted class indices (an index outside the classes, e.g. -1, counts as wrong)."""
    return float((pred == y).mean())


def label_macro_f1(y: np.ndarray, pred: np.ndarray, num_classes: int) -> float:
    """Mean F1 over the classes that occur in the truth or the predictions; a class in neither (a fold without
    it) would otherwise count as an F1 of 0. A prediction outside the classes (-1) is simply wrong."""
    present = np.union1d(y, pred)
    present = present[(present >= 0) & (present < num_classes)]
    return float(f1_score(y, pred, average="macro", labels=present, zero_division=0))


def accuracy(y: np.ndarray, probs: np.ndarray) -> float:
    return label_accuracy(y, probs.argmax(1))


def macro_f1(y: np.ndarray, probs: np.ndarray) -> float:
    return label_macro_f1(y, probs.argmax(1), probs.shape[1])


def logloss(y: np.ndarray, probs: np.ndarray) -> float:
    # float32 softmax rows miss 1.0 by more than scikit-learn tolerates; renormalise in float64.
    probs = np.clip(probs.astype(np.float64), 1e-15, 1.0)
    return float(log_loss(y, probs / probs.sum(1, keepdims=True), labels=np.arange(probs.shape[1])))


def roc_auc(y: np.ndarray, probs: np.ndarray) -> float:
    """Binary ROC-AUC, or one-vs-rest macro ROC-AUC; NaN when a class is absent from `y`."""
    if len(np.unique(y)) < probs.shape[1]:
        return float("nan")
    if probs.shape[1] == 2:
        return float(roc_auc_score(y, probs[:, 1]))
    return float(roc_auc_score(y, probs, multi_class="ovr", average="macro"))


def eer_point(y: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """(equal error rate, score threshold there) of a binary task: where false-accept = false-reject rate."""
    fpr, tpr, thresholds = roc_curve(y, scores)
    fnr = 1 - tpr
    # The two curves cross between ROC points i-1 and i; interpolate linearly there.
    i = int(np.flatnonzero(fnr - fpr <= 0)[0])
    if i == 0 or fnr[i] == fpr[i]:
        return float(fpr[i]), float(min(thresholds[i], 1.0))
    d0, d1 = fnr[i - 1] - fpr[i - 1], fnr[i] - fpr[i]
    t = d0 / (d0 - d1)
    upper = thresholds[i - 1] if np.isfinite(thresholds[i - 1]) else 1.0  # roc_curve's first threshold is inf
    threshold = upper + t * (thresholds[i] - upper)
    return float(fpr[i - 1] + t * (fpr[i] - fpr[i - 1])), float(min(threshold, 1.0))


def eer(y: np.ndarray, probs: np.ndarray) -> float:
    """Equal error rate with class 1 as the positive class; NaN when `y` holds one class only."""
    if len(np.unique(y)) < 2:
        return float("nan")
    return eer_point(y, probs[:, 1])[0]


METRICS = {"accuracy": (accuracy, "max"), "macro_f1": (macro_f1, "max"), "log_loss": (logloss, "min"),
           "roc_auc": (roc_auc, "max"), "eer": (eer, "min")}
BINARY_ONLY = ("eer",)


def metric_names(num_classes: int) -> list[str]:
    return [m for m in METRICS if num_classes == 2 or m not in BINARY_ONLY]


def metric_mode(name: str) -> str:
    """'max' or 'min': the direction in which the metric improves."""
    return METRICS[name][1]


def monitor_direction(monitor: str, monitor_mode: str = "auto") -> str:
    """'max' or 'min' for a config's monitored metric: its `monitor_mode`, or the metric's own with 'auto'."""
    return metric_mode(monitor) if monitor_mode == "auto" else monitor_mode


def compute_metrics(y: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    return {name: METRICS[name][0](y, probs) for name in metric_names(probs.shape[1])}
