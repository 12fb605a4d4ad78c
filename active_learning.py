"""Is uncertainty sampling worth it on this kind of data? A simulation on a demo folder whose unlabelled
images have hidden labels (prepare_demo.py --labels-per-class N):

python active_learning.py --data-dir data/mnist5k_lpc10 -> reports/active_learning_<name>.csv/.md/.png

From the labelled start, each round asks for --batch more labels, either the most uncertain unlabelled images
under the current model or random ones (answered from unlabeled_solution.csv), retrains with the same compute
budget, and scores the whole test set (solution.csv). Reports the labels each strategy needs to reach --target.
"""
from pathlib import Path

from src.core.cli import build_parser, quiet_default, run_main


def main() -> None:
    parser = build_parser(__doc__)
    parser.add_argument("--data-dir", default="data/mnist5k_lpc10", help="demo folder with hidden labels")
    parser.add_argument("--config", default="configs/lowlabel.yaml", help="train.py config for every round")
    parser.add_argument("--batch", type=int, default=50, help="labels asked for per round")
    parser.add_argument("--rounds", type=int, default=14, help="rounds after the start")
    parser.add_argument("--train-images", type=int, default=16000, help="images presented per training")
    parser.add_argument("--rank-by", default="entropy", choices=["entropy", "margin"], help="uncertainty measure")
    parser.add_argument("--target", type=float, default=0.97, help="test accuracy to reach")
    parser.add_argument("--seeds", default="42", help="comma list; each seed runs both strategies")
    parser.add_argument("--name", default="", help="report name (default: the data folder's name)")
    parser.add_argument("--out-dir", default="reports", help="writes <out-dir>/active_learning_<name>.*")
    parser.add_argument("--quiet", action="store_true", default=quiet_default(), help="no per-round lines")
    args = parser.parse_args()
    from src.core.errors import UserError
    from src.labels.active import run_active_learning

    if args.batch < 1 or args.rounds < 1 or args.train_images < 1 or not 0 < args.target <= 1:
        raise UserError("need --batch, --rounds and --train-images >= 1 and 0 < --target <= 1")
    seeds = [int(s) for s in args.seeds.split(",")]
    name = args.name or Path(args.data_dir).resolve().name
    path = run_active_learning(Path(args.data_dir), args.config, args.batch, args.rounds, args.train_images,
                               args.rank_by, args.target, seeds, Path(args.out_dir) / f"active_learning_{name}",
                               args.quiet)
    print(path.read_text())


if __name__ == "__main__":
    run_main(main)
