"""Stacks of uint8 images (N, H, W, C) that hand out copies of the rows asked for, without holding the rest:
a disk cache, a fold's rows of it, or real rows followed by synthetic ones. Indexing works as on an array
(an int, a slice, a list or array of ints, a boolean mask), so the training and prediction loops take either.
"""
from __future__ import annotations

import numpy as np


class Rows:
    """Base: shape and numpy-style indexing over `take(rows)`, which subclasses implement."""

    dtype = np.dtype(np.uint8)
    ndim = 4

    def __init__(self, shape: tuple):
        self.shape = tuple(int(v) for v in shape)

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def take(self, rows: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __getitem__(self, index) -> np.ndarray:
        if isinstance(index, (int, np.integer)):
            return self.take(np.arange(len(self))[[index]])[0]
        return self.take(row_numbers(index, len(self)))

    def __array__(self, dtype=None, copy=None) -> np.ndarray:  # the whole stack: only for small ones
        out = self.take(np.arange(len(self)))
        return out if dtype is None else out.astype(dtype)


def row_numbers(index, n: int) -> np.ndarray:
    """Row numbers (int64) of a slice, a boolean mask or a sequence of ints, negatives counted from the end;
    IndexError for a row outside the stack."""
    if isinstance(index, slice):
        return np.arange(n)[index]
    rows = np.asarray(index)
    if rows.dtype == bool:
        return np.flatnonzero(rows)
    rows = rows.astype(np.int64).reshape(-1)
    rows = np.where(rows < 0, rows + n, rows)
    if len(rows) and (rows.min() < 0 or rows.max() >= n):
        bad = int(rows[(rows < 0) | (rows >= n)][0])
        raise IndexError(f"row {bad} is out of range for {n} images")
    return rows


class RowView(Rows):
    """Some rows of an array or of another Rows, in the given order."""

    def __init__(self, base, rows):
        rows = row_numbers(rows, len(base))
        super().__init__((len(rows), *base.shape[1:]))
        self.base, self.rows = base, rows

    def take(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(self.base[self.rows[rows]])


class ConcatRows(Rows):
    """Several stacks of the same image shape, one after the other (real training rows, then extra rows)."""

    def __init__(self, parts: list):
        shapes = {tuple(p.shape[1:]) for p in parts}
        if len(shapes) != 1:
            raise ValueError(f"parts of different image shapes: {sorted(shapes)}")
        super().__init__((sum(len(p) for p in parts), *shapes.pop()))
        self.parts = parts
        self.starts = np.cumsum([0] + [len(p) for p in parts])

    def take(self, rows: np.ndarray) -> np.ndarray:
        out = np.empty((len(rows), *self.shape[1:]), dtype=np.uint8)
        part_of = np.searchsorted(self.starts, rows, side="right") - 1
        for k, part in enumerate(self.parts):
            here = np.flatnonzero(part_of == k)
            if len(here):
                out[here] = np.asarray(part[rows[here] - self.starts[k]])
        return out
