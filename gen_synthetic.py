"""Class-conditional diffusion generator per fold: python gen_synthetic.py --fold 0 all (train, sample, report).

Commands: train (the generator, on the fold's training rows only), sample (labelled images + manifest,
filtered by a classifier when one is given), report (Classification Accuracy Score), all (the three).
"""

from src.core.cli import build_parser, quiet_default, run_main
from src.core.config import add_config_flags, config_from_args
from src.synthetic.config import GenConfig


def main() -> None:
    parser = build_parser(__doc__)
    parser.add_argument("command", choices=["train", "sample", "report", "all"], help="what to run")
    parser.add_argument("--fold", default="0", help="fold index, comma list (0,2,4) or 'all'")
    parser.add_argument("--resume", action="store_true", help="continue the generator from its last.pt, exactly")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing generator or sample set")
    parser.add_argument("--quiet", action="store_true", default=quiet_default(), help="no progress bars")
    add_config_flags(parser, GenConfig)
    args = parser.parse_args()
    cfg = config_from_args(args, GenConfig)
    from src.data.folds import parse_fold_arg  # heavy imports only once the arguments are known to be valid
    from src.synthetic.commands import load_fold_images, run_command

    data = load_fold_images(cfg, args.quiet)
    folds = parse_fold_arg(args.fold, int(data.fold_of.max()) + 1)
    run_command(args.command, cfg, data, folds, resume=args.resume, overwrite=args.overwrite, quiet=args.quiet)


if __name__ == "__main__":
    run_main(main, interrupt_hint=": finished generator epochs are saved in last.pt; continue with train --resume")
