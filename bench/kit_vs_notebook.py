"""The kit against the notebook baseline, like for like: both scored on the same holdout rows, in one sitting.

For each seed a fold file with a holdout is made (make_folds.py --seed S --holdout H; or --folds-csv, which must
have one), then, each timed as the user would run it (a fresh process, decoding included):
- notebook: bench/notebook_baseline.py, its fold models' final weights averaged on the holdout;
- kit: train.py --fold all, then infer.py --holdout-only (the fold ensemble with TTA, as a submission is made).
With --test (a data folder with test/, sample_submission.csv and solution.csv) both arms also predict the test set
the same way and are scored on all its rows.
Reported per arm, mean ± std over seeds: the **holdout** accuracy (no arm trained, selected or tuned on those rows),
the final-epoch OOF accuracy of both arms, and the kit's best.pt OOF (optimistic: each fold's epoch was picked on
its validation rows; shown, never compared); wall time; the kit's holdout gain in pp, paired per seed, and its time
as a ratio of the notebook's.

    python bench/kit_vs_notebook.py --data-dir ../shared/datasets/hymenoptera --seeds 42,43,44 \\
        --notebook-args="--image-size-px 64" --kit-args="--image-size-px 64" --out bench/kit_vs_notebook_hym.md
    python bench/kit_vs_notebook.py --data-dir DIR --quick   # 2 folds, 1 epoch each: checks the bench runs
"""
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pandas as pd

from src.core.atomic import write_csv, write_text
from src.core.cli import add_table_flags, build_parser, run_main
from src.core.errors import UserError
from src.core.metrics import compute_metrics
from src.core.repro import cpu_name
from src.core.rundir import oof_arrays
from src.core.tables import markdown_table
from src.infer.submission import read_solution

REPO = Path(__file__).resolve().parent.parent
QUICK_ARGS = {"notebook": ["--quick"], "kit": ["--epochs", "1"]}
DATA_FLAGS = ("train_csv", "image_dir", "id_col", "label_col")


def parse_args():
    parser = build_parser(__doc__)
    parser.add_argument("--data-dir", required=True, help="competition folder (train.csv + train/)")
    add_table_flags(parser)
    parser.add_argument("--folds-csv", default="", help="one fold file with a holdout for every seed (default: "
                                                        "make_folds.py --holdout H --seed S per seed)")
    parser.add_argument("--holdout", type=float, default=0.2, help="holdout share of the fold files made per seed")
    parser.add_argument("--split-seed", type=int, default=None,
                        help="make ONE fold file, with this seed, for every seed: the holdout and folds stay put and "
                             "the seeds vary training only, so a recipe chosen on that file's CV rows can be judged "
                             "on its holdout (default: a fold file per seed)")
    parser.add_argument("--n-folds", type=int, default=5, help="folds of the fold files made per seed")
    parser.add_argument("--kit-config", default="", help="train.py --config FILE for the kit's arm")
    parser.add_argument("--kit-args", default="", help="more train.py flags, one quoted string")
    parser.add_argument("--tta", default="auto", help="infer.py --tta for the kit's holdout predictions")
    parser.add_argument("--notebook-args", default="", help="more notebook_baseline.py flags, one quoted string")
    parser.add_argument("--seeds", default="42", help="comma list; each seed runs both arms")
    parser.add_argument("--cache-dir", default="", help="train.py --cache-dir (default: train.py's)")
    parser.add_argument("--out", default="", help="write the table here (Markdown) and a .csv beside it")
    parser.add_argument("--test", action="store_true", help="also score both arms on the data folder's test set "
                                                             "(test/, sample_submission.csv, solution.csv)")
    parser.add_argument("--quick", action="store_true", help="2 folds, 1 epoch per arm: checks the bench runs")
    return parser.parse_args()


def run(cmd: list[str]) -> float:
    """Run one step; its wall seconds. A failing step stops the bench with its last error line."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if proc.returncode:
        last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise UserError(f"{Path(cmd[1]).name} failed (exit {proc.returncode}): {last}")
    return time.perf_counter() - start


def data_flags(args) -> list[str]:
    return ["--data-dir", args.data_dir] + [x for k in DATA_FLAGS for x in (f"--{k.replace('_', '-')}", getattr(args, k))]


def fold_file(args, seed: int, work: Path) -> Path:
    """The seed's fold file: --folds-csv, or a new one with a holdout (shared by both arms, not timed)."""
    if args.folds_csv:
        path = Path(args.folds_csv)
        if "holdout" not in set(pd.read_csv(path, dtype=str)["fold"]):
            raise UserError(f"{path}: no holdout rows; both arms are scored there (make_folds.py --holdout 0.2)")
        return path
    seed = seed if args.split_seed is None else args.split_seed
    path = work / f"folds_s{seed}.csv"
    if path.is_file():  # --split-seed: made for the first seed already
        return path
    run([sys.executable, "make_folds.py", *data_flags(args), "--seed", str(seed), "--holdout", str(args.holdout),
         "--n-folds", str(2 if args.quick else args.n_folds), "--out", str(path), "--quiet"]
        + (["--cache-dir", args.cache_dir] if args.cache_dir else []))
    return path


def read_probs(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"id": str, "label": str, "pred": str, "fold": str})


def notebook_arm(args, seed: int, folds: Path, work: Path) -> tuple[float, dict]:
    out = work / f"notebook_s{seed}.md"
    cmd = [sys.executable, "bench/notebook_baseline.py", *data_flags(args), "--folds-csv", str(folds),
           "--seed", str(seed), "--out", str(out), "--quiet", *shlex.split(args.notebook_args)]
    seconds = run(cmd + (QUICK_ARGS["notebook"] if args.quick else []) + (["--test"] if args.test else []))
    frames = {"holdout": read_probs(out.with_name(f"{out.stem}_holdout.csv")),
              "oof_final": read_probs(out.with_name(f"{out.stem}_oof.csv"))}
    if args.test:
        frames["test"] = with_truth(read_probs(out.with_name(f"{out.stem}_test.csv")), args)
    return seconds, frames


def kit_arm(args, seed: int, folds: Path, work: Path) -> tuple[float, dict]:
    exp, runs = f"kit_s{seed}", work / "runs"
    cmd = [sys.executable, "train.py", *data_flags(args), "--folds-csv", str(folds), "--seed", str(seed),
           "--runs-dir", str(runs), "--exp", exp, "--quiet", "--no-tensorboard", "--fold", "all"]
    cmd += ["--config", args.kit_config] if args.kit_config else []
    cmd += ["--cache-dir", args.cache_dir] if args.cache_dir else []
    cmd += shlex.split(args.kit_args) + (QUICK_ARGS["kit"] if args.quick else [])
    infer = [sys.executable, "infer.py", "--exp", exp, "--runs-dir", str(runs), "--tta", args.tta, "--name", exp,
             "--out-dir", str(work / "subs"), "--quiet"] + ([] if args.test else ["--holdout-only"])
    seconds = run(cmd) + run(infer)
    folders = sorted((runs / exp).glob("fold*"))
    frames = {"holdout": read_probs(work / "subs" / f"{exp}_holdout_probs.csv"),
              "oof_final": pd.concat([read_probs(p / "oof_final.csv") for p in folders]),
              "oof_best": pd.concat([read_probs(p / "oof.csv") for p in folders])}
    if args.test:
        frames["test"] = with_truth(read_probs(work / "subs" / f"{exp}_test_probs.csv"), args)
    return seconds, frames


def with_truth(probs: pd.DataFrame, args) -> pd.DataFrame:
    """Test probabilities (first column: the sample submission's id) with the solution's label beside them."""
    solution = read_solution(Path(args.data_dir) / "solution.csv")
    id_col, label_col = solution.columns[0], solution.columns[1]
    probs = probs.rename(columns={probs.columns[0]: id_col}).astype({id_col: str})
    truth = solution[[id_col, label_col]].rename(columns={label_col: "label"}).astype(str)
    merged = probs.merge(truth, on=id_col, how="left", validate="one_to_one")
    missing = merged[id_col][merged["label"].isna()]
    if len(missing):
        raise UserError(f"{args.data_dir}/solution.csv: no label for test id {missing.iloc[0]!r}")
    return merged


def scored(frames: dict) -> dict:
    """Accuracy (and EER on binary tasks) of each prediction set: holdout, oof_final, oof_best."""
    out = {}
    for name, frame in frames.items():
        classes = [c.removeprefix("prob_") for c in frame.columns if c.startswith("prob_")]
        metrics = compute_metrics(*oof_arrays(frame, classes))
        out.update({f"{name}_{k}": metrics[k] for k in ("accuracy", "eer") if k in metrics})
    return out


def mean_std(values: pd.Series) -> str:
    values = values.dropna()
    if values.empty:
        return ""
    return f"{values.mean():.4f} ± {values.std(ddof=1):.4f}" if len(values) > 1 else f"{values.mean():.4f}"


def summary(runs: pd.DataFrame) -> pd.DataFrame:
    """Per arm over seeds: the holdout, both arms' final-epoch OOF, the kit's best.pt OOF, wall time."""
    out = []
    for arm, part in runs.groupby("arm", sort=False):
        row = {"arm": arm, "seeds": len(part), "holdout accuracy": mean_std(part["holdout_accuracy"]),
               **({"test accuracy": mean_std(part["test_accuracy"])} if "test_accuracy" in part else {}),
               "final-epoch OOF accuracy": mean_std(part["oof_final_accuracy"]),
               "best.pt OOF accuracy (optimistic, not compared)": mean_std(part.get("oof_best_accuracy", pd.Series()))}
        if "holdout_eer" in part:
            row["holdout EER"] = mean_std(part["holdout_eer"])
        row["wall s per run"] = f"{part['wall_s'].mean():.0f}"
        out.append(row)
    return pd.DataFrame(out)


def verdict(runs: pd.DataFrame) -> str:
    kit, nb = (runs[runs.arm == a].set_index("seed") for a in ("kit", "notebook"))
    gains = 100 * (kit["holdout_accuracy"] - nb["holdout_accuracy"])
    oof = 100 * (kit["oof_final_accuracy"].mean() - nb["oof_final_accuracy"].mean())
    ratio = kit["wall_s"].mean() / nb["wall_s"].mean()
    per_seed = ", ".join(f"{g:+.1f}" for g in gains)
    test = ""
    if "test_accuracy" in kit:
        tests = 100 * (kit["test_accuracy"] - nb["test_accuracy"])
        test = f"; on the test set {tests.mean():+.1f} pp (per seed {', '.join(f'{g:+.1f}' for g in tests)})"
    return (f"Kit gain on the holdout: **{gains.mean():+.1f} pp** (per seed {per_seed}) at **{ratio:.2f}x** the "
            f"notebook's wall time{test}; on the final-epoch OOF {oof:+.1f} pp.")


def main() -> None:
    args = parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    rows, start = [], time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="kit_vs_nb_") as tmp:
        work = Path(tmp)
        for seed in seeds:
            folds = fold_file(args, seed, work)
            for arm, runner in (("notebook", notebook_arm), ("kit", kit_arm)):
                seconds, frames = runner(args, seed, folds, work)
                rows.append({"arm": arm, "seed": seed, "wall_s": seconds, "n_holdout": len(frames["holdout"]),
                             **({"n_test": len(frames["test"])} if "test" in frames else {}), **scored(frames)})
                print(f"seed {seed} {arm}: holdout accuracy {rows[-1]['holdout_accuracy']:.4f} "
                      f"({rows[-1]['n_holdout']} rows), final-epoch OOF {rows[-1]['oof_final_accuracy']:.4f}, "
                      f"{seconds:.0f} s", flush=True)
    runs = pd.DataFrame(rows)
    holdout = f"the fold file's holdout ({args.folds_csv})" if args.folds_csv else \
        f"a {args.holdout:g} holdout per seed (make_folds.py --seed S --holdout {args.holdout:g})" \
        if args.split_seed is None else \
        f"one {args.holdout:g} holdout for every seed (make_folds.py --seed {args.split_seed} --holdout {args.holdout:g})"
    text = (f"# Kit vs notebook: {Path(args.data_dir).resolve().name}\n\n"
            f"kit: `train.py {'--config ' + args.kit_config if args.kit_config else ''} {args.kit_args}` + "
            f"`infer.py{'' if args.test else ' --holdout-only'} --tta {args.tta}`; notebook: `bench/notebook_baseline.py {args.notebook_args}`; "
            f"seeds {args.seeds}; scored on {holdout}, {int(runs['n_holdout'].iloc[0])} rows"
            f"{f', and the test set, {int(runs.n_test.iloc[0])} rows' if args.test else ''}"
            f"{'; --quick: not a measurement' if args.quick else ''}. Machine: {cpu_name()} ({platform.machine()}); "
            f"the whole sitting {time.perf_counter() - start:.0f} s.\n\n{markdown_table(summary(runs))}\n\n"
            f"{verdict(runs)}\n")
    print("\n" + text)
    if args.out:
        write_text(Path(args.out).with_suffix(".md"), text)
        write_csv(Path(args.out).with_suffix(".csv"), runs)


if __name__ == "__main__":
    run_main(main)
