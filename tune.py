"""Tune hyper-parameters: an Optuna study whose trials train folds with train.py's trainer.

python tune.py --data-dir D --folds 0 --budget 15m --name N, then
python train.py --data-dir D --config configs/tuned/N.yaml --fold all.
Every TrainConfig flag (and --config FILE) sets the base config; a key given as a flag is fixed (not searched).
A trial's score is the mean final-epoch metric over the tuned folds. The best value is optimistic (chosen on the
tuned folds); --holdout-folds scores the best config on other folds. The reports are written however the study
ends (Ctrl-C included); --resume trains the trials an interrupt, a kill or the budget cut short again."""
import time

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
                                                     "of the final-epoch monitored metric")
    parser.add_argument("--holdout-folds", default="", help="after the study, train the best config on these folds "
                                                            "(never tuned on) and report that score")
    parser.add_argument("--trials", type=int, default=None, help="trials to run in this call")
    parser.add_argument("--budget", default="", help="wall-clock budget: 90s, 15m, 1h, 1h30m (a running trial is "
                                                     "stopped at it)")
    parser.add_argument("--storage", default="", help="Optuna storage URL (default: sqlite:///<runs_dir>/tune/"
                                                      "<name>/study.db)")
    parser.add_argument("--resume", action="store_true", help="continue (or join) the study of this name; trials cut "
                                                               "short by an interrupt, a kill or the budget run again")
    parser.add_argument("--report", action="store_true", help="write an existing study's reports and tuned config; "
                                                               "no trial runs")
    parser.add_argument("--fidelity", default="", choices=["halving", "full"],
                        help="halving (a new study's default): configs start as cheap runs (fewer epochs and training "
                             "rows), the best are promoted to full fidelity, the base config always runs in full; "
                             "full: every trial in full (default with --resume/--report: the study's own)")
    parser.add_argument("--pruner", default="auto", choices=["auto", "median", "hyperband", "none"],
                        help="stops unpromising full-fidelity trials between epochs (auto: median with --fidelity "
                             "full, none with halving, which does that job)")
    parser.add_argument("--tuned-dir", default="configs/tuned", help="where the tuned config <name>.yaml goes")
    parser.add_argument("--quiet", action="store_true", default=quiet_default(), help="no progress bars")
    add_config_flags(parser, TrainConfig)
    args = parser.parse_args()
    if args.trials is None and not args.budget and not args.report:
        raise UserError("give --budget (e.g. 15m) and/or --trials N: a study needs an end")
    if args.trials is not None and args.trials < 1:
        raise UserError(f"--trials {args.trials}: run at least 1 trial")
    from src.tune.session import run_study
    run_study(args, start)


if __name__ == "__main__":
    run_main(main, interrupt_hint=": finished trials are kept in the study; continue with --resume")
