"""Pseudo-labelling rounds: label unlabelled images with each fold's model, add the confident ones to that
fold's training split, retrain every fold, repeat.

    python pseudo_label.py --exp demo10 --rounds 3 --threshold 0.95
    python pseudo_label.py --exp demo10 --use-test --max-per-class 300   # test images too (transductive)
"""
import dataclasses

from src.core.cli import build_parser, quiet_default, run_main
from src.core.errors import UserError
from src.pseudo.rounds import PseudoOptions, run_rounds
from src.pseudo.select import per_round

HELP = {
    "rounds": "rounds of label -> retrain; round r trains <exp>-pl<r> (finished folds are reused on a re-run)",
    "threshold": "keep a prediction when its top probability is at least this",
    "name": "name of the rounds' experiments and report (<name>-pl<r>); default: --exp",
    "max_per_class": "at most this many pseudo-labels per class and fold (0 = no cap); one value per round "
                     "(e.g. 100,200,300; the last repeats) grows the set as the models improve",
    "balanced": "take the same number per class (the smallest class's count), so no class swamps the set",
    "soft": "retrain on the models' probability vectors (soft labels) instead of their top class",
    "unlabeled_dir": "folder of unlabelled images inside the data folder",
    "use_test": "also pseudo-label the test images (transductive: common on Kaggle; recorded in each run)",
    "test_dir": "test image folder inside the data folder",
    "tta": "views averaged when labelling and for the submissions (auto, none, or a comma list)",
    "retrain_config": "YAML/JSON of train.py config keys that override the starting experiment's config when "
                      "retraining with pseudo-labels (e.g. batch_size, epochs)",
    "runs_dir": "where the experiments are",
    "out_dir": "where the pseudo-label CSVs go (<out_dir>/<exp>-pl<r>/fold<k>/pseudo.csv)",
    "report_dir": "where reports/pseudo_<exp>.md/.csv go",
    "submissions_dir": "where each round's submission (scored when solution.csv exists) goes",
    "device": "where the models run",
}


def main() -> None:
    parser = build_parser(__doc__)
    parser.add_argument("--exp", required=True, help="trained experiment to start from (round 0)")
    for f in dataclasses.fields(PseudoOptions):
        if f.name in HELP:
            kind = {"action": "store_true"} if f.type in (bool, "bool") else {"type": type(f.default)}
            parser.add_argument("--" + f.name.replace("_", "-"), default=f.default, **kind,
                                help=HELP[f.name])  # the formatter adds the default where it says something
    parser.add_argument("--quiet", action="store_true", default=quiet_default(), help="no progress bars")
    args = parser.parse_args()
    options = PseudoOptions(**vars(args))
    if options.rounds < 1 or not 0 <= options.threshold <= 1:
        raise UserError("--rounds must be >= 1, --threshold in [0, 1]")
    per_round(options.max_per_class, options.rounds)  # a bad list fails before any work
    if options.tta == "greedy":
        raise UserError("--tta greedy is not available here; use auto, none or a comma list of views")
    run_rounds(options)


if __name__ == "__main__":
    run_main(main, interrupt_hint=": finished folds are kept; run the same command again to continue")
