"""The kit against the notebook baseline on the same folds and seeds, run side by side in one sitting.

For each seed: bench/notebook_baseline.py, then train.py with the kit's config, each on the same fold file,
timed as the user would run them (a fresh process each, decoding included). Reports pooled OOF accuracy
(and EER on binary tasks) per arm as mean ± std over seeds, the per-fold mean ± std over folds x seeds,
wall time, and the kit's gain in percentage points and its time as a ratio of the notebook's.

    python bench/kit_vs_notebook.py --data-dir ../shared/datasets/hymenoptera --kit-config configs/photo.yaml \\
        --seeds 42,43 --notebook-args="--image-size-px 64" --out bench/kit_vs_notebook_hymenoptera.md
    python bench/kit_vs_notebook.py --data-dir DIR --quick   # 1 epoch each, 2 folds: checks the bench runs
"""
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import pandas as pd

from src.core.atomic import write_csv, write_text
from src.core.cli import build_parser, run_main
from src.core.errors import UserError
from src.core.metrics import compute_metrics
from src.core.rundir import oof_arrays
from src.core.tables import markdown_table

REPO = Path(__file__).resolve().parent.parent
QUICK_ARGS = {"notebook": ["--quick"], "kit": ["--epochs", "1", "--fold", "0,1"]}


def parse_args():
    parser = build_parser(__doc__)
    parser.add_argument("--data-dir", required=True, help="competition folder (train.csv + train/)")
    parser.add_argument("--folds-csv", default="", help="fold file for both arms (default: train.py's)")
    parser.add_argument("--kit-config", default="", help="train.py --config FILE for the kit's arm")
    parser.add_argument("--kit-args", default="", help="more train.py flags, one quoted string")
    parser.add_argument("--notebook-args", default="", help="more notebook_baseline.py flags, one quoted string")
    parser.add_argument("--seeds", default="42", help="comma list; each seed runs both arms")
    parser.add_argument("--cache-dir", default="", help="train.py --cache-dir (default: train.py's)")
    parser.add_argument("--out", default="", help="write the table here (Markdown) and a .csv beside it")
    parser.add_argument("--quick", action="store_true", help="1 epoch per arm on 2 folds: checks the bench runs")
    return parser.parse_args()


def run(cmd: list[str]) -> float:
    """Run one arm; its wall seconds. A failing arm stops the bench with its last error line."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if proc.returncode:
        last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise UserError(f"{Path(cmd[1]).name} failed (exit {proc.returncode}): {last}")
    return time.perf_counter() - start


def read_oof_csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"id": str, "label": str, "pred": str})


def scored(oof: pd.DataFrame, classes: list[str]) -> tuple[dict, list[float]]:
    """Pooled OOF metrics and each fold's accuracy."""
    y, probs = oof_arrays(oof, classes)
    per_fold = [compute_metrics(*oof_arrays(part, classes))["accuracy"] for _, part in oof.groupby("fold")]
    return compute_metrics(y, probs), per_fold


def notebook_arm(args, seed: int, work: Path) -> tuple[float, pd.DataFrame]:
    out = work / f"notebook_s{seed}.md"
    cmd = [sys.executable, "bench/notebook_baseline.py", "--data-dir", args.data_dir, "--seed", str(seed),
           "--out", str(out), "--quiet", *shlex.split(args.notebook_args)]
    cmd += ["--folds-csv", args.folds_csv] if args.folds_csv else []
    seconds = run(cmd + (QUICK_ARGS["notebook"] if args.quick else []))
    return seconds, read_oof_csv(out.with_name(f"{out.stem}_oof.csv"))


def kit_arm(args, seed: int, work: Path) -> tuple[float, pd.DataFrame]:
    cmd = [sys.executable, "train.py", "--data-dir", args.data_dir, "--seed", str(seed), "--runs-dir",
           str(work / "runs"), "--exp", f"kit_s{seed}", "--quiet", "--no-tensorboard"]
    cmd += ["--config", args.kit_config] if args.kit_config else []
    cmd += ["--folds-csv", args.folds_csv] if args.folds_csv else []
    cmd += ["--cache-dir", args.cache_dir] if args.cache_dir else []
    cmd += shlex.split(args.kit_args) + (QUICK_ARGS["kit"] if args.quick else ["--fold", "all"])
    seconds = run(cmd)
    oof = pd.concat([read_oof_csv(p) for p in sorted((work / "runs" / f"kit_s{seed}").glob("fold*/oof.csv"))])
    return seconds, oof


def summary(rows: list[dict]) -> pd.DataFrame:
    """Per arm: mean ± std over seeds of the pooled OOF metrics, folds x seeds spread, wall time."""
    table = pd.DataFrame(rows)
    out = []
    for arm, part in table.groupby("arm", sort=False):
        folds = np.concatenate(part["fold_accuracies"].to_list())
        row = {"arm": arm, "seeds": len(part),
               "pooled OOF accuracy": f"{part['accuracy'].mean():.4f} ± {part['accuracy'].std(ddof=1):.4f}"
               if len(part) > 1 else f"{part['accuracy'].mean():.4f}",
               "fold accuracy (folds x seeds)": f"{folds.mean():.4f} ± {folds.std(ddof=1):.4f}",
               "wall s (mean)": f"{part['wall_s'].mean():.0f}"}
        if "eer" in part:
            row["pooled EER"] = f"{part['eer'].mean():.4f}"
        out.append(row)
    return pd.DataFrame(out)


def main() -> None:
    args = parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="kit_vs_nb_") as tmp:
        work = Path(tmp)
        for seed in seeds:
            for arm, runner in (("notebook", notebook_arm), ("kit", kit_arm)):
                seconds, oof = runner(args, seed, work)
                classes = [c.removeprefix("prob_") for c in oof.columns if c.startswith("prob_")]
                metrics, per_fold = scored(oof, classes)
                rows.append({"arm": arm, "seed": seed, "wall_s": seconds, "fold_accuracies": per_fold,
                             **{k: metrics[k] for k in ("accuracy", "eer") if k in metrics}})
                print(f"seed {seed} {arm}: pooled OOF accuracy {metrics['accuracy']:.4f}, {seconds:.0f} s",
                      flush=True)
    table = summary(rows)
    runs = pd.DataFrame(rows).drop(columns="fold_accuracies")
    kit, nb = runs[runs.arm == "kit"], runs[runs.arm == "notebook"]
    gain_pp = 100 * (kit["accuracy"].mean() - nb["accuracy"].mean())
    ratio = kit["wall_s"].mean() / nb["wall_s"].mean()
    text = (f"# Kit vs notebook: {Path(args.data_dir).resolve().name}\n\n"
            f"kit: `train.py {'--config ' + args.kit_config if args.kit_config else ''} {args.kit_args}`; notebook: "
            f"`bench/notebook_baseline.py {args.notebook_args}`; seeds {args.seeds}"
            f"{'; --quick: not a measurement' if args.quick else ''}.\n\n{markdown_table(table)}\n\n"
            f"Kit gain: **{gain_pp:+.1f} pp** pooled OOF accuracy at **{ratio:.2f}x** the notebook's wall time.\n")
    print("\n" + text)
    if args.out:
        write_text(Path(args.out).with_suffix(".md"), text)
        write_csv(Path(args.out).with_suffix(".csv"), runs)


if __name__ == "__main__":
    run_main(main)
