"""Predict the test set with every fold (+ TTA), blend experiments, write and score a submission.

    python infer.py --exp demo                      # submissions/demo.csv, public/private score
    python infer.py --exp e1 e2 --blend fitted      # blend two experiments with OOF-fitted weights
    python infer.py --exp demo --images a.png b.png # just predict some files
"""
import argparse

from src.cli import quiet_default, run_main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exp", nargs="+", required=True, help="experiment name(s) under --runs-dir")
    parser.add_argument("--runs-dir", default="runs", help="where the experiments are (default runs)")
    parser.add_argument("--data-dir", default="", help="competition folder with test/ and sample_submission.csv "
                        "(default: the one the experiment was trained on)")
    parser.add_argument("--tta", default="auto", help="auto (one-pixel shifts, plus the flips the model was "
                        "trained with), none, greedy (forward selection on OOF log-loss), or a comma list of views")
    parser.add_argument("--blend", choices=["mean", "fitted"], default="mean",
                        help="how several experiments are combined (folds are always averaged)")
    parser.add_argument("--proba", action="store_true", help="write per-class probabilities, not labels")
    parser.add_argument("--threshold", default="", help="binary tasks: probability of the second class above "
                        "which it is predicted (a number, or 'eer' for the OOF equal-error-rate point)")
    parser.add_argument("--name", default="", help="submission name (default: the experiment names joined by +)")
    parser.add_argument("--out-dir", default="submissions", help="output folder (default submissions)")
    parser.add_argument("--test-dir", default="test", help="test image folder inside the data folder")
    parser.add_argument("--sample-csv", default="sample_submission.csv", help="inside the data folder")
    parser.add_argument("--solution-csv", default="solution.csv",
                        help="inside the data folder; when it exists, the public/private score is printed")
    parser.add_argument("--images", nargs="+", help="predict these image files instead of the test set")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="default auto")
    parser.add_argument("--quiet", action="store_true", default=quiet_default(), help="no progress bars")
    args = parser.parse_args()
    from src.inference import InferOptions, make_submission, predict_files
    options = InferOptions(**{k: v for k, v in vars(args).items() if k not in ("exp", "images")},
                           exps=args.exp)
    options.name = options.name or "+".join(args.exp)
    if args.images:
        predict_files(options, args.images)
    else:
        make_submission(options)


if __name__ == "__main__":
    run_main(main)
