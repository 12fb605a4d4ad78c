"""Write folds/<data folder name>-<id key>_k<K>_s<seed>.csv (id,label,fold): stratified, optional groups,
duplicates kept together. The key (a hash of the labelled ids) keeps two competitions in folders of the same
name apart; a fold file made from another train.csv is never replaced unless --overwrite is given.

--holdout 0.2 first sets aside a stratified (grouped) fifth of train.csv as a local private leaderboard: its rows
are marked `holdout` in the fold file (named ..._h20.csv), no fold trains, selects or tunes on them, and
infer.py --exp X scores them with the fold ensemble and TTA like a test set."""
from pathlib import Path

from src.core.cli import add_table_flags, build_parser, quiet_default, run_main


def main() -> None:
    parser = build_parser(__doc__)
    parser.add_argument("--data-dir", default="data/mnist5k", help="competition folder")
    add_table_flags(parser)
    parser.add_argument("--group-col", default="", help="rows sharing this column's value share a fold")
    parser.add_argument("--n-folds", type=int, default=5, help="number of folds")
    parser.add_argument("--seed", type=int, default=42, help="shuffle seed (of the holdout and the folds)")
    parser.add_argument("--holdout", type=float, default=None,
                        help="share of train.csv to set aside as a holdout no fold uses, in (0, 0.5] (default: none)")
    parser.add_argument("--out", default="",
                        help="output CSV (default: folds/<data folder name>-<id key>_k<K>_s<seed>.csv)")
    parser.add_argument("--overwrite", action="store_true", help="replace a fold file made from another train.csv")
    parser.add_argument("--cache-dir", default="", help="image cache folder (the pixel scan is kept there for "
                        "train.py); default: <data folder's parent>/.image_cache")
    parser.add_argument("--quiet", action="store_true", default=quiet_default(), help="no progress bars")
    args = parser.parse_args()
    from src.data.folds import make_fold_file
    from src.data.holdout import check_fraction
    if args.holdout is not None:
        check_fraction(args.holdout)
    make_fold_file(args.data_dir, args.train_csv, args.image_dir, args.id_col, args.label_col, args.group_col,
                   args.n_folds, args.seed, Path(args.out) if args.out else None, quiet=args.quiet,
                   overwrite=args.overwrite, cache_dir=args.cache_dir, holdout=args.holdout or 0.0)


if __name__ == "__main__":
    run_main(main)
