"""Label quality and labelling work: probable label errors from OOF predictions, kNN auto-labels with a
human review queue (Label Studio in and out), reading reviews back, and the active-learning simulation.

Scripts: label_errors.py (issues), auto_label.py (knn), import_reviews.py (review),
active_learning.py (active).
"""
