"""The data contract: read a competition's labels and images, validate them, cache decoded pixels.

A competition folder holds `train.csv` (id column + label column) and `train/` with the images, or an
ImageFolder layout `train/<class>/*.png` with no CSV. Images may be PNG/JPG/BMP/TIFF/WebP, gray or
colour, 8- or 16-bit, any size; they are decoded once into one uint8 array (N, H, W, C).
"""
from __future__ import annotations

import hashlib
import io
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from src.errors import UserError

MAX_IMAGE_PIXELS = 50_000_000  # 50 Mpx: far above any competition image, far below a memory problem
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
INTERPOLATIONS = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC,
                  "lanczos": cv2.INTER_LANCZOS4}


@dataclass
class LabelTable:
    """Labelled images: parallel lists of ids, file paths and class indices into `classes`."""

    ids: list[str]
    paths: list[Path]
    labels: np.ndarray
    classes: list[str]
    source: Path


def sort_classes(names) -> list[str]:
    """Sorted class names; numerically when every name is an integer (so '10' follows '9')."""
    names = sorted(set(names))
    if all(n.lstrip("-").isdecimal() for n in names):
        return sorted(names, key=int)
    return names


def read_csv_checked(path: Path, required: list[str]) -> pd.DataFrame:
    """Read a CSV as strings; one-line errors for a missing, empty or column-less file."""
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise UserError(f"{path}: file is empty; it needs a header row with {required}") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: not a readable CSV ({str(err).splitlines()[0]})") from None
    except OSError as err:
        raise UserError(f"{path}: cannot read ({err.strerror})") from None
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise UserError(f"{path}: missing column(s) {missing}; columns are {list(frame.columns)} "
                        f"(set --id-col/--label-col)")
    if frame.empty:
        raise UserError(f"{path}: has a header but no rows")
    return frame


def _check_ids(frame: pd.DataFrame, id_col: str, path: Path) -> None:
    for i, value in enumerate(frame[id_col]):
        if not value.strip():
            raise UserError(f"{path} line {i + 2}: empty {id_col!r}")
    dup = frame[id_col].duplicated(keep="first")
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise UserError(f"{path} line {i + 2}: duplicate {id_col} {frame[id_col].iloc[i]!r}; ids must be unique")


def _check_labels(values: pd.Series, label_col: str, path: Path) -> None:
    for i, value in enumerate(values):
        if not value.strip() or value.strip().lower() == "nan":
            raise UserError(f"{path} line {i + 2}: empty {label_col!r}; every training row needs a label")
        if value != value.strip():
            raise UserError(f"{path} line {i + 2}: label {value!r} has leading/trailing whitespace; remove it")
    by_folded = {}
    for name in sorted(set(values)):
        other = by_folded.setdefault(name.lower(), name)
        if other != name:
            raise UserError(f"{path}: labels {other!r} and {name!r} differ only in case; make them one class")


def resolve_image_path(image_id: str, root: Path, where: str) -> Path:
    """Map an id (file name, relative path, or name without extension) to a file inside `root`."""
    candidate = Path(image_id)
    if candidate.is_absolute() or ".." in candidate.parts:
        raise UserError(f"{where}: id {image_id!r} points outside {root}; use paths relative to it")
    options = [root / candidate]
    if candidate.suffix.lower() not in IMAGE_EXTS:
        options = [root / f"{image_id}{ext}" for ext in IMAGE_EXTS] + options
    for path in options:
        if path.is_file():
            if not path.resolve().is_relative_to(root.resolve()):
                raise UserError(f"{where}: {path} links outside {root}; copy the file in instead")
            return path
    raise UserError(f"{where}: image for id {image_id!r} not found in {root}")


def read_train_table(data_dir: str | Path, train_csv: str, image_dir: str, id_col: str, label_col: str) -> LabelTable:
    """Load and validate train.csv (or an ImageFolder layout) into a LabelTable."""
    data_dir = Path(data_dir)
    csv_path, root = data_dir / train_csv, data_dir / image_dir
    if not csv_path.exists() and root.is_dir() and any(p.is_dir() for p in root.iterdir()):
        return imagefolder_table(root)
    if not root.is_dir():
        raise UserError(f"{root}: image folder not found (set --data-dir / --image-dir)")
    frame = read_csv_checked(csv_path, [id_col, label_col])
    _check_ids(frame, id_col, csv_path)
    _check_labels(frame[label_col], label_col, csv_path)
    paths = [resolve_image_path(v, root, f"{csv_path} line {i + 2}") for i, v in enumerate(frame[id_col])]
    classes = sort_classes(frame[label_col])
    index = {c: i for i, c in enumerate(classes)}
    labels = np.array([index[v] for v in frame[label_col]], dtype=np.int64)
    return LabelTable(list(frame[id_col]), paths, labels, classes, csv_path)


def imagefolder_table(root: Path) -> LabelTable:
    """Turn train/<class>/*.png into a LabelTable; ids are the paths relative to `root`."""
    # Skip hidden and tool folders (.ipynb_checkpoints, __MACOSX): they are not classes.
    classes = sort_classes(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "__")))
    ids, paths, labels = [], [], []
    for k, name in enumerate(classes):
        files = sorted(p for p in (root / name).iterdir()
                       if p.suffix.lower() in IMAGE_EXTS and not p.name.startswith("."))
        if not files:
            raise UserError(f"{root / name}: class folder holds no images ({', '.join(IMAGE_EXTS)})")
        for path in files:
            ids.append(f"{name}/{path.name}")
            paths.append(path)
            labels.append(k)
    return LabelTable(ids, paths, np.array(labels, dtype=np.int64), classes, root)


def decode_image(path: Path) -> np.ndarray:
    """Decode one file to uint8 (H, W, C) with C = 1 (gray) or 3 (RGB); alpha is dropped."""
    if not Path(path).is_file():
        raise UserError(f"{path}: image file not found")
    try:
        raw = np.fromfile(path, dtype=np.uint8)
    except OSError as err:
        raise UserError(f"{path}: cannot read ({err.strerror})") from None
    if raw.size == 0:
        raise UserError(f"{path}: empty file; replace it or remove its row")
    check_image_bytes(Path(path), raw.tobytes())
    image = cv2.imdecode(raw, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise UserError(f"{path}: cannot decode image (corrupt or unsupported); replace it or remove its row")
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise UserError(f"{path}: pixel type {image.dtype} is not supported; save it as 8- or 16-bit")
    if image.ndim == 2:
        return image[:, :, None]
    if image.shape[2] == 1:
        return image
    code = cv2.COLOR_BGRA2RGB if image.shape[2] == 4 else cv2.COLOR_BGR2RGB
    return cv2.cvtColor(image, code)


def check_image_bytes(path: Path, raw: bytes) -> None:
    """Refuse truncated PNG/JPG files (decoders may return half an image) and decompression bombs
    (a small file that decodes to gigabytes), reading only the header for the size."""
    suffix = path.suffix.lower()
    if suffix == ".png" and b"IEND" not in raw[-64:]:
        raise UserError(f"{path}: truncated PNG (no end chunk); replace it or remove its row")
    if suffix in (".jpg", ".jpeg") and b"\xff\xd9" not in raw[-1024:]:
        raise UserError(f"{path}: truncated JPEG (no end marker); replace it or remove its row")
    try:
        with Image.open(io.BytesIO(raw)) as header:
            width, height = header.size
    except Image.DecompressionBombError:
        width, height = MAX_IMAGE_PIXELS, 2  # Pillow already judged it a bomb
    except Exception:  # a format Pillow cannot read: OpenCV decides below
        return
    if width * height > MAX_IMAGE_PIXELS:
        raise UserError(f"{path}: {width}x{height} pixels is over the {MAX_IMAGE_PIXELS:,} limit "
                        f"(decompression-bomb guard); downscale it first")


def is_gray(image: np.ndarray) -> bool:
    if image.shape[2] == 1:
        return True
    return bool((image[:, :, 0] == image[:, :, 1]).all() and (image[:, :, 1] == image[:, :, 2]).all())


def decode_all(paths: list[Path], quiet: bool = True) -> list[np.ndarray]:
    """Decode every file once, with a progress bar."""
    return [decode_image(p) for p in tqdm(paths, desc="decode", unit="img", disable=quiet, leave=False)]


def pixel_hash(image: np.ndarray) -> str:
    """Content hash of decoded pixels, so a PNG and a lossless copy in another format match."""
    return hashlib.sha1(str(image.shape).encode() + image.tobytes()).hexdigest()


@dataclass
class ImageSpec:
    """How images are turned into model input: the cached array's height, width and channels."""

    height_px: int
    width_px: int
    in_chans: int


def infer_spec(images: list[np.ndarray], image_size_px: int) -> ImageSpec:
    """Pick the cache shape: a requested square size, else the common size (median if mixed)."""
    in_chans = 1 if all(is_gray(im) for im in images) else 3
    if image_size_px:
        return ImageSpec(image_size_px, image_size_px, in_chans)
    shapes = Counter(im.shape[:2] for im in images)
    if len(shapes) == 1:
        height, width = next(iter(shapes))
        return ImageSpec(height, width, in_chans)
    side = int(np.median([max(im.shape[:2]) for im in images]))
    return ImageSpec(side, side, in_chans)


def to_array(images: list[np.ndarray], spec: ImageSpec, interp: str) -> np.ndarray:
    """Resize and convert channels into one contiguous uint8 array (N, H, W, C)."""
    out = np.empty((len(images), spec.height_px, spec.width_px, spec.in_chans), dtype=np.uint8)
    flag = INTERPOLATIONS[interp]
    for i, image in enumerate(images):
        if image.shape[:2] != (spec.height_px, spec.width_px):
            image = cv2.resize(image, (spec.width_px, spec.height_px), interpolation=flag)
            image = image[:, :, None] if image.ndim == 2 else image
        if spec.in_chans == 1 and image.shape[2] == 3:
            image = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[:, :, None]
        elif spec.in_chans == 3 and image.shape[2] == 1:
            image = np.repeat(image, 3, axis=2)
        out[i] = image
    return out


def channel_stats(images: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of a uint8 cache, in [0, 1] units, for input normalisation."""
    total = np.zeros(images.shape[-1])
    squares = np.zeros(images.shape[-1])
    for start in range(0, len(images), 256):  # in chunks: a float copy of a large cache would not fit
        chunk = images[start:start + 256].reshape(-1, images.shape[-1]).astype(np.float64) / 255.0
        total += chunk.sum(axis=0)
        squares += (chunk ** 2).sum(axis=0)
    count = images.size / images.shape[-1]
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean ** 2, 0.0))
    return mean.tolist(), np.maximum(std, 1e-3).tolist()


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def data_fingerprint(table: LabelTable, folds_path: Path, images: np.ndarray) -> dict:
    """Hashes that tell whether a resumed, summarised or predicted run sees the data it was trained on."""
    return {"train_csv_sha256": file_sha256(table.source) if table.source.is_file() else None,
            "folds_csv_sha256": file_sha256(folds_path),
            "image_cache_sha1": hashlib.sha1(np.ascontiguousarray(images).data).hexdigest()}
