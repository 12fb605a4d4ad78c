"""The kit's library: one package per area, named by the word the user sees.

Imports point one way only (tests/test_layout.py checks it):
core <- data <- train <- infer <- {synthetic, pretrain, pseudo, labels, compare}.
The top-level scripts are thin: argument parsing, then one call into their package.
"""
