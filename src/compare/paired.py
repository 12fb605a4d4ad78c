"""Paired comparison of two arms: the mean difference over matched (fold, seed) pairs, its 95 % interval,
and a one-word verdict.

Pairing removes what the arms share (the fold's validation rows, the seed's initial weights and batch
order), which is most of the run-to-run spread. The intervals treat the pairs as independent; folds of
one data set share training rows, so they are somewhat optimistic (Nadeau & Bengio, 2003).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

CI_METHODS = ("t", "bootstrap")


@dataclass
class PairedResult:
    n_pairs: int
    mean: float
    low: float
    high: float
    method: str
    spread: float = float("nan")  # largest minus smallest difference: 0 when every pair moved alike


def paired_ci(diffs: np.ndarray, method: str = "t", level: float = 0.95, n_boot: int = 10000,
              seed: int = 0) -> PairedResult:
    """Mean of paired differences with a two-sided `level` interval: Student t, or a percentile bootstrap
    of the mean (seeded). Fewer than two pairs give an unbounded interval."""
    diffs = np.asarray(diffs, dtype=np.float64)
    if method not in CI_METHODS:
        raise ValueError(f"unknown CI method {method!r}; choose from {CI_METHODS}")
    n = len(diffs)
    mean = float(diffs.mean()) if n else float("nan")
    spread = float(np.ptp(diffs)) if n else float("nan")
    if n < 2:
        return PairedResult(n, mean, -np.inf, np.inf, method, spread)
    alpha = 1 - level
    if method == "t":
        half = stats.t.ppf(1 - alpha / 2, n - 1) * diffs.std(ddof=1) / np.sqrt(n)
        return PairedResult(n, mean, mean - half, mean + half, method, spread)
    rng = np.random.default_rng(seed)
    means = diffs[rng.integers(0, n, size=(n_boot, n))].mean(axis=1)
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return PairedResult(n, mean, float(low), float(high), method, spread)


MIN_PAIRS = 3


def verdict(result: PairedResult, higher_is_better: bool = True) -> str:
    """'helps' when the whole interval lies on the better side of 0, 'hurts' on the worse side, else
    'no evidence'; fewer than MIN_PAIRS pairs are 'too few pairs', and equal differences (a zero-width
    interval, e.g. every fold exactly one image worse) are 'no evidence (zero variance)', never a verdict."""
    if result.n_pairs < MIN_PAIRS:
        return "too few pairs"
    # Every pair moved by the same amount (up to float rounding, e.g. 35/40 - 34/40 against 36/40 - 35/40): the
    # interval's width is rounding noise, not evidence.
    if result.spread <= 1e-9 * max(1.0, abs(result.mean)):
        return "no evidence (zero variance)"
    low, high = (result.low, result.high) if higher_is_better else (-result.high, -result.low)
    if low > 0:
        return "helps"
    if high < 0:
        return "hurts"
    return "no evidence"
