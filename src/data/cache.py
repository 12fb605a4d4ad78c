"""Decode once, read rows ever after: the disk-backed image cache.

Every image of a data set is decoded once, at the training size, into one uint8 file (N, H, W, C) under a
cache folder, keyed by the image files (path, size, modification time), the size, interpolation and
channels. Folds, torchrun ranks, Slurm array tasks, infer.py, pseudo_label.py and ablate.py's jobs read rows
from it instead of decoding again. Rows are read with pread, not a memory map, so a process holds only the
batches it asks for: the page cache keeps the file warm without counting in the process's memory.

The meta file is written last: a cache without one (interrupted), or whose meta or size no longer matches,
is rebuilt, never trusted. A file lock lets one process build while the others (ranks, array tasks) wait and
then reuse it. Decoding runs in parallel over the cores.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict
from pathlib import Path

import numpy as np
from filelock import FileLock
from tqdm import tqdm

from src.core.atomic import write_text
from src.core.errors import UserError
from src.data.images import ImageFacts, ImageSpec, decode_image, facts_of, fit_image, spec_from_facts
from src.data.rows import Rows

CACHE_FORMAT = 1
PARALLEL_FROM = 256  # fewer images decode sooner in this process than a pool of workers starts
CHUNK = 64  # images per task handed to a worker


def default_cache_dir(data_dir: str | Path) -> Path:
    """<data folder's parent>/.image_cache when that folder is writable (beside the data, like data/ itself
    in this repo), else ~/.cache/imgkit (a read-only input folder, as on Kaggle). A folder without any write
    permission bit counts as read-only even for root, who could write there anyway."""
    parent = Path(data_dir).resolve().parent
    writable = os.access(parent, os.W_OK) and parent.stat().st_mode & 0o222
    return parent / ".image_cache" if writable else Path.home() / ".cache" / "imgkit"


def files_key(paths: list[Path]) -> str:
    """What identifies the image files: each one's absolute path, size and modification time, in row order."""
    digest = hashlib.sha256()
    for path in paths:
        try:
            stat = Path(path).stat()
        except OSError:
            raise UserError(f"{path}: image file not found") from None
        digest.update(f"{Path(path).resolve()}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:24]


def workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _run(task, chunks: list, desc: str, quiet: bool) -> list:
    """task(chunk) for every chunk, in parallel when it pays, results in chunk order, with a progress bar."""
    total = sum(len(c[0]) for c in chunks)
    bar = tqdm(total=total, desc=desc, unit="img", disable=quiet, leave=False)
    results = [None] * len(chunks)
    if workers() == 1 or total < PARALLEL_FROM:
        for i, chunk in enumerate(chunks):
            results[i] = task(chunk)
            bar.update(len(chunk[0]))
    else:  # spawn: the workers import only this module, never a forked copy of torch's threads
        with ProcessPoolExecutor(workers(), mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(task, chunk): i for i, chunk in enumerate(chunks)}
            for future in as_completed(futures):
                results[futures[future]] = future.result()  # a worker's UserError surfaces here, one line
                bar.update(len(chunks[futures[future]][0]))
    bar.close()
    return results


def _scan_chunk(chunk: tuple) -> list[ImageFacts]:
    (paths,) = chunk
    return [facts_of(decode_image(Path(p))) for p in paths]


def scan_images(paths: list[Path], cache_dir: Path, quiet: bool) -> list[ImageFacts]:
    """Size, grey-ness and pixel hash of every image (decoded in parallel, nothing kept), remembered in the
    cache folder for the same files."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"{files_key(paths)}.scan.json"
    with FileLock(str(path) + ".lock"):
        if path.is_file():
            try:
                return [ImageFacts(**f) for f in json.loads(path.read_text())]
            except (ValueError, TypeError, KeyError):
                pass  # unreadable: scan again
        chunks = [(paths[i:i + CHUNK],) for i in range(0, len(paths), CHUNK)]
        facts = [f for part in _run(_scan_chunk, chunks, "scan", quiet) for f in part]
        write_text(path, json.dumps([asdict(f) for f in facts]))
    return facts


def _write_chunk(chunk: tuple) -> int:
    paths, first_row, spec, interp, target = chunk
    spec = ImageSpec(**spec)
    row_bytes = spec.height_px * spec.width_px * spec.in_chans
    fd = os.open(target, os.O_WRONLY)
    try:
        for i, path in enumerate(paths):
            image = np.ascontiguousarray(fit_image(decode_image(Path(path)), spec, interp))
            os.pwrite(fd, image.tobytes(), (first_row + i) * row_bytes)
    finally:
        os.close(fd)
    return len(paths)


def file_sha1(path: Path) -> str:
    """sha1 of a file read in chunks: the same digest as of the whole array's bytes in memory."""
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 24):
            digest.update(block)
    return digest.hexdigest()


def human_bytes(size: float) -> str:
    """1,536 -> '1.5 KiB' (binary units: 9.8 GB of decoded images print as 9.2 GiB)."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024
    return f"{size:.1f} GiB"


class CachedImages(Rows):
    """A built cache: rows read with pread into fresh arrays, so only what is asked for is in memory."""

    def __init__(self, path: Path, spec: ImageSpec, n: int, sha1: str):
        super().__init__((n, spec.height_px, spec.width_px, spec.in_chans))
        self.path, self.spec, self.sha1 = path, spec, sha1
        self._fd, self._pid = None, None

    def _file(self) -> int:
        if self._pid != os.getpid():  # each process (a forked loader worker) opens its own descriptor
            self._fd, self._pid = os.open(self.path, os.O_RDONLY), os.getpid()
        return self._fd

    def take(self, rows: np.ndarray) -> np.ndarray:
        out = np.empty((len(rows), *self.shape[1:]), dtype=np.uint8)
        row_bytes = int(np.prod(self.shape[1:]))
        fd, start = self._file(), 0
        while start < len(rows):  # one read per run of consecutive rows
            end = start + 1
            while end < len(rows) and rows[end] == rows[end - 1] + 1:
                end += 1
            os.preadv(fd, [memoryview(out[start:end]).cast("B")], int(rows[start]) * row_bytes)
            start = end
        return out

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_fd": None, "_pid": None}

    def __del__(self):
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)


def cached_images(paths: list[Path], cache_dir: Path, interp: str, quiet: bool, image_size_px: int = 0,
                  spec: ImageSpec | None = None) -> CachedImages:
    """The images decoded at `spec` (a trained model's), or at the shape train.py picks from `image_size_px`
    (see spec_from_facts), from the cache: built now, or reused. Prints one line saying which."""
    cache_dir = Path(cache_dir)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"{cache_dir}: cannot create the image cache folder ({err.strerror}); set --cache-dir") \
            from None
    if spec is None:
        spec = spec_from_facts(scan_images(paths, cache_dir, quiet), image_size_px)
    files = files_key(paths)
    key = hashlib.sha256(f"{CACHE_FORMAT}\n{files}\n{asdict(spec)}\n{interp}".encode()).hexdigest()[:24]
    data, meta_path = cache_dir / f"{key}.u8", cache_dir / f"{key}.json"
    row_bytes = spec.height_px * spec.width_px * spec.in_chans
    with FileLock(str(cache_dir / f"{key}.lock")):
        meta = read_meta(meta_path)
        if meta and meta.get("key") == key and data.is_file() and data.stat().st_size == len(paths) * row_bytes:
            print(f"image cache: reused {data} ({len(paths)} images {spec.height_px}x{spec.width_px}x"
                  f"{spec.in_chans}, {human_bytes(data.stat().st_size)})")
            return CachedImages(data, spec, len(paths), meta["sha1"])
        meta_path.unlink(missing_ok=True)  # a stale or partial cache is rebuilt, never trusted
        build(paths, spec, interp, data, quiet)
        sha1 = file_sha1(data)
        write_text(meta_path, json.dumps({"format": CACHE_FORMAT, "key": key, "files": files, "n": len(paths),
                                          "spec": asdict(spec), "interp": interp, "sha1": sha1}, indent=1))
    print(f"image cache: built {data} ({len(paths)} images {spec.height_px}x{spec.width_px}x{spec.in_chans}, "
          f"{human_bytes(data.stat().st_size)})")
    return CachedImages(data, spec, len(paths), sha1)


def read_meta(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError):
        return None


def build(paths: list[Path], spec: ImageSpec, interp: str, target: Path, quiet: bool) -> None:
    """Decode, resize and write every row into a temporary file, then rename it into place."""
    tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            handle.truncate(len(paths) * spec.height_px * spec.width_px * spec.in_chans)
        chunks = [(paths[i:i + CHUNK], i, asdict(spec), interp, str(tmp)) for i in range(0, len(paths), CHUNK)]
        _run(_write_chunk, chunks, "decode", quiet)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except OSError as err:
        raise UserError(f"{target}: could not write the image cache ({err.strerror or err}); free disk space or "
                        f"set --cache-dir") from None
    finally:
        tmp.unlink(missing_ok=True)
