"""ablate.py's plan: arms that differ in one thing, trained on the same folds and seeds as independent,
resumable train.py jobs.

An arm is a set of extra train.py flags plus a TTA setting. Arms with the same training flags share
their training runs (a TTA arm only changes inference). Each (regime, training flags, seed) is one
train.py experiment named after the arm, the seed and a hash of its flags, so editing an arm's flags
starts a new experiment instead of silently reusing an old one.
"""
from __future__ import annotations

import hashlib
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from src.compare.paired import CI_METHODS
from src.core.config import load_config_file
from src.core.errors import UserError
from src.core.repro import REPO
from src.core.rundir import fold_dir, fold_finished
from src.data.contract import read_train_table
from src.data.folds import default_folds_path, parse_fold_arg

ARM_KEYS = ("train", "tta")
SPEC_KEYS = ("name", "arms", "baseline", "seeds", "folds", "labels_per_class", "data_dir", "train", "regime_train",
             "regime_seeds", "regime_folds", "tta", "metric", "ci", "runs_dir", "report_dir")
METRICS = ("accuracy", "macro_f1")


@dataclass
class Arm:
    name: str
    train: str = ""  # extra train.py flags
    tta: str = ""  # '' = the spec's tta


@dataclass
class AblationSpec:
    """An ablation file (YAML/JSON); see configs/ablations/ for examples."""

    name: str
    arms: list[Arm]
    baseline: str = ""  # default: the first arm
    seeds: list[int] = field(default_factory=lambda: [42])
    folds: str = "all"
    labels_per_class: list[str] = field(default_factory=list)  # demo regimes, e.g. ["10", "50", "all"]
    data_dir: str = "data/mnist5k"
    train: str = ""  # flags for every run
    regime_train: dict[str, str] = field(default_factory=dict)  # extra flags per labels-per-class value
    # Fewer seeds or folds for an expensive regime (e.g. all labels); the others use seeds / folds.
    regime_seeds: dict[str, list[int]] = field(default_factory=dict)
    regime_folds: dict[str, str] = field(default_factory=dict)
    tta: str = "none"
    metric: str = "accuracy"
    ci: str = "t"
    runs_dir: str = "runs"
    report_dir: str = "reports"

    def validate(self) -> "AblationSpec":
        where = f"ablation {self.name!r}"
        if not self.name or "/" in self.name or self.name.startswith("."):
            raise UserError(f"{where}: name must be a plain folder name")
        names = [a.name for a in self.arms]
        if len(names) < 2 or len(set(names)) != len(names):
            raise UserError(f"{where}: needs at least two arms with distinct names (got {names})")
        bad = [n for n in names if not n.replace("-", "").replace("_", "").replace(".", "").isalnum()]
        if bad:
            raise UserError(f"{where}: arm name {bad[0]!r} may only use letters, digits, '-', '_' and '.'")
        self.baseline = self.baseline or names[0]
        if self.baseline not in names:
            raise UserError(f"{where}: baseline {self.baseline!r} is not an arm ({names})")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise UserError(f"{where}: seeds must be a non-empty list of distinct integers")
        for value in self.labels_per_class:
            if value != "all" and not (value.isdigit() and int(value) > 0):
                raise UserError(f"{where}: labels_per_class {value!r}: use positive integers or 'all'")
        for key in ("regime_train", "regime_seeds", "regime_folds"):
            for value in getattr(self, key):  # may name regimes left out by --labels-per-class
                if value != "all" and not (value.isdigit() and int(value) > 0):
                    raise UserError(f"{where}: {key} key {value!r}: use a labels-per-class number or 'all'")
        for value, seeds in self.regime_seeds.items():
            if not seeds or len(set(seeds)) != len(seeds):
                raise UserError(f"{where}: regime_seeds {value!r} must be a non-empty list of distinct integers")
        if self.metric not in METRICS:
            raise UserError(f"{where}: metric {self.metric!r}: choose from {METRICS}")
        if self.ci not in CI_METHODS:
            raise UserError(f"{where}: ci {self.ci!r}: choose from {CI_METHODS}")
        for arm in self.arms:
            for flag in ("--exp", "--seed", "--fold", "--runs-dir", "--data-dir"):
                if flag in shlex.split(arm.train + " " + self.train):
                    raise UserError(f"{where}: arm {arm.name!r} sets {flag}; the runner sets it for every run")
        return self

    def arm(self, name: str) -> Arm:
        return next(a for a in self.arms if a.name == name)


def _as_list(value, key: str, source: str) -> list[str]:
    if isinstance(value, (int, str)):
        value = str(value).split(",")
    if not isinstance(value, list):
        raise UserError(f"{source}: {key} must be a list or a comma-separated string")
    return [str(v).strip() for v in value]


def parse_seeds(text: str, where: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",")]
    except ValueError:
        raise UserError(f"{where} {text!r}: use integers like 42,43") from None


def spec_from_dict(values: dict, source: str) -> AblationSpec:
    """Strict: unknown keys (also inside an arm) are errors, like train.py's config."""
    unknown = sorted(set(values) - set(SPEC_KEYS))
    if unknown:
        raise UserError(f"{source}: unknown key {unknown[0]!r} (allowed: {', '.join(SPEC_KEYS)})")
    if not isinstance(values.get("arms"), dict):
        raise UserError(f"{source}: 'arms' must map arm names to {{train: flags, tta: views}}")
    arms = []
    for name, body in values["arms"].items():
        body = body or {}
        if not isinstance(body, dict) or set(body) - set(ARM_KEYS):
            raise UserError(f"{source}: arm {name!r} may only have the keys {ARM_KEYS}")
        arms.append(Arm(str(name), str(body.get("train") or ""), str(body.get("tta") or "")))
    kwargs = {k: v for k, v in values.items() if k != "arms"}
    if "seeds" in kwargs:
        kwargs["seeds"] = parse_seeds(",".join(_as_list(kwargs["seeds"], "seeds", source)), f"{source}: seeds")
    if "labels_per_class" in kwargs:
        kwargs["labels_per_class"] = _as_list(kwargs["labels_per_class"], "labels_per_class", source)
    if "folds" in kwargs:
        kwargs["folds"] = ",".join(_as_list(kwargs["folds"], "folds", source))
    kwargs["regime_train"] = {str(k): str(v or "") for k, v in (kwargs.get("regime_train") or {}).items()}
    kwargs["regime_seeds"] = {str(k): parse_seeds(",".join(_as_list(v, "regime_seeds", source)),
                                                  f"{source}: regime_seeds {k}")
                              for k, v in (kwargs.get("regime_seeds") or {}).items()}
    kwargs["regime_folds"] = {str(k): ",".join(_as_list(v, "regime_folds", source))
                              for k, v in (kwargs.get("regime_folds") or {}).items()}
    for key in ("name", "baseline", "data_dir", "train", "tta", "metric", "ci", "runs_dir", "report_dir"):
        if key in kwargs:
            kwargs[key] = str(kwargs[key] or "")
    return AblationSpec(arms=arms, **{"name": Path(source).stem, **kwargs})


def load_spec(path: str | Path) -> AblationSpec:
    return spec_from_dict(load_config_file(path), str(path))


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
# What identifies a folder's contents: the tables and records (sample manifests, pseudo-labels, meta.json),
# not every image they list (a new image set always comes with a new manifest).
FOLDER_FILES = ("*.csv", "*.json", "*.yaml", "*.pt")


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
    files = [path] if path.is_file() else sorted({f for pattern in FOLDER_FILES for f in path.rglob(pattern)
                                                  if f.is_file()}) if path.is_dir() else []
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


def regime_fold_file(data_dir: str) -> Path | None:
    """The fold file make_folds.py (default columns) wrote for this data, or None when there is none yet
    (prepare_commands makes it), the data is not prepared yet, or there are several (train.py will say so)."""
    try:
        table = read_train_table(data_dir, "train.csv", "train", "image", "label")
        return default_folds_path("folds", data_dir, table.ids)
    except UserError:
        return None


def run_folds(spec: AblationSpec, run: Run) -> list[int]:
    """The regime's folds of this run's fold file (--folds-csv in the flags, else the data's own fold file;
    5 folds, make_folds.py's default, while prepare_commands has yet to write it)."""
    args = run.args
    path = Path(args[args.index("--folds-csv") + 1]) if "--folds-csv" in args[:-1] else \
        regime_fold_file(run.regime.data_dir)
    n_folds = int(pd.read_csv(path, usecols=["fold"])["fold"].max()) + 1 if path and path.is_file() else 5
    return parse_fold_arg(run.regime.folds, n_folds)


def prepare_commands(spec: AblationSpec) -> list[list[str]]:
    """The demo folders and fold files a regime needs and does not have yet."""
    out = []
    for regime in regimes(spec):
        if regime.labels_per_class and not Path(regime.data_dir).is_dir():
            out.append(["prepare_demo.py", "--labels-per-class", str(regime.labels_per_class),
                        "--out-dir", regime.data_dir])
        given = "--folds-csv" in train_flags(spec, spec.arm(spec.baseline), regime)
        if not given and regime_fold_file(regime.data_dir) is None:
            out.append(["make_folds.py", "--data-dir", regime.data_dir])
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


def run_script(cmd: list[str], log: Path) -> int:
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
        if run_script(cmd, logs / "prepare.log"):
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
        if run_script(train_command(run, folds), log):
            failed.append(f"{run.exp} folds {folds}: see {log}\n{log_tail(log)}")
            print(f"failed: {failed[-1]}", file=sys.stderr)
        elif quiet:
            print(f"trained {run.exp} folds {','.join(map(str, folds))}", flush=True)
    return failed
