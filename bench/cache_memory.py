"""Peak memory and time of train.py on a generated photo set, through the disk-backed image cache: the first
run decodes into the cache, the second reuses it. The baseline, measured in the same run, is the kit's way
before the cache (every image decoded into one array in memory, in every process) on as many images as fit
(--baseline-images); it grows linearly with the set.

    python bench/cache_memory.py --images 50000 --size-px 256   # the issue's 9.8 GB set (~15 min on 2 cores)
    python bench/cache_memory.py --quick                         # 200 images at 64 px: checks the bench runs

The model is fed at --input-size-px (64 by default, downscaled on the device), so a CPU epoch over 40,000
images takes minutes; what is measured is the data path. Peak RSS is the script process's own high-water
mark (getrusage); its decoding workers are separate processes that hold one image at a time.
"""
import json
import multiprocessing
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cv2
import numpy as np
import pandas as pd

from src.core.atomic import write_text
from src.core.cli import build_parser, run_main
from src.core.repro import cpu_name
from src.core.tables import markdown_table
from src.data.cache import human_bytes

REPO = Path(__file__).resolve().parent.parent
CLASSES = ("disc", "square", "bar", "ring", "cross")
# The kit's path before the cache, in a process of its own: decode every image into a list, then into one
# array (what train.py did in every process), and report the peak RSS.
IN_MEMORY = ("import json, resource, sys\n"
             "from pathlib import Path\n"
             "sys.path.insert(0, sys.argv[1])\n"
             "from src.data.images import decode_all, infer_spec, to_array\n"
             "paths = sorted(Path(sys.argv[2]).glob('*.jpg'))[:int(sys.argv[3])]\n"
             "decoded = decode_all(paths)\n"
             "images = to_array(decoded, infer_spec(decoded, int(sys.argv[4])), 'cubic')\n"
             "print(json.dumps({'self_kib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))\n")
# Runs a script and reports its own peak RSS (KiB on Linux) as JSON on the last line. (A child's figure would
# not help: a forked child counts the parent's pages until it execs.)
MEASURE = ("import json, resource, runpy, sys\n"
           "sys.argv = sys.argv[1:]\n"
           "code = 0\n"
           "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
           "except SystemExit as stop:\n    code = stop.code or 0\n"
           "print(json.dumps({'self_kib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))\n"
           "sys.exit(code)\n")


def draw(index: int, size_px: int) -> tuple[np.ndarray, str]:
    """A photo-like RGB image: a coloured shape of one of five kinds on a textured background."""
    rng = np.random.default_rng(index)
    label = CLASSES[index % len(CLASSES)]
    image = (rng.random((size_px, size_px, 3)) * 60 + rng.integers(40, 160, 3)).astype(np.uint8)
    image = cv2.GaussianBlur(image, (5, 5), 0)
    colour = tuple(int(c) for c in rng.integers(120, 256, 3))
    c, r = rng.integers(size_px // 3, 2 * size_px // 3, 2), int(rng.integers(size_px // 8, size_px // 4))
    if label == "disc":
        cv2.circle(image, tuple(map(int, c)), r, colour, -1)
    elif label == "square":
        cv2.rectangle(image, (int(c[0] - r), int(c[1] - r)), (int(c[0] + r), int(c[1] + r)), colour, -1)
    elif label == "bar":
        cv2.rectangle(image, (int(c[0] - 2 * r), int(c[1] - r // 3)), (int(c[0] + 2 * r), int(c[1] + r // 3)),
                      colour, -1)
    elif label == "ring":
        cv2.circle(image, tuple(map(int, c)), r, colour, max(2, r // 4))
    else:
        cv2.line(image, (int(c[0] - r), int(c[1] - r)), (int(c[0] + r), int(c[1] + r)), colour, max(2, r // 4))
        cv2.line(image, (int(c[0] - r), int(c[1] + r)), (int(c[0] + r), int(c[1] - r)), colour, max(2, r // 4))
    return image, label


def write_chunk(args: tuple) -> list[tuple[str, str]]:
    folder, start, stop, size_px = args
    rows = []
    for i in range(start, stop):
        image, label = draw(i, size_px)
        name = f"img{i:06d}.jpg"
        cv2.imwrite(str(Path(folder) / name), image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
        rows.append((name, label))
    return rows


def generate(data: Path, n: int, size_px: int) -> None:
    """train.csv + train/*.jpg, in parallel; kept (with a marker) so a second bench run starts at once."""
    marker = data / "generated.json"
    if marker.is_file() and json.loads(marker.read_text()) == {"images": n, "size_px": size_px}:
        return
    (data / "train").mkdir(parents=True, exist_ok=True)
    chunks = [(str(data / "train"), s, min(s + 500, n), size_px) for s in range(0, n, 500)]
    with multiprocessing.get_context("spawn").Pool() as pool:
        rows = [r for part in pool.map(write_chunk, chunks) for r in part]
    pd.DataFrame(rows, columns=["image", "label"]).to_csv(data / "train.csv", index=False)
    marker.write_text(json.dumps({"images": n, "size_px": size_px}))


def measured(script: str, *args: str) -> dict:
    """Run one of our scripts in its own process: wall time and its peak RSS."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", MEASURE, str(REPO / script), *args], cwd=REPO,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"{script} failed:\n{proc.stderr[-2000:]}")
    usage = json.loads(proc.stdout.strip().splitlines()[-1])
    cache_line = next((line for line in proc.stdout.splitlines() if line.startswith("image cache:")), "")
    return {"wall time": f"{seconds:.1f} s", "peak RSS": human_bytes(usage["self_kib"] * 1024),
            "cache": cache_line.split(" ")[2] if cache_line else ""}


def main() -> None:
    parser = build_parser(__doc__)
    parser.add_argument("--images", type=int, default=50000, help="generated RGB images (5 classes)")
    parser.add_argument("--size-px", type=int, default=256, help="their side, and the cache's")
    parser.add_argument("--input-size-px", type=int, default=64, help="the side the model is fed at")
    parser.add_argument("--model", default="resnet18", help="timm model name")
    parser.add_argument("--work-dir", default="/tmp/kit-cache-bench", help="data, cache and runs go here")
    parser.add_argument("--baseline-images", type=int, default=5000,
                        help="images the in-memory baseline decodes (all of them would not fit)")
    parser.add_argument("--quick", action="store_true", help="200 images at 64 px: checks the bench runs")
    parser.add_argument("--out", default="bench/cache_memory.md", help="Markdown table written here")
    args = parser.parse_args()
    if args.quick:
        args.images, args.size_px, args.input_size_px = 200, 64, 32
    work = Path(args.work_dir)
    data, cache_dir = work / "data", work / "cache"
    shutil.rmtree(cache_dir, ignore_errors=True)  # the first runs below must decode, not find an old cache
    start = time.perf_counter()
    generate(data, args.images, args.size_px)
    print(f"data: {args.images} images in {time.perf_counter() - start:.0f} s", flush=True)
    baseline = min(args.baseline_images, args.images)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", IN_MEMORY, str(REPO), str(data / "train"), str(baseline),
                           str(args.size_px)], capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"the in-memory baseline failed:\n{proc.stderr[-2000:]}")
    rows = [{"step": f"baseline: the first {baseline} images decoded into one array in memory (the kit's way "
                     f"before the cache; train.py held this in every process)",
             "wall time": f"{time.perf_counter() - start:.1f} s",
             "peak RSS": human_bytes(json.loads(proc.stdout.strip().splitlines()[-1])["self_kib"] * 1024),
             "cache": ""}]
    rows += [{"step": "make_folds.py (parallel scan: every image decoded and hashed once)",
             **measured("make_folds.py", "--data-dir", str(data), "--out", str(work / "folds.csv"),
                        "--cache-dir", str(cache_dir), "--overwrite", "--quiet")}]
    train = ["--data-dir", str(data), "--folds-csv", str(work / "folds.csv"), "--cache-dir", str(cache_dir),
             "--runs-dir", str(work / "runs"), "--model", args.model, "--image-size-px", str(args.size_px),
             "--input-size-px", str(args.input_size_px), "--fold", "0", "--epochs", "1", "--batch-size", "64",
             "--no-tensorboard", "--quiet", "--overwrite"]
    for run, what in (("first", "decodes into the cache"), ("second", "reuses it")):
        print(f"train.py, {run} run ...", flush=True)
        rows.append({"step": f"train.py fold 0, 1 epoch: {run} run ({what})",
                     **measured("train.py", *train, "--exp", f"bench-{run}")})
    decoded = args.images * args.size_px * args.size_px * 3
    table = markdown_table(pd.DataFrame(rows))
    header = (f"# Image cache: memory and reuse\n\nMachine: {cpu_name()}, {multiprocessing.cpu_count()} cores. "
              f"{args.images} generated RGB JPEGs at {args.size_px} px (decoded: {human_bytes(decoded)}, what one "
              f"in-memory array of them needs in every process), model {args.model} fed at {args.input_size_px} px, "
              f"batch 64{'; --quick: not a measurement' if args.quick else ''}.\n\n")
    write_text(args.out, header + table + "\n")
    print("\n" + header + table)


if __name__ == "__main__":
    run_main(main)
