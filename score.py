"""Score a submission on the local leaderboard: public and private metric from a Kaggle-style solution file.

    python score.py submissions/demo.csv --solution data/mnist5k/solution.csv
"""

from src.core.cli import build_parser, run_main


def main() -> None:
    parser = build_parser(__doc__)
    parser.add_argument("submission", help="submission CSV (id column first, as in sample_submission.csv)")
    parser.add_argument("--solution", default="data/mnist5k/solution.csv",
                        help="solution CSV: id, label, Usage (Public/Private) (default data/mnist5k/solution.csv)")
    parser.add_argument("--metric", default="", help="accuracy or macro_f1 for labels, log_loss or roc_auc for "
                        "probabilities (default: accuracy, or log_loss for a probability submission)")
    args = parser.parse_args()
    from pathlib import Path

    from src.infer.submission import score_submission
    scores = score_submission(Path(args.submission), Path(args.solution), args.metric)
    parts = "  ".join(f"{part} {scores[part]:.4f}" for part in ("public", "private") if part in scores)
    print(f"{args.submission}: {scores['metric']} {parts}")


if __name__ == "__main__":
    run_main(main)
