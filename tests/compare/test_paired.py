"""Paired intervals and verdicts on constructed differences with known answers."""
import numpy as np
import pytest

from src.compare.paired import paired_ci, verdict


def test_t_interval_matches_the_textbook_value():
    # mean 3, sd sqrt(2.5), n 5: half-width t(0.975, 4) * sd / sqrt(5) = 2.776445 * 0.707107 = 1.963243
    result = paired_ci(np.array([1.0, 2.0, 3.0, 4.0, 5.0]), "t")
    assert result.n_pairs == 5 and result.mean == pytest.approx(3.0)
    assert result.low == pytest.approx(3 - 1.963243, abs=1e-5) and result.high == pytest.approx(3 + 1.963243, abs=1e-5)
    assert verdict(result) == "helps"


def test_bootstrap_is_seeded_and_close_to_the_normal_interval():
    rng = np.random.default_rng(0)
    diffs = rng.normal(0.5, 1.0, size=200)
    a, b = paired_ci(diffs, "bootstrap", seed=3), paired_ci(diffs, "bootstrap", seed=3)
    assert (a.low, a.high) == (b.low, b.high)
    t = paired_ci(diffs, "t")
    assert a.low == pytest.approx(t.low, abs=0.03) and a.high == pytest.approx(t.high, abs=0.03)
    assert a.low < diffs.mean() < a.high


@pytest.mark.parametrize("diffs, expected", [([-3, -2, -4, -3], "hurts"), ([-1, 1, -2, 2], "no evidence"),
                                             ([0.01] * 5, "no evidence (zero variance)"),
                                             ([0.0] * 5, "no evidence (zero variance)")])
def test_verdicts(diffs, expected):
    assert verdict(paired_ci(np.array(diffs, dtype=float))) == expected


def test_lower_is_better_flips_the_verdict():
    result = paired_ci(np.array([-3.0, -2.0, -4.0]))
    assert verdict(result, higher_is_better=False) == "helps"


def test_one_pair_gives_no_interval_and_no_verdict():
    result = paired_ci(np.array([5.0]))
    assert result.low == -np.inf and result.high == np.inf and verdict(result) == "too few pairs"


def test_two_equal_differences_are_too_few_pairs_not_a_verdict():
    result = paired_ci(np.array([-0.00125, -0.00125]))
    assert result.low == result.high == -0.00125 and verdict(result) == "too few pairs"
    with pytest.raises(ValueError):
        paired_ci(np.array([1.0, 2.0]), "jackknife")


def test_equal_differences_give_no_verdict_with_either_interval():
    # Every fold exactly one image better out of 40: equal differences, computed as accuracies are.
    arm, baseline = np.array([36, 35, 34]) / 40, np.array([35, 34, 33]) / 40
    for method in ("t", "bootstrap"):
        result = paired_ci(arm - baseline, method)
        assert verdict(result) == "no evidence (zero variance)"
        assert verdict(result, higher_is_better=False) == "no evidence (zero variance)"
