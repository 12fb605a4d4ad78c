"""Image files to pixels: decode one file safely, pick the cache shape, resize into one uint8 array, and its
per-channel statistics."""
from __future__ import annotations

import hashlib
import io
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm

from src.core.errors import UserError

MAX_IMAGE_PIXELS = 50_000_000  # 50 Mpx: far above any competition image, far below a memory problem



IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")



INTERPOLATIONS = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC,
                  "lanczos": cv2.INTER_LANCZOS4}



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



def image_files(folder: Path, skip: list[Path]) -> list[Path]:
    """Every image file under `folder` (sub-folders included, hidden ones and those under `skip` left out)."""
    skip = [p.resolve() for p in skip]
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts)
                  and not any(p.resolve().is_relative_to(other) for other in skip))


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



@dataclass
class ImageFacts:
    """What the cache shape and the duplicate search need from a decoded image, without keeping its pixels."""

    height_px: int
    width_px: int
    gray: bool
    pixel_hash: str


def facts_of(image: np.ndarray) -> ImageFacts:
    return ImageFacts(image.shape[0], image.shape[1], is_gray(image), pixel_hash(image))


# With image_size_px 0 the cache never exceeds this side: the small nets trained from scratch here gain little
# from more pixels on small data, and at 500 px (hymenoptera's median photo) they train at 3 img/s on 2 CPU cores
# against 270 img/s at 64 px. The held-out photo set's 128 px is the largest size measured to pay off.
AUTO_MAX_SIDE_PX = 128


def data_shape(facts: list[ImageFacts]) -> tuple[int, int]:
    """The data's own (height, width): the common size, else a square at the median longer side."""
    shapes = Counter((f.height_px, f.width_px) for f in facts)
    if len(shapes) == 1:
        return next(iter(shapes))
    side = int(np.median([max(f.height_px, f.width_px) for f in facts]))
    return side, side


def spec_from_facts(facts: list[ImageFacts], image_size_px: int) -> ImageSpec:
    """Pick the cache shape: a requested square size, else the data's shape (data_shape) scaled down, aspect kept,
    so that no side exceeds AUTO_MAX_SIDE_PX; gray only when every image is."""
    in_chans = 1 if all(f.gray for f in facts) else 3
    if image_size_px:
        return ImageSpec(image_size_px, image_size_px, in_chans)
    height, width = data_shape(facts)
    scale = min(1.0, AUTO_MAX_SIDE_PX / max(height, width))
    return ImageSpec(max(1, round(height * scale)), max(1, round(width * scale)), in_chans)


def infer_spec(images: list[np.ndarray], image_size_px: int) -> ImageSpec:
    """spec_from_facts for images already decoded in memory."""
    return spec_from_facts([ImageFacts(im.shape[0], im.shape[1], is_gray(im), "") for im in images], image_size_px)


def fit_image(image: np.ndarray, spec: ImageSpec, interp: str) -> np.ndarray:
    """One decoded image resized and converted to the cache's (H, W, C)."""
    if image.shape[:2] != (spec.height_px, spec.width_px):
        image = cv2.resize(image, (spec.width_px, spec.height_px), interpolation=INTERPOLATIONS[interp])
        image = image[:, :, None] if image.ndim == 2 else image
    if spec.in_chans == 1 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[:, :, None]
    if spec.in_chans == 3 and image.shape[2] == 1:
        return np.repeat(image, 3, axis=2)
    return image


def to_array(images: list[np.ndarray], spec: ImageSpec, interp: str) -> np.ndarray:
    """Resize and convert channels into one contiguous uint8 array (N, H, W, C)."""
    out = np.empty((len(images), spec.height_px, spec.width_px, spec.in_chans), dtype=np.uint8)
    for i, image in enumerate(images):
        out[i] = fit_image(image, spec, interp)
    return out


def array_sha1(images) -> str:
    """sha1 of the uint8 cache's bytes in row order (a disk cache knows its own, computed when built)."""
    known = getattr(images, "sha1", None)
    return known or hashlib.sha1(np.ascontiguousarray(images).data).hexdigest()


def channel_stats(images: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of a uint8 cache, in [0, 1] units, for input normalisation."""
    total = np.zeros(images.shape[-1])
    squares = np.zeros(images.shape[-1])
    # In chunks: a float copy of a large cache would not fit. 256 rows, fewer for large images (~64 MB each).
    rows = max(1, min(256, 8_000_000 // int(np.prod(images.shape[1:]))))
    for start in range(0, len(images), rows):
        chunk = images[start:start + rows].reshape(-1, images.shape[-1]).astype(np.float64) / 255.0
        total += chunk.sum(axis=0)
        squares += (chunk ** 2).sum(axis=0)
    count = images.size / images.shape[-1]
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean ** 2, 0.0))
    return mean.tolist(), np.maximum(std, 1e-3).tolist()


def write_image(path: Path, image: np.ndarray) -> None:
    """Write a uint8 gray (H, W) / (H, W, 1) or RGB (H, W, 3) image (the format follows the suffix); a
    UserError when it cannot be written (disk full, folder not writable)."""
    pixels = image if image.ndim == 2 or image.shape[-1] == 1 else image[:, :, ::-1]  # OpenCV writes BGR
    if not cv2.imwrite(str(path), pixels):
        raise UserError(f"{path}: could not write the image (disk full or not writable?)")
