"""Pseudo-labelling: which confident predictions become training rows, and the rounds of label -> retrain.

Script: pseudo_label.py.
"""
