"""Hyper-parameter search: an Optuna study over a search-space file whose trials train folds through the normal
trainer (src.train.cv), with pruning, a wall-clock budget and honest reports.

Script: tune.py (space: the search-space file; study: the study, its objective and budget; report: the trials
table, plots, summary and the tuned config train.py reads).
"""
