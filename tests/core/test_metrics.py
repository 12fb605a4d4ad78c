import numpy as np
import pytest

from src.core.metrics import accuracy, compute_metrics, eer, logloss, macro_f1, roc_auc


def binary_probs(scores):
    scores = np.asarray(scores, dtype=float)
    return np.stack([1 - scores, scores], axis=1)


def test_eer_on_a_known_case():
    # Positives score 0.6..0.9, negatives 0.1..0.4 and one negative at 0.7: at threshold 0.65 one of
    # four negatives is accepted (FAR 0.25) and one of four positives rejected (FRR 0.25).
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    scores = [0.1, 0.2, 0.3, 0.7, 0.6, 0.75, 0.8, 0.9]
    assert eer(y, binary_probs(scores)) == pytest.approx(0.25)


def test_eer_is_zero_for_perfect_separation_and_half_for_chance():
    y = np.array([0, 0, 1, 1])
    assert eer(y, binary_probs([0.1, 0.2, 0.8, 0.9])) == pytest.approx(0.0)
    assert eer(y, binary_probs([0.5, 0.5, 0.5, 0.5])) == pytest.approx(0.5)


def test_accuracy_f1_and_logloss_match_hand_computation():
    y = np.array([0, 1, 2, 2])
    probs = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.6, 0.3], [0.1, 0.1, 0.8]])
    assert accuracy(y, probs) == 0.75
    # per-class F1: class0 1.0, class1 2/3 (1 tp, 1 fp), class2 2/3 (1 tp, 1 fn)
    assert macro_f1(y, probs) == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    expected = -np.mean(np.log([0.8, 0.7, 0.3, 0.8]))
    assert logloss(y, probs) == pytest.approx(expected)


def test_roc_auc_is_nan_when_a_class_is_missing():
    y = np.array([0, 0, 1])
    probs = np.array([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.1, 0.8, 0.1]])
    assert np.isnan(roc_auc(y, probs))


def test_binary_tasks_report_eer_and_multiclass_do_not():
    y = np.array([0, 1, 0, 1])
    assert "eer" in compute_metrics(y, binary_probs([0.2, 0.9, 0.4, 0.6]))
    assert "eer" not in compute_metrics(np.array([0, 1, 2]), np.eye(3))


def test_macro_f1_ignores_a_class_absent_from_truth_and_predictions():
    y = np.array([0, 0, 1, 1])  # class 2 exists (e.g. a fold without it) but nobody has or predicts it
    probs = np.array([[0.8, 0.1, 0.1], [0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.7, 0.1]])
    assert macro_f1(y, probs) == 1.0
    from src.core.metrics import label_macro_f1
    assert label_macro_f1(y, np.array([0, 0, 1, 2]), 3) == pytest.approx((1 + 2 / 3 + 0) / 3)  # predicted: counts
    assert label_macro_f1(y, np.array([0, 0, 1, -1]), 3) == pytest.approx((1 + 2 / 3) / 2)  # -1: unknown label
