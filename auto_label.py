"""Label unlabelled images by their nearest labelled neighbours (embeddings of a trained fold model) and queue
the rest for human review: python auto_label.py --exp demo --images-dir data/mnist5k_lpc10/unlabeled.

Writes to <out-dir>/auto_label_<exp>/: auto_labels.csv (accepted: all k neighbours and the classifier agree),
review_queue.csv + review_queue.png (the rest, most uncertain first, with known-label control items mixed in;
reviewers fill the label column), labelstudio_tasks.json + labelstudio_config.xml (the same queue for Label
Studio), queue_key.csv and controls.csv (keep these from the reviewers),
embedding_map.png (PCA coloured by label) and knn_check.csv (the rule's accuracy on the labelled rows).
Read the reviews (CSVs or a Label Studio JSON export) back with import_reviews.py.
"""
from pathlib import Path

from src.core.cli import build_parser, quiet_default, run_main


def main() -> None:
    parser = build_parser(__doc__)
    parser.add_argument("--exp", required=True, help="trained experiment under --runs-dir")
    parser.add_argument("--runs-dir", default="runs", help="where the experiments are")
    parser.add_argument("--fold", type=int, default=0, help="whose model embeds the images")
    parser.add_argument("--images-dir", default="", help="unlabelled images (default: <data-dir>/unlabeled)")
    parser.add_argument("--k", type=int, default=10, help="neighbours per image")
    parser.add_argument("--min-agreement", type=float, default=1.0, help="share of the k neighbours that must "
                                                                         "agree (1.0 = all)")
    parser.add_argument("--min-confidence", type=float, default=0.0, help="the classifier's probability for "
                                                                          "that label must reach this too")
    parser.add_argument("--rank-by", default="entropy", choices=["entropy", "margin", "disagreement"],
                        help="uncertainty that orders the review queue")
    parser.add_argument("--control-share", type=float, default=0.05, help="known-label control items per queue "
                                                                          "item")
    parser.add_argument("--truth", default="", help="CSV image,label with the true labels (the demo's "
                                                    "unlabeled_solution.csv): report the auto-labels' accuracy")
    parser.add_argument("--ls-root", default="/", help="Label Studio's LOCAL_FILES_DOCUMENT_ROOT: task image "
                                                         "URLs are relative to it")
    parser.add_argument("--ls-url-prefix", default="/data/local-files/?d=", help="prefix of task image URLs")
    parser.add_argument("--sheet-items", type=int, default=64, help="queue items in review_queue.png")
    parser.add_argument("--out-dir", default="reports", help="writes <out-dir>/auto_label_<exp>/")
    parser.add_argument("--seed", type=int, default=42, help="control items and their positions")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="device")
    parser.add_argument("--quiet", action="store_true", default=quiet_default(), help="no progress bars")
    args = parser.parse_args()
    from src.core.errors import UserError
    from src.core.rundir import exp_dir
    from src.labels.knn import AutoLabelRule, run_auto_label

    if args.k < 1 or not 0 < args.min_agreement <= 1 or not 0 <= args.min_confidence <= 1 \
            or not 0 <= args.control_share <= 1:
        raise UserError("need --k >= 1, 0 < --min-agreement <= 1, 0 <= --min-confidence <= 1 and "
                        "0 <= --control-share <= 1")
    out = Path(args.out_dir) / f"auto_label_{args.exp}"
    rule = AutoLabelRule(args.k, args.min_agreement, args.min_confidence)
    counts = run_auto_label(exp_dir(args.runs_dir, args.exp), args.fold, args.images_dir, out, rule, args.rank_by,
                            args.control_share, args.sheet_items, args.device, args.seed, args.quiet, args.truth,
                            args.ls_root, args.ls_url_prefix)
    print("\n".join(f"{k}: {v:.4f}" if isinstance(v, float) else f"{k}: {v}" for k, v in counts.items()))
    print(f"wrote {out}/ (auto_labels.csv, review_queue.csv/.png, queue_key.csv, controls.csv, embedding_map.png)")


if __name__ == "__main__":
    run_main(main)
