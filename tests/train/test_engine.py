"""The engine's input path: uint8 NHWC batches become normalised float NCHW at the size the model is fed."""
import numpy as np
import torch

from src.train.engine import Runtime, norm_tensors, to_input

CPU = Runtime(torch.device("cpu"), None, False)


def test_input_is_normalised_and_resized_to_the_model_side_both_ways():
    batch = torch.from_numpy(np.full((2, 32, 32, 3), 255, dtype=np.uint8))
    x = to_input(batch, norm_tensors([0.5, 0.5, 0.5], [0.25, 0.25, 0.25], CPU), CPU)
    assert x.shape == (2, 3, 32, 32) and torch.allclose(x, torch.full_like(x, 2.0))  # (1 - 0.5) / 0.25
    up = to_input(batch, norm_tensors([0.0] * 3, [1.0] * 3, CPU, size_px=96), CPU)
    down = to_input(batch, norm_tensors([0.0] * 3, [1.0] * 3, CPU, size_px=8), CPU)
    assert up.shape == (2, 3, 96, 96) and down.shape == (2, 3, 8, 8)
    assert torch.allclose(up, torch.ones_like(up)) and torch.allclose(down, torch.ones_like(down))
    stripes = torch.zeros(1, 32, 32, 1, dtype=torch.uint8)
    stripes[:, :, ::2] = 255  # one-pixel stripes: a shrink without antialiasing would keep only one colour
    shrunk = to_input(stripes, norm_tensors([0.0], [1.0], CPU, size_px=8), CPU)
    assert torch.allclose(shrunk, torch.full_like(shrunk, 0.5), atol=0.05)
