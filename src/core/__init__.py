"""What every area shares: the typed-config machinery, the one user-error type and the script wrapper
(`run_main`), atomic writes, seeds and provenance, metrics by name, the run directory (checkpoints, OOF
files) and Markdown tables.

Used by every script; imports nothing else from src.
"""
