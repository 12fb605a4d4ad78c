"""Train one or more cross-validation folds: python train.py --fold 0 (or 0,1,2 or all).

Without --fold the fold comes from $KIT_FOLD or $SLURM_ARRAY_TASK_ID (one fold per array task), else 0.
Data-parallel on several GPUs (or CPU processes): torchrun --nproc-per-node N train.py --fold 0."""

from src.core.cli import build_parser, quiet_default, run_main
from src.core.config import add_config_flags, config_from_args
from src.train.config import TrainConfig


def main() -> None:
    parser = build_parser(__doc__)
    parser.add_argument("--fold", default=None,
                        help="fold index, comma list (0,2,4) or 'all' (default: $KIT_FOLD, $SLURM_ARRAY_TASK_ID, 0)")
    parser.add_argument("--resume", action="store_true", help="continue each fold from its last.pt, exactly")
    parser.add_argument("--overwrite", action="store_true", help="replace existing run directories")
    parser.add_argument("--quiet", action="store_true", default=quiet_default(), help="no progress bars")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    add_config_flags(parser, TrainConfig)
    args = parser.parse_args()
    cfg = config_from_args(args, TrainConfig)
    if args.print_config:
        import json

        from src.core.config import config_to_dict
        print(json.dumps(config_to_dict(cfg), indent=2))
        return
    from src.data.folds import fold_from_env
    from src.train.cv import train_folds  # heavy imports only once the arguments are known to be valid
    fold, source = fold_from_env(args.fold)
    train_folds(cfg, fold, resume=args.resume, overwrite=args.overwrite, quiet=args.quiet, fold_source=source)


if __name__ == "__main__":
    run_main(main, interrupt_hint=": finished epochs are saved in last.pt; continue with --resume")
