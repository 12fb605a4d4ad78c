"""Find training rows whose label is probably wrong, from a trained experiment's out-of-fold predictions:
python label_errors.py --exp demo -> reports/label_errors_demo.csv/.md/.png. Nothing is relabelled.

Apply the corrections you accept (a CSV with id,label) explicitly, into a new train CSV plus a record:
python label_errors.py --apply fixes.csv --data-dir data/mnist5k --out data/mnist5k/train_v2.csv
"""
from pathlib import Path

from src.core.cli import build_parser, run_main


def main() -> None:
    parser = build_parser(__doc__)
    parser.add_argument("--exp", default="", help="experiment under --runs-dir whose OOF predictions rank the rows")
    parser.add_argument("--runs-dir", default="runs", help="where the experiments are")
    parser.add_argument("--top", type=int, default=48, help="suspects shown in the contact sheet and report")
    parser.add_argument("--truth", default="", help="CSV with image,true_label (e.g. the demo's label_flips.csv): "
                                                    "also report where the known errors rank")
    parser.add_argument("--out-dir", default="reports", help="writes <out-dir>/label_errors_<exp>.*")
    parser.add_argument("--apply", default="", help="corrections CSV (id,label) to apply instead of ranking")
    parser.add_argument("--data-dir", default="", help="with --apply: the competition folder")
    parser.add_argument("--train-csv", default="train.csv", help="with --apply: the labels file to correct")
    parser.add_argument("--id-col", default="image", help="with --apply: its id column")
    parser.add_argument("--label-col", default="label", help="with --apply: its label column")
    parser.add_argument("--out", default="", help="with --apply: the new train CSV (never the original)")
    args = parser.parse_args()
    from src.core.errors import UserError

    if args.apply:
        if not args.out or not args.data_dir:
            raise UserError("--apply needs --data-dir (where train.csv is) and --out (the new CSV to write)")
        from src.labels.issues import apply_corrections
        changes = apply_corrections(Path(args.data_dir) / args.train_csv, Path(args.apply), Path(args.out),
                                    args.id_col, args.label_col)
        print(f"wrote {args.out} ({len(changes)} labels changed; record in "
              f"{Path(args.out).with_name(Path(args.out).stem + '.changes.csv')}); train with --train-csv")
        return
    if not args.exp:
        raise UserError("name the experiment to rank with: --exp NAME (or --apply a corrections CSV)")
    from src.data.contract import read_train_table
    from src.labels.issues import experiment_oof, label_issue_table, truth_recall, write_label_report

    oof, classes, record = experiment_oof(Path(args.runs_dir) / args.exp)
    config = record["config"]
    labels = read_train_table(config["data_dir"], config["train_csv"], config["image_dir"], config["id_col"],
                              config["label_col"])
    if args.top < 1:
        raise UserError(f"--top {args.top}: show at least 1 suspect")
    if len(oof) != len(labels.ids) or set(oof["id"].astype(str)) != set(map(str, labels.ids)):
        raise UserError(f"{labels.source}: its ids differ from the experiment's OOF rows (the data changed since "
                        f"training); retrain {args.exp} on this train.csv first")
    table, _ = label_issue_table(oof, classes)
    truth = truth_recall(table, Path(args.truth)) if args.truth else None
    path = write_label_report(Path(args.out_dir) / f"label_errors_{args.exp}", args.exp, table, labels, args.top,
                              truth)
    print(path.read_text())


if __name__ == "__main__":
    run_main(main)
