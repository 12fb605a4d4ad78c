"""Fast unit tests of infer.py's helpers (the end-to-end runs are in test_infer.py)."""
from types import SimpleNamespace

import numpy as np
import pytest

from src.core.errors import UserError
from src.infer.pipeline import chosen_mean, with_identity
from src.infer.predictor import parse_threshold


def test_threshold_parsing():
    assert parse_threshold("") is None and parse_threshold("eer") == "eer" and parse_threshold("0.3") == 0.3
    for bad in ("abc", "1.5", "-0.1", "nan"):
        with pytest.raises(UserError, match="between 0 and 1"):
            parse_threshold(bad)


def test_identity_is_predicted_once_and_chosen_views_are_averaged_by_name():
    assert with_identity(["shift_up", "identity"]) == ["identity", "shift_up"]
    assert with_identity(["hflip"]) == ["identity", "hflip"]
    p = SimpleNamespace(views=["hflip", "vflip"])  # identity computed but not chosen
    views = np.stack([np.full((1, 2), v, dtype=float) for v in (0.0, 1.0, 3.0)])[None]  # (folds, views, N, C)
    assert chosen_mean(p, views).tolist() == [[2.0, 2.0]]
