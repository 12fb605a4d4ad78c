"""The Optuna study: storage, sampler and pruner, the record that makes a resumed study comparable, and recovery:
on --resume the trials an interrupt, a kill or the budget cut short are trained again (the base config included).
Running the trials is src/tune/trials.py's part."""
from __future__ import annotations

import json
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
from optuna.trial import TrialState
from sqlalchemy.exc import SQLAlchemyError  # Optuna's RDB storage runs on SQLAlchemy

from src.core.config import config_differences, config_to_dict
from src.core.errors import UserError
from src.core.metrics import metric_mode
from src.data.folds import parse_fold_arg
from src.train.config import TrainConfig
from src.train.cv import load_labelled
from src.tune.fidelity import ETA, RUNGS
from src.tune.pruning import PROGRESS_STEPS, build_pruner
from src.tune.report import LOCATION_KEYS, awaiting_retry
from src.tune.space import SearchSpace, contains, space_record

# A 15-minute budget runs about ten trials, so TPE starts modelling after five random ones (Optuna's default: 10).
STARTUP_TRIALS = 5
# What a trial's value and its reports mean; a study made under another rule cannot be continued (its trials were
# scored on best epochs and reported per epoch, and would win every comparison with the trials added now).
OBJECTIVE = "mean final-epoch metric over the tuned folds; running means reported at tenths of each fold"
BUDGET = re.compile(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


@dataclass
class TuneJob:
    """What every trial of one tune.py call shares."""

    name: str
    base: TrainConfig  # defaults < --config < the space's fixed keys < flags
    space: SearchSpace  # the keys still searched (those not set by a flag)
    folds: list[int]  # tuned on: their validation rows choose the config
    tune_dir: Path  # <runs_dir>/tune/<name>
    quiet: bool = True
    deadline: float | None = None  # time.monotonic() at which the budget is spent; None = no budget
    val_rows: int = 0  # validation rows over the tuned folds (one image's worth of accuracy); 0 = unknown
    halving: bool = False  # multi-fidelity: cheap runs first, the best promoted (src/tune/fidelity.py)

    @property
    def trials_dir(self) -> Path:
        return self.tune_dir / "trials"


def parse_budget(text: str) -> float:
    """'90s', '15m', '1h', '1h30m' -> seconds."""
    match = BUDGET.fullmatch(text.strip())
    if not match or not any(match.groups()) or not any(int(g or 0) for g in match.groups()):
        raise UserError(f"--budget {text!r}: use a duration like 90s, 15m, 1h or 1h30m")
    hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return 3600.0 * hours + 60.0 * minutes + seconds


def check_folds(base: TrainConfig, folds: str, holdout: str) -> tuple[list[int], list[int], int]:
    """Read the data and fold file once (their errors stop tune.py before any trial) and parse the tuned and
    held-out folds, which must not overlap; also how many validation rows the tuned folds hold together."""
    _, fold_of, _ = load_labelled(base)
    n_folds = int(fold_of.max()) + 1
    tuned = parse_fold_arg(folds, n_folds, "--folds")
    held = parse_fold_arg(holdout, n_folds, "--holdout-folds") if holdout else []
    shared = sorted(set(tuned) & set(held))
    if shared:
        raise UserError(f"--holdout-folds {holdout}: fold {shared[0]} is also tuned on (--folds {folds}); a held-out "
                        f"fold must never choose the config")
    return tuned, held, int(np.isin(fold_of, tuned).sum())


def check_name(name: str) -> str:
    """A study name is a folder name (runs/tune/<name>) and the tuned config's exp."""
    if not name or "/" in name or name.startswith("."):
        raise UserError(f"--name {name!r}: use a plain folder name")
    return name


def default_storage(tune_dir: Path) -> str:
    tune_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{tune_dir / 'study.db'}"


def stored_schedule(storage: str, name: str) -> str:
    """The fidelity schedule an existing study was made with ('' when there is no such study): studies from before
    fidelities ran every trial in full."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        if name not in optuna.get_all_study_names(storage):
            return ""
        attrs = optuna.load_study(study_name=name, storage=storage).user_attrs
    except (ImportError, ValueError, SQLAlchemyError) as err:
        raise UserError(f"--storage {storage}: cannot open it ({str(err).splitlines()[0]})") from None
    return attrs.get("fidelity", {"schedule": "full"})["schedule"] if attrs else ""


def max_steps(job: TuneJob) -> int:
    """Pruning steps in a trial: PROGRESS_STEPS per tuned fold."""
    return PROGRESS_STEPS * len(job.folds)


def study_record(job: TuneJob) -> dict:
    """What makes trials comparable: stored with the study, checked when it is resumed or joined (as JSON)."""
    base = {k: v for k, v in config_to_dict(job.base).items() if k not in LOCATION_KEYS}
    return json.loads(json.dumps({"space": space_record(job.space), "base_config": base, "folds": job.folds,
                                  "objective": OBJECTIVE, "fidelity": fidelity_record(job)}))


def fidelity_record(job: TuneJob) -> dict:
    return {"schedule": "halving", "rungs": RUNGS, "eta": ETA} if job.halving else {"schedule": "full"}


def open_study(job: TuneJob, storage: str, resume: bool, pruner: str, must_exist: bool = False) -> optuna.Study:
    """Create the study (or, with --resume, load or join it, and recover its cut-short trials); a new study tries
    the base config first, then the space's start points. `must_exist` (--report): only an existing study."""
    direction = "maximize" if metric_mode(job.base.monitor) == "max" else "minimize"
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # its per-trial INFO lines would double run_trials' line
    try:
        if must_exist and job.name not in optuna.get_all_study_names(storage):
            raise UserError(f"--report: no study {job.name!r} in {storage}; run tune.py without --report first")
        study = optuna.create_study(storage=storage, study_name=job.name, direction=direction,
                                    pruner=build_pruner(pruner, max_steps(job)), load_if_exists=resume)
    except optuna.exceptions.DuplicatedStudyError:
        raise UserError(f"study {job.name!r} already exists in {storage}; pass --resume to continue it (or choose "
                        f"another --name)") from None
    except (ImportError, ValueError, SQLAlchemyError) as err:  # a bad URL, a missing driver, an unreachable database
        raise UserError(f"--storage {storage}: cannot open it ({str(err).splitlines()[0]})") from None
    # A seeded sampler restarts its random stream: offset by the trials done, or a resumed study repeats them.
    study.sampler = optuna.samplers.TPESampler(seed=job.base.seed + len(study.trials),
                                               n_startup_trials=STARTUP_TRIALS)
    check_record(study, study_record(job), storage)
    if not study.trials:  # the base config first (at full fidelity), then the space's start points
        first = base_point(job)
        cheap = {"rung": 0} if job.halving else {}
        if first:
            study.enqueue_trial(first, user_attrs={"rung": RUNGS - 1} if job.halving else {})
        for point in [{**first, **p} for p in job.space.starts if p]:
            study.enqueue_trial(point, user_attrs=cheap, skip_if_exists=True)
    elif not must_exist:
        for line in recover(study):
            print(line)
    return study


def base_point(job: TuneJob) -> dict:
    """The base config's values of the searched keys: trial 0 trains exactly the base config."""
    return {k: getattr(job.base, k) for k, p in job.space.params.items() if contains(p, getattr(job.base, k))}


def owner() -> str:
    """host:pid of this process, recorded on each trial it runs (so a later run can tell a dead one)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def owner_is_dead(tag: str) -> bool:
    """Whether a trial's recorded process on this host has ended (a trial of another host: unknown, so False)."""
    host, _, pid = str(tag).rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return int(pid) == os.getpid()  # this very process was not running it: a pid reused since


def recover(study: optuna.Study) -> list[str]:
    """Fail the RUNNING trials whose process on this host is gone (a SIGKILL, a power cut), then queue again every
    trial an interrupt, a kill or the budget stopped that has not been queued again yet. Lines saying what it did."""
    lines = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if owner_is_dead(t.user_attrs.get("owner", "")):
            optuna.Trial(study, t._trial_id).set_user_attr("note", f"killed (process {t.user_attrs['owner']} ended)")
            study.tell(t.number, state=TrialState.FAIL)
            lines.append(f"trial {t.number} was left running by a process that no longer exists: marked failed")
    for t in awaiting_retry(study):
        kept = {k: t.user_attrs[k] for k in ("rung", "promoted_from") if k in t.user_attrs}
        study.enqueue_trial(t.params, user_attrs={"retry_of": t.number, **kept})
        lines.append(f"trial {t.number} ({t.user_attrs['note']}) is queued again with the same values")
    return lines


def check_record(study: optuna.Study, record: dict, storage: str) -> None:
    """Store the record on a new study; a resumed one must have been made with the same space, config and folds."""
    saved = study.user_attrs
    if not saved:
        for key, value in record.items():
            study.set_user_attr(key, value)
        return
    if saved.get("objective") != record["objective"]:
        raise UserError(f"study {study.study_name!r} in {storage} was scored with another objective (before tune.py "
                        f"scored final epochs: {saved.get('objective', 'best epochs')}); its trials cannot be compared "
                        f"with new ones, so start a new study (another --name)")
    changed = [key for key in ("space", "folds") if saved.get(key) != record[key]]
    fidelity = saved.get("fidelity", {"schedule": "full"})  # studies before fidelities: full
    if fidelity != record["fidelity"]:  # another schedule, or halving over another number of rungs
        rungs = f", {fidelity['rungs']} rungs" if "rungs" in fidelity else ""
        changed.append(f"--fidelity (it has {fidelity['schedule']}{rungs})")
    changed += config_differences(saved.get("base_config", {}), record["base_config"], TrainConfig)
    if changed:
        raise UserError(f"study {study.study_name!r} in {storage} was made with another {', '.join(changed)}; resume "
                        f"it with the same space, config and --folds, or choose another --name")


