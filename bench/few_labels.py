"""A few-labels competition made from a labelled one (e.g. ../shared/datasets/trashnet), reproducibly: a stratified
holdout share keeps its labels (scored at the end, never trained, selected or tuned on), a stratified share of all
rows keeps its labels for training, and every other image goes to unlabeled/ with its label hidden in
unlabeled_solution.csv (read only to log how right pseudo-labels are).

Writes the data folder (train.csv + train/ for the labelled and holdout rows, unlabeled/ + unlabeled_solution.csv)
and its fold file, folds/<data folder>-<key>_k<K>_s<seed>_h<holdout %>.csv, where train.py finds it by default.
Images are hard links where the file system allows (copies otherwise); nothing is committed.

    python bench/few_labels.py --data-dir ../shared/datasets/trashnet --labelled 0.1    # data/trashnet_l10
    python train.py --data-dir data/trashnet_l10 --image-size-px 64 --fold all          # supervised on the 10 %
    python infer.py --exp baseline --holdout-only                                      # its holdout score
"""
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedShuffleSplit

from src.core.atomic import write_csv
from src.core.cli import build_parser, run_main
from src.core.errors import UserError
from src.data.contract import read_train_table, subset
from src.data.folds import assign_folds, check_class_counts, fold_file_path, folds_frame
from src.data.holdout import HOLDOUT, assign_holdout, check_fraction


def link(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system, or no hard links there
        shutil.copy2(source, target)


def split(labels: np.ndarray, holdout: float, labelled: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(holdout mask, labelled mask) over all rows: `labelled` is a share of ALL rows, drawn from the rest."""
    held = assign_holdout(labels, np.arange(len(labels)), holdout, seed)
    rest = np.flatnonzero(~held)
    take = labelled / (1 - held.mean())
    if not 0 < take < 1:
        raise UserError(f"--labelled {labelled:g}: with a {holdout:g} holdout it must be below {1 - held.mean():.2f}")
    splitter = StratifiedShuffleSplit(n_splits=1, train_size=take, random_state=seed)
    kept, _ = next(splitter.split(np.zeros(len(rest)), labels[rest]))
    mask = np.zeros(len(labels), dtype=bool)
    mask[rest[kept]] = True
    return held, mask


def build(args) -> tuple[Path, Path]:
    source = Path(args.data_dir)
    table = read_train_table(source, "train.csv", "train", "image", "label")
    out = Path(args.out_dir or f"data/{source.name}_l{100 * args.labelled:g}")
    if out.exists():
        raise UserError(f"{out} exists; remove it or choose another --out-dir (it is rebuilt the same way)")
    check_fraction(args.holdout)
    held, labelled = split(table.labels, args.holdout, args.labelled, args.seed)
    check_class_counts(table.labels[labelled], table.classes, args.n_folds, f"the {args.labelled:g} labelled share")
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for folder in ("train", "unlabeled"):
        (tmp / folder).mkdir(parents=True)
    keep = np.flatnonzero(held | labelled)
    names = []
    for i in range(len(table.ids)):
        name = table.paths[i].name
        link(table.paths[i], tmp / ("train" if held[i] or labelled[i] else "unlabeled") / name)
        names.append(name)
    kept = subset(table, keep)
    write_csv(tmp / "train.csv", pd.DataFrame({"image": [names[i] for i in keep],
                                               "label": [table.classes[table.labels[i]] for i in keep]}))
    hidden = np.flatnonzero(~(held | labelled))
    write_csv(tmp / "unlabeled_solution.csv", pd.DataFrame({"image": [names[i] for i in hidden],
                                                            "label": [table.classes[table.labels[i]] for i in hidden]}))
    fold = np.full(len(keep), HOLDOUT, dtype=np.int64)
    train_rows = ~held[keep]
    fold[train_rows] = assign_folds(kept.labels[train_rows], args.n_folds, args.seed)
    tmp.rename(out)
    final = read_train_table(out, "train.csv", "train", "image", "label")  # its ids and paths as the kit reads them
    folds_path = fold_file_path("folds", out, final, args.n_folds, args.seed, args.holdout)
    write_csv(folds_path, folds_frame(final, fold, "image", "label"))
    return out, folds_path


def main() -> None:
    parser = build_parser(__doc__)
    parser.add_argument("--data-dir", required=True, help="a labelled competition folder (train.csv + train/)")
    parser.add_argument("--labelled", type=float, default=0.1, help="share of ALL rows that keeps its labels")
    parser.add_argument("--holdout", type=float, default=0.2, help="share of all rows set aside, labelled, for scoring")
    parser.add_argument("--n-folds", type=int, default=5, help="folds of the labelled rows")
    parser.add_argument("--seed", type=int, default=42, help="split seed")
    parser.add_argument("--out-dir", default="", help="default data/<name>_l<labelled %%>")
    args = parser.parse_args()
    out, folds = build(args)
    counts = pd.read_csv(folds)["fold"].value_counts()
    print(f"wrote {out}: {int(counts.drop('holdout').sum())} labelled training rows in {args.n_folds} folds, "
          f"{int(counts['holdout'])} holdout rows, {len(list((out / 'unlabeled').iterdir()))} unlabelled images; "
          f"fold file {folds}")


if __name__ == "__main__":
    run_main(main)
