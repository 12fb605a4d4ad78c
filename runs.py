"""The run table: every experiment under runs/, best OOF first: python runs.py (--diff A B for two configs).

Per experiment: model, settings that differ from train.py's defaults, folds finished, OOF metric mean ±
std over folds, public/private score of its newest infer.py submission (with a solution file), training
minutes and when it last trained. Printed, and written as <out>.md and <out>.csv.
"""
from pathlib import Path

from src.core.cli import build_parser, run_main


def main() -> None:
    parser = build_parser(__doc__)
    parser.add_argument("--runs-dir", default="runs", help="where the experiments are")
    parser.add_argument("--submissions-dir", default="submissions", help="where infer.py wrote submissions")
    parser.add_argument("--metric", default="accuracy", help="OOF metric to show and sort by")
    parser.add_argument("--out", default="reports/runs", help="table files: <out>.md and <out>.csv")
    parser.add_argument("--diff", nargs=2, metavar=("A", "B"), help="show the config keys where A and B differ")
    args = parser.parse_args()
    import pandas as pd

    from src.compare.run_table import config_diff, run_table, table_text, write_run_table

    pd.set_option("display.width", 250, "display.max_colwidth", 80)
    if args.diff:
        diff = config_diff(args.runs_dir, *args.diff)
        print(diff.to_string(index=False) if len(diff) else f"{args.diff[0]} and {args.diff[1]}: same config")
        return
    frame = run_table(args.runs_dir, args.metric, args.submissions_dir)
    print(table_text(frame, args.metric).to_string(index=False))
    csv, md = write_run_table(frame, args.metric, Path(args.out))
    print(f"wrote {md} and {csv}")


if __name__ == "__main__":
    run_main(main)
