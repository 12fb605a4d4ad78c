"""ablate.py's plan: arms that differ in one thing, trained on the same folds and seeds as independent,
resumable train.py jobs.

An arm is a set of extra train.py flags plus a TTA setting. Arms with the same training flags share
their training runs (a TTA arm only changes inference). Each (regime, training flags, seed) is one
train.py experiment named after the arm, the seed and a hash of its flags and of the files they point to,
so editing an arm's flags or one of its files starts a new experiment instead of silently reusing an old one.
"""
from __future__ import annotations

import hashlib
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from src.compare.spec import AblationSpec, Arm
from src.core.config import load_config_file
from src.core.errors import UserError
from src.core.repro import REPO
from src.core.rundir import fold_dir, fold_finished
from src.data.contract import read_train_table
from src.data.folds import fold_file_candidates, parse_fold_arg
from src.data.holdout import HOLDOUT_LABEL


@dataclass
class Regime:
    """One data set the arms are compared on: the demo at N labels per class, or the given data_dir."""

    name: str  # lpc10, lpc50, all, or the data folder's name
    data_dir: str
    labels_per_class: int  # 0 = every label (or not a demo regime)
    train: str  # extra train.py flags for this regime
    seeds: list[int]
    folds: str  # 'all' or a list like 0,1,2


def regimes(spec: AblationSpec) -> list[Regime]:
    if not spec.labels_per_class:
        return [Regime(Path(spec.data_dir).name, spec.data_dir, 0, "", spec.seeds, spec.folds)]
    out = []
    for value in spec.labels_per_class:
        n = 0 if value == "all" else int(value)
        folder = spec.data_dir + (f"_lpc{n}" if n else "")
        out.append(Regime(f"lpc{value}", folder, n, spec.regime_train.get(value, ""),
                          spec.regime_seeds.get(value, spec.seeds), spec.regime_folds.get(value, spec.folds)))
    return out


@dataclass
class Run:
    """One train.py experiment: a regime, the training flags of one or more arms, and a seed."""

    regime: Regime
    seed: int
    exp: str  # named after the first arm with these training flags
    args: list[str]  # train.py arguments without --fold


def fill(text: str, regime: Regime) -> str:
    """Arm flags may name per-regime folders: {lpc} becomes 10, 50 or all (e.g. synthetic/gen-lpc{lpc})."""
    return text.replace("{lpc}", str(regime.labels_per_class or "all"))


def train_flags(spec: AblationSpec, arm: Arm, regime: Regime) -> list[str]:
    return shlex.split(fill(" ".join([spec.train, regime.train, arm.train]), regime))


# train.py flags (and config-file keys) that point at files whose contents change what a run learns.
FILE_FLAGS = ("--config", "--pretrained", "--synthetic", "--pseudo", "--folds-csv")
# What train.py reads from a sample or pseudo-label folder (the folder itself or its fold<k>/ folders): the
# row tables and their meta.json. Not the images they list (a new image set comes with a new manifest), nor
# what else lives there and changes on its own (a generator's last.pt and log, CAS runs).
FOLDER_FILES = ("manifest.csv", "pseudo.csv", "meta.json")


def flag_values(flags: list[str], names: tuple[str, ...]) -> list[str]:
    """The values given to `names` in a train.py argument list (`--x v` or `--x=v`)."""
    values = []
    for i, flag in enumerate(flags):
        name, _, inline = flag.partition("=")
        if name in names:
            values.append(inline if inline else flags[i + 1] if i + 1 < len(flags) else "")
    return values


def content_digest(path: Path) -> str:
    """sha256 of a file, or of a folder's identifying files (relative name + bytes); 'missing' if absent."""
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(f for folder in [path, *sorted(path.glob("fold*"))]
                                                 for name in FOLDER_FILES if (f := folder / name).is_file())
    if not files:
        return "missing"
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode() + b"\0")
        digest.update(file.read_bytes())
    return digest.hexdigest()


def referenced_files_digest(flags: list[str]) -> str:
    """One digest over every file a run's flags point to (and the files its --config YAML points to), so a
    changed config, backbone, sample or pseudo-label folder makes a new experiment instead of reusing the
    finished runs made from the old one. Empty when the flags point to no file."""
    paths = [Path(v) for v in flag_values(flags, FILE_FLAGS) if v]
    for config in flag_values(flags, ("--config",)):
        try:
            values = load_config_file(config)
        except UserError:  # train.py reports an unreadable config when it runs
            continue
        paths += [Path(str(values[k])) for k in ("pretrained", "synthetic", "pseudo", "folds_csv") if values.get(k)]
    return "".join(f"{p}={content_digest(p)};" for p in paths)


def plan_runs(spec: AblationSpec) -> dict[tuple[str, str, int], Run]:
    """(regime, arm, seed) -> the Run that trains it; arms with equal training flags share Runs."""
    plan = {}
    for regime in regimes(spec):
        first_with = {}
        for arm in spec.arms:
            flags = train_flags(spec, arm, regime)
            key = shlex.join(flags)
            owner = first_with.setdefault(key, arm.name)
            referenced = referenced_files_digest(flags)
            identity = f"{regime.data_dir}\0{key}" + (f"\0{referenced}" if referenced else "")
            digest = hashlib.sha256(identity.encode()).hexdigest()[:6]
            for seed in regime.seeds:
                exp = f"abl-{spec.name}-{regime.name}-{owner}-s{seed}-{digest}"
                args = [*flags, "--data-dir", regime.data_dir, "--runs-dir", spec.runs_dir, "--exp", exp,
                        "--seed", str(seed)]
                plan[(regime.name, arm.name, seed)] = Run(regime, seed, exp, args)
    return plan


def unique_runs(plan: dict) -> list[Run]:
    return list({run.exp: run for run in plan.values()}.values())


def run_fold_finished(run: Run, runs_dir: str, k: int) -> bool:
    return fold_finished(fold_dir(runs_dir, run.exp, k))


# train.py flags that say where a data set's labels are; make_folds.py takes the same ones.
TABLE_FLAGS = ("--train-csv", "--image-dir", "--id-col", "--label-col")


def table_flags(flags: list[str]) -> list[str]:
    """The TABLE_FLAGS (with values) among a run's train.py flags, for make_folds.py."""
    return [part for name in TABLE_FLAGS for value in flag_values(flags, (name,))[-1:] for part in (name, value)]


def regime_fold_file(data_dir: str, flags: list[str]) -> Path | None:
    """A fold file make_folds.py wrote for this data (read with the run's table flags), or None when there is
    none yet or the data is not prepared yet: then prepare_commands makes one."""
    values = dict(zip(TABLE_FLAGS, ("train.csv", "train", "image", "label")))
    values.update({name: v[-1] for name in TABLE_FLAGS if (v := flag_values(flags, (name,)))})
    try:
        table = read_train_table(data_dir, *values.values())
    except UserError:
        return None
    found = fold_file_candidates("folds", data_dir, table)
    return found[0] if found else None  # several: train.py asks the user to choose


def fold_count(path: Path) -> int:
    """K of a fold file (its holdout rows, marked `holdout`, are no fold)."""
    folds = pd.read_csv(path, usecols=["fold"], dtype=str)["fold"].str.strip()
    return int(pd.to_numeric(folds[folds != HOLDOUT_LABEL], errors="raise").max()) + 1


def run_folds(spec: AblationSpec, run: Run) -> list[int]:
    """The regime's folds of this run's fold file (--folds-csv in the flags, else the data's own fold file;
    5 folds, make_folds.py's default, while prepare_commands has yet to write it)."""
    args = run.args
    path = Path(args[args.index("--folds-csv") + 1]) if "--folds-csv" in args[:-1] else \
        regime_fold_file(run.regime.data_dir, args)
    n_folds = fold_count(path) if path and path.is_file() else 5
    return parse_fold_arg(run.regime.folds, n_folds)


def prepare_commands(spec: AblationSpec) -> list[list[str]]:
    """The demo folders and fold files a regime needs and does not have yet."""
    out = []
    for regime in regimes(spec):
        if regime.labels_per_class and not Path(regime.data_dir).is_dir():
            out.append(["prepare_demo.py", "--labels-per-class", str(regime.labels_per_class),
                        "--out-dir", regime.data_dir])
        flags = train_flags(spec, spec.arm(spec.baseline), regime)
        if "--folds-csv" not in flags and regime_fold_file(regime.data_dir, flags) is None:
            out.append(["make_folds.py", "--data-dir", regime.data_dir, *table_flags(flags)])
    return out


def train_command(run: Run, folds: list[int]) -> list[str]:
    return ["train.py", *run.args, "--fold", ",".join(map(str, folds)), "--resume", "--quiet"]


def job_lines(spec: AblationSpec) -> list[str]:
    """Every step still to do as a plain command, one per line (one training job per fold), for any
    scheduler; the data preparation lines come first and must finish before the rest."""
    python = "python"
    lines = [shlex.join([python, *cmd]) for cmd in prepare_commands(spec)]
    for run in unique_runs(plan_runs(spec)):
        for k in run_folds(spec, run):
            if not run_fold_finished(run, spec.runs_dir, k):
                lines.append(shlex.join([python, *train_command(run, [k])]))
    return lines


def run_kit_script(cmd: list[str], log: Path) -> int:
    """Run one of our scripts with this interpreter, output to `log`; returns the exit code."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as handle:
        handle.write(f"$ {shlex.join(cmd)}\n")
        handle.flush()
        return subprocess.run([sys.executable, str(REPO / cmd[0]), *cmd[1:]], stdout=handle,
                              stderr=subprocess.STDOUT).returncode


def log_tail(log: Path, lines: int = 5) -> str:
    text = log.read_text(errors="replace").strip().splitlines() if log.is_file() else []
    return "\n".join("    " + line for line in text[-lines:])


def run_all(spec: AblationSpec, quiet: bool) -> list[str]:
    """Prepare data, then train every unfinished fold of every run (finished folds are skipped,
    interrupted ones resumed exactly); returns one line per failed job. Logs: <report_dir>/<name>/logs/."""
    logs = Path(spec.report_dir) / spec.name / "logs"
    for cmd in prepare_commands(spec):
        if run_kit_script(cmd, logs / "prepare.log"):
            raise UserError(f"{shlex.join(cmd)} failed; see {logs / 'prepare.log'}:\n{log_tail(logs / 'prepare.log')}")
    todo = []
    for run in unique_runs(plan_runs(spec)):
        folds = [k for k in run_folds(spec, run) if not run_fold_finished(run, spec.runs_dir, k)]
        if folds:
            todo.append((run, folds))
    failed = []
    bar = tqdm(todo, desc=f"ablation {spec.name}", unit="run", disable=quiet)
    for run, folds in bar:
        bar.set_postfix_str(run.exp)
        log = logs / f"{run.exp}.log"
        if run_kit_script(train_command(run, folds), log):
            failed.append(f"{run.exp} folds {folds}: see {log}\n{log_tail(log)}")
            print(f"failed: {failed[-1]}", file=sys.stderr)
        elif quiet:
            print(f"trained {run.exp} folds {','.join(map(str, folds))}", flush=True)
    return failed
