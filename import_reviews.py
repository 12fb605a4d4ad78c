"""Read reviewed labels back and merge them into a new train CSV:
python import_reviews.py --queue-dir reports/auto_label_demo alice.csv bob.csv --out data/x/train_v2.csv

Each review CSV is a filled-in copy of review_queue.csv (id, label; reviewer column optional, else the file
name); a .json file is read as a Label Studio export of labelstudio_tasks.json (reviewer = annotator). The
queue's ids are opaque item ids; queue_key.csv maps them back to the images.
Several reviewers per item are fine: the majority of the trusted reviewers decides (ties stay unresolved).
A reviewer is trusted when their accuracy on the hidden control items reaches --min-control-accuracy.
Control items are never merged. --include-auto also merges auto_labels.csv.
"""
import json
from pathlib import Path

from src.core.cli import build_parser, run_main


def main() -> None:
    parser = build_parser(__doc__)
    parser.add_argument("reviews", nargs="*", help="filled-in review CSVs and/or Label Studio JSON exports")
    parser.add_argument("--queue-dir", required=True, help="auto_label.py's output folder")
    parser.add_argument("--out", required=True, help="the new train CSV (inside the data folder; never the original)")
    parser.add_argument("--min-control-accuracy", type=float, default=0.8,
                        help="reviewers below this accuracy on control items are not counted")
    parser.add_argument("--include-auto", action="store_true", help="also merge the kNN auto-labels")
    args = parser.parse_args()
    import pandas as pd

    from src.core.atomic import write_csv
    from src.core.errors import UserError
    from src.labels.review import control_accuracy, image_ids, majority_vote, merge_labels, read_reviews

    queue_dir = Path(args.queue_dir)
    if not (queue_dir / "queue.json").is_file():
        raise UserError(f"{queue_dir}: no queue.json; pass the folder auto_label.py wrote")
    meta = json.loads((queue_dir / "queue.json").read_text())
    key = pd.read_csv(queue_dir / "queue_key.csv", dtype={"id": str, "image_id": str, "suggested": str},
                      keep_default_na=False)
    controls = pd.read_csv(queue_dir / "controls.csv", dtype=str)
    reviews = read_reviews([Path(p) for p in args.reviews], key)
    suggested = dict(zip(image_ids(key).values(), key["suggested"])) if "suggested" in key else None
    accuracy = control_accuracy(reviews, controls, suggested)
    trusted = set(accuracy.loc[accuracy["control_accuracy"].fillna(0) >= args.min_control_accuracy, "reviewer"])
    votes = majority_vote(reviews[~reviews["id"].isin(controls["id"])], trusted, set(meta["classes"]))
    write_csv(queue_dir / "reviewer_accuracy.csv", accuracy)
    write_csv(queue_dir / "votes.csv", votes)
    print(accuracy.to_string(index=False) if len(accuracy) else "no reviews yet")
    paths = dict(zip(image_ids(key).values(), key["path"])) if "path" in key else {}
    accepted = votes[votes["status"] == "accepted"].assign(path=lambda f: f["id"].map(paths))
    parts = [accepted[["id", "label", "path"]]]
    if args.include_auto:
        auto = pd.read_csv(queue_dir / "auto_labels.csv", dtype=str)
        parts.append(auto[~auto["id"].isin(accepted["id"])][["id", "label", "path"]])
    new_rows = pd.concat(parts, ignore_index=True)
    data = Path(meta["data_dir"])
    record = merge_labels(data / meta["train_csv"], data / meta["image_dir"], new_rows, Path(args.out),
                          meta["id_col"], meta["label_col"], f"reviews {', '.join(args.reviews) or '(none)'}"
                          + (" + auto_labels.csv" if args.include_auto else ""))
    print(f"trusted reviewers: {', '.join(sorted(trusted)) or 'none'}; items: {len(votes)} voted, "
          f"{(votes['status'] == 'tie').sum()} ties left out; wrote {args.out} (+{len(record)} rows, record in "
          f"{Path(args.out).with_name(Path(args.out).stem + '.changes.csv')})")


if __name__ == "__main__":
    run_main(main)
