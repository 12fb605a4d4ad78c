"""Look at the data before training: python eda.py --data-dir data/mnist5k -> reports/eda_<name>.md + PNGs.

Class balance; image size, channel and intensity statistics of train vs test with a drift warning; random
images per class; exact and near-duplicate images (difference hash) within train and across train/test,
with label conflicts first; files that cannot be read (listed, not fatal).
"""
from pathlib import Path

from src.core.cli import add_table_flags, build_parser, quiet_default, run_main


def main() -> None:
    parser = build_parser(__doc__)
    parser.add_argument("--data-dir", default="data/mnist5k", help="competition folder")
    add_table_flags(parser)
    parser.add_argument("--test-dir", default="test", help="test image folder inside the data folder")
    parser.add_argument("--name", default="", help="report name (default: the data folder's name)")
    parser.add_argument("--out-dir", default="reports", help="writes <out-dir>/eda_<name>.md and eda_<name>/")
    parser.add_argument("--hash-bits", type=int, default=8, help="duplicate candidates: difference hashes at most "
                                                                "this many of 64 bits apart")
    parser.add_argument("--near-similarity", type=float, default=0.99,
                        help="a candidate is a near duplicate from this thumbnail similarity (cosine) on")
    parser.add_argument("--per-class", type=int, default=8, help="sample images per class in samples.png")
    parser.add_argument("--seed", type=int, default=42, help="which sample images are shown")
    parser.add_argument("--quiet", action="store_true", default=quiet_default(), help="no progress bars")
    args = parser.parse_args()
    from src.core.errors import UserError
    from src.data.contract import read_train_table
    from src.data.eda import run_eda

    if not 0 <= args.hash_bits <= 16:
        raise UserError(f"--hash-bits {args.hash_bits}: use 0..16 (more would compare almost every pair)")
    if args.per_class < 1:
        raise UserError(f"--per-class {args.per_class}: show at least 1 image per class")
    if not 0 < args.near_similarity <= 1:
        raise UserError(f"--near-similarity {args.near_similarity}: use a number in (0, 1]")
    table = read_train_table(args.data_dir, args.train_csv, args.image_dir, args.id_col, args.label_col)
    name = args.name or Path(args.data_dir).resolve().name
    path = run_eda(table, Path(args.data_dir) / args.test_dir, name, Path(args.out_dir), args.hash_bits,
                   args.near_similarity, args.per_class, args.seed, args.quiet)
    print(path.read_text())
    print(f"wrote {path} (+ {path.with_suffix('').parent / ('eda_' + name)}/)")


if __name__ == "__main__":
    run_main(main)
