"""Self-supervised pretraining on a competition's own pixels (SimCLR / SimSiam) and the kNN / linear probe
that judges the learnt representation.

Script: pretrain.py.
"""
