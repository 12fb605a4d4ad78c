"""The few-labels recipe end to end, stage by stage, timed, with every stage's score in one table.

The stages are the commands README's "Few labels" section gives a user, run as a user runs them (fresh processes):
  ssl          python pretrain.py --data-dir D --exp <exp>-ssl        (SimCLR on the competition's own pixels)
  consistency  python train.py --config configs/fewlabels.yaml --data-dir D --pretrained .../backbone.pt
                   --exp <exp> --fold all  +  python infer.py --exp <exp> --weights final
  pseudo       (--rounds R) python pseudo_label.py --exp <exp> --rounds R --threshold 0 --max-per-class 150,300
                   (class-balanced top-k pseudo-labels; each round retrains every fold with consistency training)
With --supervised the same folds are also trained on the labelled rows alone (train.py's defaults, or
--supervised-args) as the yardstick. Scores per stage: the final-epoch OOF accuracy (few rows: noisy), the
holdout accuracy where the fold file has a holdout, and the public/private leaderboard where the data folder has
test/ and solution.csv, all of the final weights (best.pt's epoch would be chosen on a handful of validation rows;
on the demo at 10 labels per class it lost 0.2-1.9 pp on the private rows). Everything is written under --work
(runs, weights, pseudo-labels, submissions, reports).

    python bench/few_labels_recipe.py --data-dir data/mnist5k_lpc10 --out bench/few_labels_recipe_lpc10.md
    python bench/few_labels_recipe.py --data-dir data/trashnet_l10 --supervised \\
        --train-args="--image-size-px 64" --pretrain-args="--image-size-px 64"
    python bench/few_labels_recipe.py --data-dir DIR --quick --rounds 1   # 1 epoch per stage: checks it runs
"""
import json
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pandas as pd

from bench.kit_vs_notebook import run  # one timed, fail-fast step runner for the benches
from src.core.atomic import write_csv, write_text
from src.core.cli import build_parser, run_main
from src.core.errors import UserError
from src.core.repro import cpu_name
from src.core.tables import markdown_table

SCORES = ("oof_accuracy_final", "holdout_accuracy", "public", "private")


def parse_args():
    parser = build_parser(__doc__)
    parser.add_argument("--data-dir", required=True, help="few-labels competition: train.csv + train/ + unlabeled/")
    parser.add_argument("--exp", default="fewlabels", help="name of the runs (<exp>-ssl, <exp>, <exp>-pl<r>)")
    parser.add_argument("--work", default="bench_out/few_labels_recipe", help="folder for every output")
    parser.add_argument("--unlabeled-dir", default="unlabeled", help="unlabelled image folder inside --data-dir")
    parser.add_argument("--seed", type=int, default=42, help="--seed of every stage")
    parser.add_argument("--no-ssl", action="store_true", help="skip pretraining (the recipe without SSL init)")
    parser.add_argument("--rounds", type=int, default=0,
                        help="class-balanced pseudo-label rounds after consistency training (one earned nothing on "
                             "the demo at 10 labels per class)")
    parser.add_argument("--max-per-class", default="150,300", help="pseudo_label.py --max-per-class")
    parser.add_argument("--supervised", action="store_true", help="also train on the labelled rows alone")
    parser.add_argument("--pretrain-args", default="", help="more pretrain.py flags, one quoted string")
    parser.add_argument("--train-args", default="", help="more train.py flags for every training stage")
    parser.add_argument("--supervised-args", default="", help="more train.py flags for the supervised yardstick")
    parser.add_argument("--pseudo-args", default="", help="more pseudo_label.py flags, one quoted string")
    parser.add_argument("--out", default="", help="write the table here (Markdown) and a .csv beside it")
    parser.add_argument("--quick", action="store_true", help="1 epoch per stage, at most 1 pseudo round: checks it runs")
    return parser.parse_args()


def lb_scores(path: Path) -> dict:
    """The scores infer.py wrote for the run table (<name>_lb.json): public, private, holdout accuracy."""
    if not path.is_file():  # no holdout and no test set: the OOF is all there is
        return {}
    record = json.loads(path.read_text())
    return {k: record.get(k) for k in ("holdout_accuracy", "public", "private")}


def oof_final(run_dir: Path) -> float:
    """Pooled final-epoch OOF accuracy over the run's folds."""
    frame = pd.concat([pd.read_csv(p, dtype=str) for p in sorted(run_dir.glob("fold*/oof_final.csv"))])
    return float((frame["label"] == frame["pred"]).mean())


def trained(args, exp: str, extra: list[str], work: Path) -> tuple[float, dict]:
    """train.py on every fold, then infer.py: wall seconds and scores."""
    py, runs = sys.executable, work / "runs"
    seconds = run([py, "train.py", "--data-dir", args.data_dir, "--exp", exp, "--runs-dir", str(runs), "--fold",
                   "all", "--seed", str(args.seed), "--quiet", "--no-tensorboard", *extra])
    seconds += run([py, "infer.py", "--exp", exp, "--runs-dir", str(runs), "--out-dir", str(work / "submissions"),
                    "--weights", "final", "--quiet"])  # best.pt's epoch is picked on a few validation rows
    return seconds, {"oof_accuracy_final": oof_final(runs / exp), **lb_scores(work / "submissions" / f"{exp}_lb.json")}


def stages(args, work: Path) -> list[dict]:
    quick = ["--epochs", "1"] if args.quick else []
    train_extra = shlex.split(args.train_args) + quick
    semi = ["--unlabeled-dir", args.unlabeled_dir]
    rows = []
    if args.supervised:
        seconds, scores = trained(args, f"{args.exp}-supervised", shlex.split(args.supervised_args) + train_extra, work)
        rows.append({"stage": "supervised (labelled rows only; the yardstick)", "wall_s": seconds, **scores})
    pretrained = []
    if not args.no_ssl:
        weights = work / "pretrained"
        seconds = run([sys.executable, "pretrain.py", "--data-dir", args.data_dir, "--exp", f"{args.exp}-ssl",
                       "--out-dir", str(weights), "--seed", str(args.seed), "--quiet", *semi,
                       *shlex.split(args.pretrain_args), *quick])
        rows.append({"stage": "ssl pretraining (no labels)", "wall_s": seconds})
        pretrained = ["--pretrained", str(weights / f"{args.exp}-ssl" / "backbone.pt")]
    seconds, scores = trained(args, args.exp, ["--config", "configs/fewlabels.yaml", *semi, *pretrained,
                                              *train_extra], work)
    rows.append({"stage": "consistency" + (" (from the SSL init)" if pretrained else ""), "wall_s": seconds, **scores})
    rounds = 1 if args.quick and args.rounds else args.rounds
    if rounds:
        seconds = run([sys.executable, "pseudo_label.py", "--exp", args.exp, "--rounds", str(rounds), "--threshold",
                       "0", "--max-per-class", args.max_per_class, "--runs-dir", str(work / "runs"),
                       "--out-dir", str(work / "pseudo"), "--report-dir", str(work / "reports"),
                       "--submissions-dir", str(work / "submissions"), "--quiet", *semi,
                       *shlex.split(args.pseudo_args)]
                      + (["--retrain-config", str(quick_config(work))] if args.quick else []))
        report = pd.read_csv(work / "reports" / f"pseudo_{args.exp}.csv")
        for _, r in report[report["round"] > 0].iterrows():
            rows.append({"stage": f"pseudo-label round {r['round']} ({r['selected_per_fold']:.0f} per fold)",
                         "wall_s": seconds / rounds, **{k: r.get(k) for k in SCORES}})
    return rows


def stage_table(rows: list[dict], supervised: bool) -> pd.DataFrame:
    """The report's table: each stage's scores, wall seconds and the recipe's minutes so far; the supervised
    yardstick (the first row when run) is not part of the recipe, so it has no running total and adds to none."""
    table = pd.DataFrame(rows)
    recipe = table.iloc[1:] if supervised else table
    table["cumulative_min"] = recipe["wall_s"].cumsum() / 60
    return table.reindex(columns=["stage", *SCORES, "wall_s", "cumulative_min"]).dropna(axis=1, how="all")


def quick_config(work: Path) -> Path:
    """One epoch for the pseudo rounds' retraining in --quick (the rounds otherwise keep the stage's config)."""
    path = work / "quick_retrain.yaml"
    path.write_text("epochs: 1\n")
    return path


def main() -> None:
    args = parse_args()
    if not (Path(args.data_dir) / "train.csv").is_file():
        raise UserError(f"{args.data_dir}: no train.csv (bench/few_labels.py or prepare_demo.py "
                        f"--labels-per-class N makes a few-labels competition)")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    table = stage_table(stages(args, work), args.supervised)
    text = (f"# Few-labels recipe: {args.data_dir}\n\nseed {args.seed}; machine: {cpu_name()}; the whole sitting "
            f"{time.perf_counter() - start:.0f} s; `cumulative_min` is the recipe's time so far (the supervised "
            f"yardstick not counted).\n\n{markdown_table(table, 4)}\n")
    print(text)
    if args.out:
        write_text(Path(args.out), text)
        write_csv(Path(args.out).with_suffix(".csv"), table)


if __name__ == "__main__":
    run_main(main)
