"""The data contract and everything before training: reading and validating train.csv and images,
decoding, cross-validation folds, augmentation, extra training rows (synthetic, pseudo-labels) with their
leak guard, the embedded demo competition and the EDA report.

Scripts: make_folds.py (folds), prepare_demo.py (demo), eda.py (eda); train.py reads through here.
"""
