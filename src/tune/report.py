"""What a study leaves for people: one line per trial, the trials table (CSV, Markdown), the history and parameter
importance plots, the tuned config train.py reads as is, and summary.md."""
from __future__ import annotations

import math
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt
import optuna
import pandas as pd
import yaml
from matplotlib.ticker import MaxNLocator
from optuna.trial import FrozenTrial, TrialState

from src.core.atomic import save_figure, write_csv, write_text
from src.core.tables import markdown_table
from src.tune.fidelity import fidelity_counts, is_full

LOCATION_KEYS = ("runs_dir", "cache_dir")  # where runs and the cache go, not how a model trains


# Notes (src/tune/trials.py) of trials cut short through no fault of their config: tune.py --resume trains them again.
RETRY_NOTES = ("interrupted", "killed", "stopped by the --budget deadline")


def awaiting_retry(study: optuna.Study) -> list[FrozenTrial]:
    """The failed trials an interrupt, a kill or the budget cut short that were not queued again yet."""
    retried = {t.user_attrs.get("retry_of") for t in study.trials}
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
            if t.number not in retried and str(t.user_attrs.get("note", "")).startswith(RETRY_NOTES)]


def is_base(trial: FrozenTrial, study: optuna.Study) -> bool:
    """Whether a trial trained the base config: every value it sampled is the base config's."""
    base = study.user_attrs.get("base_config", {})
    return bool(base) and all(k in base and base[k] == v for k, v in trial.params.items())


def seconds(trial: FrozenTrial) -> float:
    return trial.duration.total_seconds() if trial.duration else math.inf


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The best complete trial, or None while there is none. Accuracy moves in steps of one validation image, and a
    one-image lead is noise, not evidence. Among the trials within one image of the top the base config wins (no
    evidence to move away from it), else the fastest (then the earliest): a tie is never broken by validation log
    loss, whose floor label smoothing and mixup raise, so it would favour the least regularised trial."""
    done = [t for t in study.trials if t.state == TrialState.COMPLETE and is_full(t)]  # cheaper runs never win
    if not done:
        return None
    top = top_trial(study, done)
    step = top.user_attrs.get("one_image")
    if not step:  # another metric: the top value wins
        return top
    # A hair over the step: a mean of fold accuracies is not always exactly k / rows in floating point.
    near = [t for t in done if abs(t.value - top.value) <= step * 1.001]
    return min(near, key=lambda t: (not is_base(t, study), seconds(t), t.number))


def top_trial(study: optuna.Study, trials: list[FrozenTrial]) -> FrozenTrial:
    """The highest-scoring (lowest, when minimising) of `trials`, the earliest among equals."""
    sign = -1 if study.direction == optuna.study.StudyDirection.MAXIMIZE else 1
    return min(trials, key=lambda t: (sign * t.value, t.number))


def format_value(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def format_params(params: dict) -> str:
    return " ".join(f"{key}={format_value(value)}" for key, value in params.items())


def trial_line(trial: FrozenTrial, best: FrozenTrial | None, monitor: str) -> str:
    """`trial 3 complete in 41s: accuracy=0.9812 | lr=0.0012 ... | best so far: trial 1 accuracy=0.9850`."""
    took = f" in {trial.duration.total_seconds():.0f}s" if trial.duration else ""  # unknown for a made-up trial
    if "rung" in trial.user_attrs:
        took += f" at fidelity {fidelity_label(trial)}"
    outcome = f"{monitor}={trial.value:.4f}" if trial.state == TrialState.COMPLETE else trial.user_attrs.get("note", "")
    best_text = f"trial {best.number} {monitor}={best.value:.4f}" if best else "none complete yet"
    return (f"trial {trial.number} {trial.state.name.lower()}{took}: {outcome} | "
            f"{format_params(trial.params)} | best so far: {best_text}")


TRIAL_COLUMNS = ("trial", "state", "value", "fidelity", "seconds", "note")


def fidelity_label(trial: FrozenTrial) -> str:
    """'full', or the share of a full run's cost a cheaper run had ('1/9')."""
    share = trial.user_attrs.get("fidelity", 1.0)
    return "full" if share >= 1 else f"1/{round(1 / share)}"


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per trial run or running: number, state, value (complete trials), seconds, note (why it stopped), its
    values."""
    rows = [{"trial": t.number, "state": t.state.name.lower(),
             "value": t.value if t.state == TrialState.COMPLETE else math.nan,
             "fidelity": fidelity_label(t),
             "seconds": round(t.duration.total_seconds(), 1) if t.duration else math.nan,
             "note": t.user_attrs.get("note", ""), **t.params}
            for t in study.trials if t.state != TrialState.WAITING]  # queued start points not run yet
    return pd.DataFrame(rows, columns=list(dict.fromkeys([*TRIAL_COLUMNS, *(k for r in rows for k in r)])))


def write_trials(tune_dir: Path, frame: pd.DataFrame) -> str:
    """trials.csv and trials.md; returns the Markdown table."""
    write_csv(tune_dir / "trials.csv", frame)
    shown = frame.copy()
    shown["seconds"] = shown["seconds"].map(lambda s: f"{s:.0f}")
    for column in shown.columns[len(TRIAL_COLUMNS):]:  # the searched values: 4 significant digits, so lr=3e-4 stays readable
        shown[column] = shown[column].map(format_value)
    table = markdown_table(shown)
    write_text(tune_dir / "trials.md", f"# Trials\n\n{table}\n")
    return table


def plot_history(path: Path, study: optuna.Study, label: str) -> None:
    """The objective of every complete trial, the last epoch's value of pruned ones, and the best so far."""
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED and t.intermediate_values]
    better = max if study.direction == optuna.study.StudyDirection.MAXIMIZE else min
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.scatter([t.number for t in done], [t.value for t in done], label="complete", zorder=3)
    if pruned:
        ax.scatter([t.number for t in pruned], [t.intermediate_values[max(t.intermediate_values)] for t in pruned],
                   marker="x", color="grey", label="pruned (value at its last epoch)")
    best_so_far = [better(t.value for t in done[:i + 1]) for i in range(len(done))]
    ax.step([t.number for t in done], best_so_far, where="post", color="C1", label="best so far")
    ax.set_xlabel("trial")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(label)
    ax.legend()
    save_figure(path, fig)
    plt.close(fig)


def comparable_runs(study: optuna.Study) -> tuple[list[FrozenTrial], str]:
    """The complete trials of the fidelity with the most of them (the cheaper on a tie), and its label."""
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    by_fidelity: dict[str, list[FrozenTrial]] = {}
    for t in sorted(done, key=lambda t: t.user_attrs.get("fidelity", 1.0)):
        by_fidelity.setdefault(fidelity_label(t), []).append(t)
    if not by_fidelity:
        return [], "full"
    label = max(by_fidelity, key=lambda k: len(by_fidelity[k]))  # the first (cheapest) of the largest
    return by_fidelity[label], label


def plot_importance(path: Path, study: optuna.Study) -> str:
    """importance.png (Optuna's parameter importances); returns a line saying what it shows or why there is none."""
    runs, fidelity = comparable_runs(study)
    complete = len(runs)
    if complete < 2:
        return f"no importance.png: it needs at least 2 complete trials at one fidelity, the study has {complete}"
    same = optuna.create_study(direction=study.direction)  # values of one fidelity only: comparable
    same.add_trials(runs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            importances = optuna.importance.get_param_importances(same)
        except (ValueError, RuntimeError) as err:  # e.g. no searched key varied between the complete trials
            return f"no importance.png: {str(err).splitlines()[0]}"
    if caught:  # with few trials PED-ANOVA warns that every importance is equal: a plot would mislead
        return f"no importance.png: too few complete trials ({complete}) to rank the keys ({caught[0].message})"
    if not importances:
        return "no importance.png: no searched key varied between the complete trials"
    names = list(importances)[::-1]
    fig, ax = plt.subplots(figsize=(6, 0.4 * len(names) + 1.2))
    ax.barh(names, [importances[n] for n in names])
    ax.set_xlabel(f"importance (Optuna, {complete} complete trials at fidelity {fidelity}; rough with few trials)")
    save_figure(path, fig)
    plt.close(fig)
    return "importance.png: " + ", ".join(f"{name} {share:.2f}" for name, share in list(importances.items())[:3])


def tuned_config_text(best: FrozenTrial, name: str, source: str, tuned_on: str, holdout: str, path: Path) -> str:
    """The best trial's full TrainConfig (less where runs and the cache go), exp = the study's name, under comment
    lines that say where it came from and how far to trust its score."""
    config = {k: v for k, v in best.user_attrs["config"].items() if k not in LOCATION_KEYS}
    config["exp"] = name
    lines = [f"Tuned by tune.py: {source}, trial {best.number}.",
             f"{tuned_on}: optimistic, as the config was chosen on these folds.",
             holdout or "No --holdout-folds: the OOF score of a train.py run over all folds is optimistic on the tuned "
                        "ones.",
             f"Train it: python train.py --data-dir {config['data_dir']} --config {path} --fold all"]
    return "".join(f"# {line}\n" for line in lines) + yaml.safe_dump(config, sort_keys=False)


def write_reports(study: optuna.Study, tune_dir: Path, storage: str, folds: list[int], monitor: str,
                  tuned_path: Path, holdout: tuple[list[int], float] | None) -> list[str]:
    """Every output of a study (the tuned config only once a trial completed); returns summary.md's lines."""
    frame = trials_frame(study)
    table = write_trials(tune_dir, frame)
    fold_text = ",".join(map(str, folds))
    plot_history(tune_dir / "history.png", study, f"{monitor}, mean over fold(s) {fold_text} (optimistic)")
    importance = plot_importance(tune_dir / "importance.png", study)
    counts = frame["state"].value_counts().to_dict()
    best = best_trial(study)
    retry = [t.number for t in awaiting_retry(study)]
    source = f"study {study.study_name!r} in {storage}, {len(frame)} trials"
    lines = [f"study: {source} ({', '.join(f'{n} {state}' for state, n in counts.items())})",
             fidelity_counts(study),
             f"tuned on fold(s) {fold_text}: their validation rows chose the config"]
    if retry:
        lines.append(f"cut short (interrupt, kill or budget) and not yet run again: trial(s) "
                     f"{', '.join(map(str, retry))}; tune.py --resume trains them again")
    if best is None:
        return write_summary(tune_dir, study.study_name, lines + ["no trial completed", importance], table)
    tuned_on = f"{monitor} {best.value:.4f} is the mean final-epoch value over the tuned fold(s) {fold_text}"
    held = ""
    if holdout and holdout[1] is None:
        held = f"held-out fold(s) {','.join(map(str, holdout[0]))}: not scored (the --budget deadline stopped it)"
    elif holdout:
        held = (f"held-out fold(s) {','.join(map(str, holdout[0]))}: {monitor} {holdout[1]:.4f} (final epoch; never "
                f"used to choose the config)")
    write_text(tuned_path, tuned_config_text(best, study.study_name, source, tuned_on, held, tuned_path))
    top = top_trial(study, [t for t in study.trials if t.state == TrialState.COMPLETE and is_full(t)])
    if top.number != best.number:
        why = "it trained the base config" if is_base(best, study) else \
            f"it trained faster ({seconds(best):.0f} s vs {seconds(top):.0f} s)"
        lines.append(f"trial {top.number} scored {monitor} {top.value:.4f}, within one validation image of trial "
                     f"{best.number}'s {best.value:.4f}: a tie, and trial {best.number} is kept because {why}")
    lines += [f"best: trial {best.number}, {tuned_on} (optimistic: chosen on these folds)",
              held or "held-out score: none (pass --holdout-folds for a score on folds not used to choose)",
              f"best values: {format_params(best.params)}", f"tuned config: {tuned_path}", importance]
    return write_summary(tune_dir, study.study_name, lines, table)


def write_summary(tune_dir: Path, name: str, lines: list[str], table: str) -> list[str]:
    """summary.md: the lines as a list, then the trials table; returns the lines (tune.py prints them)."""
    files = "trials.csv, trials.md, history.png, importance.png; each trial's runs and train.log under trials/"
    text = "\n".join(f"- {line}" for line in [*lines, f"files: {files}"])
    write_text(tune_dir / "summary.md", f"# Tuning study: {name}\n\n{text}\n\n## Trials\n\n{table}\n")
    return lines
