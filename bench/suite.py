"""The dev suite: the kit (its defaults, or a config) against the notebook baseline on several data sets of different
kinds, each scored on a holdout split no arm trained, selected or tuned on, in one sitting.

Each set runs bench/kit_vs_notebook.py (same fold file per seed for both arms, each arm a fresh process, timed as
a user would run it). Printed and written per set: the holdout accuracy of both arms (mean ± std over seeds), the
kit's gain in pp (paired per seed) and its seed spread, the wall-time ratio; then the mean over sets.
With --against PREVIOUS.csv (an earlier suite's table, e.g. of the defaults) it also says whether the candidate
may replace it: the mean gain must rise and no set may lose more than its seed spread.

Sets (a name=DIR in --set points one elsewhere; missing built sets are built first, never committed):
- demo: the demo digits (prepare_demo.py; 4,000 labelled 28 px grey digits, 10 classes);
- greycrops: 24 px grey odd/even crops with 2 % flipped labels (bench/grey_crops.py);
- hymenoptera: 245 photos, ants / bees (../shared/datasets/hymenoptera), at 64 px;
- trashnet: 2,521 photos of waste, 6 classes (../shared/datasets/trashnet), at 64 px.

    python bench/suite.py --seeds 42,43 --out bench/suite_defaults.md
    python bench/suite.py --kit-args="--augment-fill zeros" --against bench/suite_defaults.csv --out bench/suite_zeros.md
    python bench/suite.py --build-only                       # build the missing sets (demo, greycrops) and stop
    python bench/suite.py --quick --set hymenoptera=DIR ...   # 2 folds, 1 epoch: checks the suite runs
"""
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pandas as pd

from src.core.atomic import write_csv, write_text
from src.core.cli import build_parser, run_main
from src.core.errors import UserError
from src.core.repro import cpu_name
from src.core.tables import markdown_table

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "datasets"
PHOTO = ["--image-size-px", "64"]
# name: (default folder, how to build it when missing, kit flags, notebook flags, kind)
SETS = {
    "demo": ("mnist5k", ["prepare_demo.py", "--out-dir"], [], ["--no-flip"], "grey digits, 10 classes"),
    "greycrops": ("greycrops", ["bench/grey_crops.py", "--out-dir"], [], ["--no-flip"], "grey crops, 2 classes"),
    "hymenoptera": (str(SHARED / "hymenoptera"), None, PHOTO, PHOTO, "photos, 2 classes"),
    "trashnet": (str(SHARED / "trashnet"), None, PHOTO, PHOTO, "photos, 6 classes"),
}


def parse_args():
    parser = build_parser(__doc__)
    parser.add_argument("--sets", default=",".join(SETS), help=f"comma list of {', '.join(SETS)}")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=DIR", help="a set's data folder")
    parser.add_argument("--data-root", default="data", help="where the built sets (demo, greycrops) live")
    parser.add_argument("--seeds", default="42,43", help="comma list; each seed runs both arms on every set")
    parser.add_argument("--n-folds", type=int, default=5, help="folds of each seed's fold file")
    parser.add_argument("--holdout", type=float, default=0.2, help="holdout share of each seed's fold file")
    parser.add_argument("--split-seed", type=int, default=None,
                        help="one fold file per set made with this seed, shared by every seed (which then varies "
                             "training only): choose on its CV rows, judge on its holdout (default: one per seed)")
    parser.add_argument("--kit-config", default="", help="train.py --config FILE for the kit's arm on every set")
    parser.add_argument("--kit-args", default="", help="more train.py flags on every set, one quoted string")
    parser.add_argument("--against", default="", help="an earlier suite .csv to judge this candidate against")
    parser.add_argument("--out", default="", help="write the table here (Markdown) and a .csv beside it")
    parser.add_argument("--build-only", action="store_true", help="build the missing sets, then stop")
    parser.add_argument("--quick", action="store_true", help="2 folds, 1 epoch per arm: checks the suite runs")
    return parser.parse_args()


def data_dirs(args) -> dict[str, Path]:
    """Each chosen set's folder: --set NAME=DIR, else its default (built sets under --data-root)."""
    chosen = [s for s in args.sets.split(",") if s]
    unknown = [s for s in chosen if s not in SETS]
    if unknown:
        raise UserError(f"--sets: unknown set {unknown[0]!r}; choose from {', '.join(SETS)}")
    given = {}
    for item in args.set:
        name, sep, folder = item.partition("=")
        if not sep or name not in SETS:
            raise UserError(f"--set {item!r}: give NAME=DIR with NAME one of {', '.join(SETS)}")
        given[name] = Path(folder)
    dirs = {}
    for name in chosen:
        folder, builder = SETS[name][0], SETS[name][1]
        dirs[name] = given.get(name) or (Path(args.data_root) / folder if builder else Path(folder))
    return dirs


def ensure_built(name: str, folder: Path) -> None:
    """Build a missing built set (demo, greycrops); a missing shared set is a one-line error."""
    if (folder / "train.csv").is_file():
        return
    builder = SETS[name][1]
    if builder is None:
        raise UserError(f"{folder}: no train.csv for set {name!r}; point --set {name}=DIR at it or drop it from "
                        f"--sets")
    proc = subprocess.run([sys.executable, *builder, str(folder)], cwd=REPO, capture_output=True, text=True)
    if proc.returncode:
        raise UserError(f"building {name} in {folder} failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")


def run_set(args, name: str, folder: Path, work: Path) -> pd.DataFrame:
    """kit_vs_notebook.py on one set; its per-seed rows (arm, seed, wall_s, holdout_accuracy, ...). With --out its
    own table (per seed: holdout, final-epoch and best.pt OOF, times) is kept beside it as <out>_<set>.md/.csv."""
    _, _, kit, notebook, _ = SETS[name]
    out = Path(args.out).with_name(f"{Path(args.out).stem}_{name}.md") if args.out else work / f"{name}.md"
    cmd = [sys.executable, "bench/kit_vs_notebook.py", "--data-dir", str(folder.resolve()), "--seeds", args.seeds,
           "--n-folds", str(args.n_folds), "--holdout", str(args.holdout), "--out", str(out),
           f"--kit-args={' '.join(kit + ([args.kit_args] if args.kit_args else []))}",
           f"--notebook-args={' '.join(notebook)}", "--cache-dir", str(work / "cache")]
    cmd += [] if args.split_seed is None else ["--split-seed", str(args.split_seed)]
    cmd += (["--kit-config", str(Path(args.kit_config).resolve())] if args.kit_config else [])
    cmd += ["--quick"] if args.quick else []
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if proc.returncode:
        raise UserError(f"set {name}: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")
    return pd.read_csv(out.with_suffix(".csv"))


def set_row(name: str, runs: pd.DataFrame) -> dict:
    """One set's line: both arms' holdout accuracy, the paired gain and its spread, the time ratio."""
    kit, nb = (runs[runs.arm == a].set_index("seed") for a in ("kit", "notebook"))
    gains = 100 * (kit["holdout_accuracy"] - nb["holdout_accuracy"])
    spread = 100 * max(kit["holdout_accuracy"].std(ddof=1), nb["holdout_accuracy"].std(ddof=1)) \
        if len(gains) > 1 else float("nan")
    return {"set": name, "kind": SETS[name][4], "holdout rows": int(kit["n_holdout"].iloc[0]), "seeds": len(gains),
            "notebook": nb["holdout_accuracy"].mean(), "kit": kit["holdout_accuracy"].mean(),
            "gain pp": gains.mean(), "gain per seed": " / ".join(f"{g:+.1f}" for g in gains),
            "seed spread pp": spread, "time ratio": kit["wall_s"].mean() / nb["wall_s"].mean(),
            "notebook s": nb["wall_s"].mean(), "kit s": kit["wall_s"].mean()}


def split_text(args) -> str:
    if args.split_seed is None:
        return f"a {args.holdout:g} holdout per seed"
    return f"one {args.holdout:g} holdout per set for every seed, made with seed {args.split_seed}"


def with_mean(table: pd.DataFrame) -> pd.DataFrame:
    mean = {"set": "mean over sets", **{c: table[c].mean() for c in ("notebook", "kit", "gain pp", "time ratio")}}
    return pd.concat([table, pd.DataFrame([mean])], ignore_index=True)


def readable(table: pd.DataFrame) -> pd.DataFrame:
    """Counts and seconds as whole numbers, gains to 0.1 pp, ratios to 0.01 (the CSV keeps every digit)."""
    shown = table.copy()
    for column, fmt in (("holdout rows", "{:.0f}"), ("seeds", "{:.0f}"), ("notebook s", "{:.0f}"), ("kit s", "{:.0f}"),
                        ("gain pp", "{:+.1f}"), ("seed spread pp", "{:.1f}"), ("time ratio", "{:.2f}")):
        shown[column] = shown[column].map(lambda v, f=fmt: "" if pd.isna(v) else f.format(v))
    return shown


def judged(table: pd.DataFrame, before: pd.DataFrame) -> str:
    """Whether this candidate may replace the earlier one: the mean gain rises, no set loses beyond its spread."""
    before = before[before["set"] != "mean over sets"].set_index("set")
    now = table[table["set"] != "mean over sets"].set_index("set")
    common = [s for s in now.index if s in before.index]
    if not common:
        return "--against: no set in common with this run; nothing judged."
    delta = 100 * (now.loc[common, "kit"] - before.loc[common, "kit"])
    # One seed has no spread: any loss then counts (a single run cannot show that a loss is noise).
    spread = pd.concat([now.loc[common, "seed spread pp"], before.loc[common, "seed spread pp"]],
                       axis=1).max(axis=1).fillna(0.0)
    losers = [s for s in common if delta[s] < -spread[s]]
    rises = now.loc[common, "gain pp"].mean() > before.loc[common, "gain pp"].mean()
    per_set = ", ".join(f"{s} {delta[s]:+.1f} pp (spread {spread[s]:.1f})" for s in common)
    verdict = "may replace it" if rises and not losers else "may NOT replace it"
    why = [] if rises else ["the mean gain does not rise"]
    why += [f"{s} loses more than its seed spread" for s in losers]
    return f"Against the earlier run, per set: {per_set}. The candidate {verdict}" + \
        (f" ({'; '.join(why)})." if why else ".")


def main() -> None:
    args = parse_args()
    dirs = data_dirs(args)
    for name, folder in dirs.items():  # every set is there before the first one is timed
        ensure_built(name, folder)
    if args.build_only:
        print("\n".join(f"{name}: {folder}" for name, folder in dirs.items()))
        return
    start, rows = time.perf_counter(), []
    with tempfile.TemporaryDirectory(prefix="kit_suite_") as tmp:
        for name, folder in dirs.items():
            set_start = time.perf_counter()
            rows.append(set_row(name, run_set(args, name, folder, Path(tmp))))
            print(f"{name}: notebook {rows[-1]['notebook']:.4f}, kit {rows[-1]['kit']:.4f} "
                  f"({rows[-1]['gain pp']:+.1f} pp) at {rows[-1]['time ratio']:.2f}x, "
                  f"{time.perf_counter() - set_start:.0f} s", flush=True)
    table = with_mean(pd.DataFrame(rows))
    kit = f"train.py {'--config ' + args.kit_config if args.kit_config else '(defaults)'} {args.kit_args}".strip()
    wins = int((table["gain pp"].iloc[:-1] > 0).sum())
    text = (f"# Dev suite: {kit} vs bench/notebook_baseline.py\n\n"
            f"Holdout accuracy ({split_text(args)}, {args.n_folds} folds; kit: the fold ensemble "
            f"with TTA as infer.py submits; notebook: its fold models' mean), seeds {args.seeds}"
            f"{'; --quick: not a measurement' if args.quick else ''}. Machine: {cpu_name()} ({platform.machine()}); "
            f"the whole sitting {time.perf_counter() - start:.0f} s.\n\n{markdown_table(readable(table), digits=4)}\n\n"
            f"The kit wins on {wins} of {len(rows)} sets; mean gain {table['gain pp'].iloc[-1]:+.2f} pp at "
            f"{table['time ratio'].iloc[-1]:.2f}x the notebook's wall time.\n")
    if args.against:
        text += "\n" + judged(table, pd.read_csv(args.against)) + "\n"
    print("\n" + text)
    if args.out:
        write_text(Path(args.out).with_suffix(".md"), text)
        write_csv(Path(args.out).with_suffix(".csv"), table)


if __name__ == "__main__":
    run_main(main)
