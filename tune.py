"""Tune hyper-parameters: an Optuna study whose trials train folds with train.py's trainer.

python tune.py --data-dir D --folds 0 --budget 15m --name N, then
python train.py --data-dir D --config configs/tuned/N.yaml --fold all.
Every TrainConfig flag (and --config FILE) sets the base config; a key given as a flag is fixed (not searched).
The best value is optimistic (chosen on the tuned folds); --holdout-folds scores the best config on other folds."""
import time
from pathlib import Path

from src.core.cli import build_parser, quiet_default, run_main
from src.core.config import add_config_flags
from src.core.errors import UserError
from src.train.config import TrainConfig


def main() -> None:
    start = time.monotonic()  # the budget counts from here, imports included
    parser = build_parser(__doc__)
    parser.add_argument("--name", default="", help="study name: <runs_dir>/tune/<name>/ and <tuned-dir>/<name>.yaml "
                                                   "(default: <data folder>-<space file name>)")
    parser.add_argument("--space", default="configs/search/default.yaml",
                        help="search-space file: ranges {low, high}, lists of choices, fixed: keys")
    parser.add_argument("--folds", default="0", help="folds each trial trains; the objective is the mean over them "
                                                     "of the best monitored metric")
    parser.add_argument("--holdout-folds", default="", help="after the study, train the best config on these folds "
                                                            "(never tuned on) and report that score")
    parser.add_argument("--trials", type=int, default=None, help="trials to run in this call")
    parser.add_argument("--budget", default="", help="wall-clock budget: 90s, 15m, 1h, 1h30m (a running trial is "
                                                     "stopped at it)")
    parser.add_argument("--storage", default="", help="Optuna storage URL (default: sqlite:///<runs_dir>/tune/"
                                                      "<name>/study.db)")
    parser.add_argument("--resume", action="store_true", help="continue (or join) the study of this name")
    parser.add_argument("--pruner", default="median", choices=["median", "hyperband", "none"],
                        help="stops unpromising trials between epochs")
    parser.add_argument("--tuned-dir", default="configs/tuned", help="where the tuned config <name>.yaml goes")
    parser.add_argument("--quiet", action="store_true", default=quiet_default(), help="no progress bars")
    add_config_flags(parser, TrainConfig)
    args = parser.parse_args()
    if args.trials is None and not args.budget:
        raise UserError("give --budget (e.g. 15m) and/or --trials N: a study needs an end")
    if args.trials is not None and args.trials < 1:
        raise UserError(f"--trials {args.trials}: run at least 1 trial")
    from src.tune import study as tuning
    from src.tune.report import best_trial, write_reports
    from src.tune.space import FIELD_TYPES, base_config, check_space, load_space

    deadline = start + tuning.parse_budget(args.budget) if args.budget else None
    full_space = load_space(args.space)
    base, space = base_config(args.config, full_space, vars(args))
    check_space(space, base)  # every searched value is checked before any trial runs
    folds, holdout, val_rows = tuning.check_folds(base, args.folds, args.holdout_folds)
    name = tuning.check_name(args.name or f"{Path(base.data_dir).name}-{Path(args.space).stem}")
    job = tuning.TuneJob(name, base, space, folds, Path(base.runs_dir) / "tune" / name, args.quiet, deadline,
                         val_rows)
    storage = args.storage or tuning.default_storage(job.tune_dir)
    study = tuning.open_study(job, storage, args.resume, args.pruner)
    flags = sorted(f"{k}={v}" for k, v in vars(args).items() if k in FIELD_TYPES and k != "data_dir")  # given ones
    print(f"study {name} ({storage}): searching {', '.join(space.params)}; set by flags: {', '.join(flags) or '-'}"
          f"; tuning on fold(s) {args.folds}, so the best value is optimistic; trial logs: "
          f"{job.trials_dir}/trial<n>/train.log", flush=True)
    tuning.run_trials(study, job, args.trials)
    best = best_trial(study)
    held = (holdout, tuning.train_holdout(best, job, holdout)) if holdout and best else None
    tuned_path = Path(args.tuned_dir) / f"{name}.yaml"
    lines = write_reports(study, job.tune_dir, storage, folds, base.monitor, tuned_path, held)
    print("\n".join(lines) + f"\nreport: {job.tune_dir / 'summary.md'}")
    if best is None:
        limit = f"--budget {args.budget}" if args.budget else f"--trials {args.trials}"
        raise UserError(f"no trial completed within {limit} (see {job.tune_dir / 'trials.md'}); raise --budget or "
                        f"lower epochs (--epochs, or the space's epochs range)")


if __name__ == "__main__":
    run_main(main, interrupt_hint=": finished trials are kept in the study; continue with --resume")
