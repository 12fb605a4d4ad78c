"""Predict the test set with every fold (+ TTA), blend experiments, write and score a submission; with a holdout
in the fold file (make_folds.py --holdout), predict and score it the same way.

    python infer.py --exp demo                      # submissions/demo.csv, public/private score
    python infer.py --exp demo --holdout-only       # the holdout score alone, no submission
    python infer.py --exp e1 e2 --blend fitted      # blend two experiments with OOF-fitted weights
    python infer.py --exp demo --images a.png b.png # just predict some files
"""
import dataclasses

from src.core.cli import build_parser, quiet_default, run_main
from src.infer.pipeline import InferOptions, make_submission, predict_files

CHOICES = {"blend": ["mean", "fitted"], "device": ["auto", "cpu", "cuda"], "weights": ["best", "final"]}
HELP = {
    "runs_dir": "where the experiments are",
    "data_dir": "competition folder with test/ and sample_submission.csv (default: the experiment's)",
    "test_dir": "test image folder inside the data folder",
    "sample_csv": "sample submission inside the data folder",
    "solution_csv": "inside the data folder; when it exists, the public/private score is printed",
    "tta": "auto (one-pixel shifts, plus the flips the model was trained with), none, greedy (forward "
           "selection on OOF log-loss), or a comma list of views",
    "blend": "how several experiments are combined (folds are always averaged)",
    "proba": "write per-class probabilities, not labels",
    "threshold": "binary tasks: probability of the second class from which it is predicted (a number, or "
                 "'eer' for the OOF equal-error-rate point)",
    "name": "submission name (default: the experiment names joined by +, plus -holdout with --holdout-only)",
    "out_dir": "output folder",
    "device": "where the models run",
    "weights": "each fold's best.pt (its epoch picked on the fold's validation rows) or its final weights",
    "holdout_only": "score the fold file's holdout rows (make_folds.py --holdout) and write no submission",
}


def main() -> None:
    parser = build_parser(__doc__)
    parser.add_argument("--exp", nargs="+", required=True, help="experiment name(s) under --runs-dir")
    parser.add_argument("--images", nargs="+", help="predict these image files instead of the test set")
    for f in dataclasses.fields(InferOptions):
        if f.name in HELP:  # one place for defaults: InferOptions
            kind = {"action": "store_true"} if f.type in (bool, "bool") else {"choices": CHOICES.get(f.name)}
            parser.add_argument("--" + f.name.replace("_", "-"), default=f.default, **kind,
                                help=HELP[f.name])  # the formatter adds the default where it says something
    parser.add_argument("--quiet", action="store_true", default=quiet_default(), help="no progress bars")
    args = parser.parse_args()
    options = InferOptions(exps=args.exp, **{k: v for k, v in vars(args).items() if k not in ("exp", "images")})
    # --holdout-only writes no submission: its report must not replace the submission's of the same experiments.
    options.name = options.name or "+".join(args.exp) + ("-holdout" if args.holdout_only else "")
    if args.images:
        predict_files(options, args.images)
    else:
        make_submission(options)


if __name__ == "__main__":
    run_main(main)
