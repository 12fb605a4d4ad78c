"""Decode once, read rows ever after: the disk-backed image cache.

Every image of a data set is decoded once, at the training size, into one uint8 file (N, H, W, C) under a
cache folder, keyed by the image files (path, size, modification and change times, inode), the size,
interpolation, channels and OpenCV version. Folds, torchrun ranks, Slurm array tasks, infer.py,
pseudo_label.py and ablate.py's jobs read rows from it instead of decoding again. Rows are read with pread,
not a memory map, so a process holds only the batches it asks for: the page cache keeps the file warm
without counting in the process's memory.

The meta file is written last: a cache without one (interrupted), or whose meta or size no longer matches,
is rebuilt, never trusted; nor is one of the right size whose bytes changed (a sample of rows is checked against
hashes recorded at build time, src/data/cache_check.py). A file lock lets one process build while the others
(ranks, array tasks) wait and then reuse it; a complete cache in a read-only folder is reused without the lock. Decoding runs in parallel
over the cores. The folder only ever grows: delete it (or files in it) to reclaim space; it is rebuilt.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing
import os
import socket
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np
from filelock import FileLock, Timeout
from tqdm import tqdm

from src.core.atomic import write_bytes, write_text
from src.core.errors import UserError
from src.data.cache_check import ROW_DIGEST_BYTES, first_changed_row, hash_rows
from src.data.images import (
    AUTO_MAX_SIDE_PX,
    ImageFacts,
    ImageSpec,
    data_shape,
    decode_image,
    facts_of,
    fit_image,
    spec_from_facts,
)
from src.data.rows import Rows

CACHE_FORMAT = 1
PARALLEL_FROM_IMAGES = 256  # fewer images decode sooner in this process than a pool of workers starts
IMAGES_PER_TASK = 64


def default_cache_dir(data_dir: str | Path) -> Path:
    """<data folder's parent>/.image_cache when that folder is writable (beside the data, like data/ itself
    in this repo), else ~/.cache/imgkit (a read-only input folder, as on Kaggle). A folder without any write
    permission bit counts as read-only even for root, who could write there anyway."""
    parent = Path(data_dir).resolve().parent
    writable = os.access(parent, os.W_OK) and parent.stat().st_mode & 0o222
    return parent / ".image_cache" if writable else Path.home() / ".cache" / "imgkit"


def files_key(paths: list[Path]) -> str:
    """What identifies the image files, in row order: each one's absolute path, size, modification time,
    change time and inode (a file replaced by one of the same size and copied-back mtime still differs in the
    last two, which no user tool sets)."""
    digest = hashlib.sha256()
    for path in paths:
        try:
            st = Path(path).stat()
        except OSError:
            raise UserError(f"{path}: image file not found") from None
        digest.update(f"{Path(path).resolve()}\t{st.st_size}\t{st.st_mtime_ns}\t{st.st_ctime_ns}\t{st.st_ino}\n"
                      .encode())
    return digest.hexdigest()[:24]


def cache_key(files: str, spec: ImageSpec, interp: str) -> str:
    """The cache file's name: the files, the shape, the resize kernel and the OpenCV that applies it."""
    text = f"{CACHE_FORMAT}\n{files}\n{asdict(spec)}\n{interp}\n{cv2.__version__}"
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def worker_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _run(task, chunks: list, desc: str, quiet: bool) -> list:
    """task(chunk) for every chunk, in parallel when it pays, results in chunk order, with a progress bar.
    A worker's error (a UserError naming the image) or Ctrl-C cancels the chunks not yet started."""
    total = sum(len(c[0]) for c in chunks)
    bar = tqdm(total=total, desc=desc, unit="img", disable=quiet, leave=False)
    results = [None] * len(chunks)
    if worker_count() == 1 or total < PARALLEL_FROM_IMAGES:
        for i, chunk in enumerate(chunks):
            results[i] = task(chunk)
            bar.update(len(chunk[0]))
        bar.close()
        return results
    # spawn: the workers import only this module, never a forked copy of torch's threads
    pool = ProcessPoolExecutor(worker_count(), mp_context=multiprocessing.get_context("spawn"))
    try:
        futures = {pool.submit(task, chunk): i for i, chunk in enumerate(chunks)}
        for future in as_completed(futures):
            results[futures[future]] = future.result()
            bar.update(len(chunks[futures[future]][0]))
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)  # the running chunks finish; no new one starts
        raise
    pool.shutdown()
    bar.close()
    return results


def _scan_chunk(chunk: tuple) -> list[ImageFacts]:
    (paths,) = chunk
    return [facts_of(decode_image(Path(p))) for p in paths]


def _read_scan(path: Path) -> list[ImageFacts] | None:
    try:
        return [ImageFacts(**f) for f in json.loads(path.read_text())] if path.is_file() else None
    except (OSError, ValueError, TypeError, KeyError):
        return None  # unreadable: scan again


def scan_images(paths: list[Path], cache_dir: Path, quiet: bool) -> list[ImageFacts]:
    """Size, grey-ness and pixel hash of every image (decoded in parallel, nothing kept), remembered in the
    cache folder for the same files."""
    path = Path(cache_dir) / f"{files_key(paths)}.scan.json"
    facts = _read_scan(path)
    if facts is not None:
        return facts
    with cache_lock(path.with_name(path.name + ".lock"), cache_dir):
        facts = _read_scan(path)  # another process may have scanned while this one waited
        if facts is None:
            chunks = [(paths[i:i + IMAGES_PER_TASK],) for i in range(0, len(paths), IMAGES_PER_TASK)]
            facts = [f for part in _run(_scan_chunk, chunks, "scan", quiet) for f in part]
            write_text(path, json.dumps([asdict(f) for f in facts]))
    return facts


@contextlib.contextmanager
def cache_lock(lock_path: Path, cache_dir: Path):
    """Hold the lock that lets one process write a cache entry; say so when another process holds it."""
    try:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(lock_path))
        try:
            lock.acquire(timeout=0)
        except Timeout:  # one line even when quiet: a silent wait looks like a hang
            print(f"image cache: waiting for another process building {lock_path.stem} in {cache_dir}", flush=True)
            lock.acquire()
    except OSError as err:
        raise UserError(f"{cache_dir}: cannot write the image cache there ({err.strerror or err}); train.py "
                        f"--cache-dir picks another folder (it is recorded for infer.py and the other scripts)") \
            from None
    try:
        yield
    finally:
        lock.release()


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


def human_bytes(size: float) -> str:
    """1,536 -> '1.5 KiB' (binary units: 9.8 GB of decoded images print as 9.2 GiB)."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024
    return f"{size:.1f} GiB"


class CachedImages(Rows):
    """A built cache: rows read with pread into fresh arrays, so only what is asked for is in memory."""

    MAX_READ_BYTES = 1 << 30  # Linux returns at most ~2 GiB per read call

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
        per_read = max(1, self.MAX_READ_BYTES // row_bytes)
        fd, start = self._file(), 0
        while start < len(rows):  # one read per run of consecutive rows
            end = start + 1
            while end < len(rows) and end - start < per_read and rows[end] == rows[end - 1] + 1:
                end += 1
            want = (end - start) * row_bytes
            got = os.preadv(fd, [memoryview(out[start:end]).cast("B")], int(rows[start]) * row_bytes)
            if got != want:
                raise UserError(f"{self.path}: the image cache is shorter than its meta says (read {got} of {want} "
                                f"bytes); delete it to have it rebuilt")
            start = end
        return out

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_fd": None, "_pid": None}

    def __del__(self):
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)


def _complete(meta_path: Path, data: Path, key: str, size: int) -> dict | None:
    """The meta of a finished cache entry that still matches, else None (interrupted, stale or cut short)."""
    try:
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else None
    except (OSError, ValueError):
        return None
    if not meta or meta.get("key") != key or not data.is_file() or data.stat().st_size != size:
        return None
    return meta


def cached_images(paths: list[Path], cache_dir: Path, interp: str, quiet: bool, image_size_px: int = 0,
                  spec: ImageSpec | None = None) -> CachedImages:
    """The images decoded at `spec` (a trained model's), or at the shape train.py picks from `image_size_px`
    (see spec_from_facts), from the cache: built now, or reused. Prints one line saying which, and one more when
    large images were scaled down by default."""
    cache_dir = Path(cache_dir)
    if spec is None:
        facts = scan_images(paths, cache_dir, quiet)
        spec = spec_from_facts(facts, image_size_px)
        height, width = data_shape(facts)
        if (spec.height_px, spec.width_px) != (height, width) and not image_size_px:
            print(f"image size: the data's {height}x{width} px scaled to {spec.height_px}x{spec.width_px} (without "
                  f"--image-size-px the longer side is at most {AUTO_MAX_SIDE_PX} px; pass it to choose)")
    key = cache_key(files_key(paths), spec, interp)
    data, meta_path = cache_dir / f"{key}.u8", cache_dir / f"{key}.json"
    digests = data.with_suffix(".rows")
    row_bytes = spec.height_px * spec.width_px * spec.in_chans
    size = len(paths) * row_bytes
    shape = f"{len(paths)} images {spec.height_px}x{spec.width_px}x{spec.in_chans}"
    meta = _complete(meta_path, data, key, size)  # a finished cache needs no lock (it may be read-only)
    trusted = meta is not None and verified(meta, data, digests, row_bytes, len(paths))
    if not trusted:
        with cache_lock(cache_dir / f"{key}.lock", cache_dir):
            # Built (or rebuilt after the same damage) by another process while this one waited: checked again.
            meta = _complete(meta_path, data, key, size)
            if meta is None or not verified(meta, data, digests, row_bytes, len(paths), say=False):
                meta_path.unlink(missing_ok=True)  # a stale, partial or changed cache is rebuilt, never trusted
                build(paths, spec, interp, data, quiet)
                sha1, rows = hash_rows(data, row_bytes)
                write_bytes(digests, rows)
                meta = {"format": CACHE_FORMAT, "key": key, "n": len(paths), "spec": asdict(spec),
                        "interp": interp, "opencv": cv2.__version__, "sha1": sha1}
                write_text(meta_path, json.dumps(meta, indent=1))
                print(f"image cache: built {data} ({shape}, {human_bytes(size)})")
                return CachedImages(data, spec, len(paths), meta["sha1"])
    print(f"image cache: reused {data} ({shape}, {human_bytes(size)})")
    return CachedImages(data, spec, len(paths), meta["sha1"])


def verified(meta: dict, data: Path, digests: Path, row_bytes: int, n: int, say: bool = True) -> bool:
    """Whether a complete cache still holds the bytes it was built with: a sample of rows against the row hashes
    recorded at build time (src/data/cache_check.py). A cache from before those hashes is hashed whole once against
    its meta's sha1, and its row hashes are written then (a read-only folder cannot keep them: such a cache is
    hashed whole at every reuse, so rebuild it once where it can be written)."""
    if digests.is_file() and digests.stat().st_size == n * ROW_DIGEST_BYTES:
        bad = first_changed_row(data, digests.read_bytes(), row_bytes, n)
        if bad is None:
            return True
        what = f"row {bad} no longer matches the hash recorded when it was built"
    else:
        sha1, rows = hash_rows(data, row_bytes)
        if sha1 == meta.get("sha1"):
            with contextlib.suppress(OSError, UserError):
                write_bytes(digests, rows)
            return True
        what = "its bytes no longer match the sha1 recorded when it was built"
    if say:
        print(f"image cache: {data} changed since it was built ({what}); it is rebuilt")
    return False


def build(paths: list[Path], spec: ImageSpec, interp: str, target: Path, quiet: bool) -> None:
    """Decode, resize and write every row into a temporary file, then rename it into place. Called under the
    entry's lock, so a leftover temporary file of it (a killed build) is garbage: removed first."""
    for stale in target.parent.glob(f"{target.name}.tmp*"):
        stale.unlink(missing_ok=True)
    tmp = target.with_name(f"{target.name}.tmp-{socket.gethostname()}-{os.getpid()}")  # unique on shared disks
    try:
        with open(tmp, "wb") as handle:
            handle.truncate(len(paths) * spec.height_px * spec.width_px * spec.in_chans)
        chunks = [(paths[i:i + IMAGES_PER_TASK], i, asdict(spec), interp, str(tmp))
                  for i in range(0, len(paths), IMAGES_PER_TASK)]
        _run(_write_chunk, chunks, "decode", quiet)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except OSError as err:
        raise UserError(f"{target}: could not write the image cache ({err.strerror or err}); free disk space or "
                        f"pick another folder (train.py --cache-dir)") from None
    finally:
        tmp.unlink(missing_ok=True)
