import numpy as np
import pytest
import torch

from src.core.errors import UserError
from src.data.augment import trained_flips
from src.infer.tta import VIEWS, candidate_views, greedy_views, parse_views, shift


@pytest.fixture
def batch():
    return torch.arange(2 * 5 * 6 * 3, dtype=torch.uint8).reshape(2, 5, 6, 3)


@pytest.mark.parametrize("name", ["hflip", "vflip"])
def test_a_flip_of_a_flip_is_identity(batch, name):
    view = VIEWS[name]
    assert not torch.equal(view(batch), batch)
    assert torch.equal(view(view(batch)), batch)


def test_hflip_mirrors_columns_and_vflip_rows(batch):
    assert torch.equal(VIEWS["hflip"](batch)[:, :, 0], batch[:, :, -1])
    assert torch.equal(VIEWS["vflip"](batch)[:, 0], batch[:, -1])


@pytest.mark.parametrize("name", ["shift_left", "shift_right", "shift_up", "shift_down"])
def test_shifts_keep_shape_and_dtype(batch, name):
    out = VIEWS[name](batch)
    assert out.shape == batch.shape and out.dtype == batch.dtype


def test_shift_moves_content_and_repeats_the_edge(batch):
    right = shift(batch, 0, 1)
    assert torch.equal(right[:, :, 1:], batch[:, :, :-1])
    assert torch.equal(right[:, :, 0], batch[:, :, 0])
    up = shift(batch, -1, 0)
    assert torch.equal(up[:, :-1], batch[:, 1:]) and torch.equal(up[:, -1], batch[:, -1])
    # left then right restores everything but the column that fell off
    assert torch.equal(shift(shift(batch, 0, -1), 0, 1)[:, :, 1:], batch[:, :, 1:])


def test_default_views_never_flip_unless_the_model_trained_with_flips():
    assert "hflip" not in candidate_views("none") and "vflip" not in candidate_views("none")
    assert "hflip" in candidate_views("h") and "vflip" not in candidate_views("h")
    assert parse_views("auto", "hv")[-2:] == ["hflip", "vflip"]
    assert parse_views("none", "hv") == ["identity"]
    assert parse_views("identity,hflip", "none") == ["identity", "hflip"]
    with pytest.raises(UserError, match="unknown view"):
        parse_views("identity,rot45", "none")


@pytest.mark.parametrize("augment, flips, seen", [("photo", "none", "h"), ("photo", "v", "hv"), ("photo", "h", "h"),
                                                   ("light", "none", "none"), ("heavy", "v", "v")])
def test_views_count_the_mirror_the_photo_preset_always_applies(augment, flips, seen):
    # The photo preset mirrors left-right whatever `flips` says, so its models get the hflip view by default.
    assert trained_flips(augment, flips) == seen
    assert ("hflip" in parse_views("auto", trained_flips(augment, flips))) == ("h" in seen)


def test_greedy_selection_adds_helpful_views_and_skips_harmful_ones():
    y = np.array([0, 1, 0, 1])
    good = np.array([[0.6, 0.4], [0.4, 0.6], [0.6, 0.4], [0.4, 0.6]])
    better = np.array([[0.9, 0.1], [0.1, 0.9], [0.9, 0.1], [0.1, 0.9]])
    harmful = np.array([[0.1, 0.9], [0.9, 0.1], [0.1, 0.9], [0.9, 0.1]])
    assert greedy_views(y, {"identity": good, "shift_left": better, "hflip": harmful}) == ["identity", "shift_left"]
