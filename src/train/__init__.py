"""Training one or more folds: the typed TrainConfig, models (timm + smallcnn), losses, LR schedule,
the epoch engine, torchrun data-parallelism, the fold trainer (checkpoints, exact resume, OOF) and the
cross-validation driver with its OOF summary and diagnostics.

Script: train.py.
"""
