"""From trained folds to a leaderboard file: the Predictor (every fold's weights x TTA views), TTA views
and their greedy choice, blending, the submission format and local scoring.

Scripts: infer.py (pipeline), score.py (submission).
"""
