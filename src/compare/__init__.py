"""Comparing experiments: the run table, paired statistics with verdicts, and the ablation runner's plan
and report.

Scripts: runs.py (run_table), ablate.py (plan, report).
"""
