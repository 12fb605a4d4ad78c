"""Whether a built cache file still holds the bytes it was built with, checked cheaply at every reuse.

The build records a short hash of every row (`<key>.rows`, 8 bytes a row) in the same pass that hashes the whole
file. A reuse then re-hashes a random sample of rows (and the first and last) instead of the whole file: a file of
the right size whose bytes were changed (a copy gone wrong, another process writing into it, a bad disk) is caught
with high probability when much of it changed, and the sample costs a few reads however large the cache is.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

ROW_DIGEST_BYTES = 8
SAMPLE_ROWS = 64
CHUNK_BYTES = 1 << 24


def row_digest(row: bytes) -> bytes:
    return hashlib.blake2b(row, digest_size=ROW_DIGEST_BYTES).digest()


def hash_rows(path: Path, row_bytes: int) -> tuple[str, bytes]:
    """(sha1 of the whole file, the concatenated row digests), in one read of the file."""
    whole, rows = hashlib.sha1(), bytearray()
    per_chunk = max(1, CHUNK_BYTES // row_bytes) * row_bytes
    with open(path, "rb") as handle:
        while block := handle.read(per_chunk):
            whole.update(block)
            rows += b"".join(row_digest(block[i:i + row_bytes]) for i in range(0, len(block), row_bytes))
    return whole.hexdigest(), bytes(rows)


def sample_rows(n: int, rng: np.random.Generator) -> np.ndarray:
    """The rows a reuse checks: the first, the last and up to SAMPLE_ROWS others at random."""
    picked = rng.choice(n, size=min(n, SAMPLE_ROWS), replace=False) if n else np.array([], dtype=np.int64)
    return np.unique(np.concatenate([[0, n - 1], picked]).astype(np.int64)) if n else picked


def first_changed_row(path: Path, digests: bytes, row_bytes: int, n: int,
                      rng: np.random.Generator | None = None) -> int | None:
    """The first sampled row whose bytes no longer match the recorded digest, or None when all match. The sample
    is drawn from its own generator, never the global RNG a training run seeds."""
    rng = rng or np.random.default_rng()
    fd = os.open(path, os.O_RDONLY)
    try:
        for row in sample_rows(n, rng):
            recorded = digests[row * ROW_DIGEST_BYTES:(row + 1) * ROW_DIGEST_BYTES]
            if row_digest(os.pread(fd, row_bytes, int(row) * row_bytes)) != recorded:
                return int(row)
    finally:
        os.close(fd)
    return None
