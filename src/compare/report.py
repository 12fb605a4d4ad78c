"""ablate.py's results: score every finished fold model of every arm, compare each arm with the baseline
on matched (fold, seed) pairs, and write reports/<name>.md, .csv, _runs.csv and .png.

Per fold model: its metric on its own validation rows (the OOF metric) with its final weights (`oof`: nothing
was chosen on those rows, so this is what the verdicts judge) and with best.pt's (`oof_best`: optimistic, its
epoch was picked on them, shown for reference), and, where the competition folder has a solution.csv (the demo),
its own holdout score (where the fold file has a holdout: make_folds.py --holdout) and public/private leaderboard
score (best.pt, as infer.py submits). Per seed: the fold ensemble's holdout and leaderboard scores and the pooled
OOF metric. Verdicts are given on the final OOF, the holdout and the private LB: rows no choice was made on.
"""
from __future__ import annotations

import hashlib
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from src.compare.paired import paired_ci, verdict
from src.compare.plan import Run, plan_runs, regimes, run_fold_finished, run_folds, train_flags
from src.compare.spec import AblationSpec
from src.core.atomic import save_figure, write_csv, write_text
from src.core.metrics import accuracy, macro_f1
from src.core.repro import git_commit
from src.core.tables import markdown_table
from src.infer.oof import load_oof_data, oof_by_view
from src.infer.pipeline import test_images
from src.infer.predictor import Predictor
from src.infer.submission import build_submission, read_sample, read_solution, score_frame

SCORERS = {"accuracy": accuracy, "macro_f1": macro_f1}
ENSEMBLE = "ensemble"


def weights_stamp(exp_dir: Path, folds: list[int]) -> str:
    """Changes whenever a fold's best.pt or last.pt is rewritten, so cached scores are never stale."""
    stats = [(k, (exp_dir / f"fold{k}" / name).stat()) for k in folds for name in ("best.pt", "last.pt")
             if (exp_dir / f"fold{k}" / name).is_file()]
    parts = [f"{k}:{st.st_size}:{st.st_mtime_ns}" for k, st in stats]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def score_run(exp_dir: Path, folds: list[int], tta: str, metric: str, device: str, quiet: bool) -> pd.DataFrame:
    """One row per fold model (fold, oof, oof_best, holdout, public, private) and an 'ensemble' row (pooled OOF, the
    fold ensemble's holdout and leaderboard); holdout only where the fold file has one, public/private where the
    data folder has a solution.csv."""
    p = Predictor.load(exp_dir, device=device, tta=tta, folds=folds)  # best.pt: what infer.py submits
    data = load_oof_data([p], quiet)

    def oof_of(q: Predictor) -> np.ndarray:
        return np.mean(list(oof_by_view(q, data, q.views, quiet, all_folds=False).values()), axis=0)

    oof_best = oof_of(p)
    if all((exp_dir / f"fold{k}" / "last.pt").is_file() for k in folds):
        oof = oof_of(Predictor.load(exp_dir, device=device, tta=tta, folds=folds, weights="final"))
    else:  # last.pt deleted to save disk: no final weights to judge, so no OOF verdict for this run
        print(f"{exp_dir}: a fold has no last.pt, so its final weights cannot be scored; its OOF is left out")
        oof = np.full_like(oof_best, np.nan)
    data_dir = Path(p.cfg.data_dir)
    sample_path, solution_path = data_dir / "sample_submission.csv", data_dir / "solution.csv"
    has_lb = sample_path.is_file() and solution_path.is_file()
    if has_lb:
        sample, solution = read_sample(sample_path), read_solution(solution_path)
        test = p.cached(test_images(data_dir, "test", sample, sample_path), quiet)
        per_fold_test = p.predict_views(test, p.views, quiet=quiet).mean(axis=1)  # (folds, N, classes)

    def leaderboard(probs: np.ndarray) -> dict:
        frame = build_submission(sample, p.classes, probs, p.labels_from_probs(probs), False, sample_path)
        scores = score_frame(frame, solution, metric, sample_path)
        return {k: scores[k] for k in ("public", "private") if k in scores}

    def score(y: np.ndarray, probs: np.ndarray) -> float:
        return float("nan") if np.isnan(probs).any() else SCORERS[metric](y, probs)

    held = data.table.holdout
    if held is not None:  # predicted like the test set: per fold model, then the fold ensemble
        per_fold_held = p.predict_views(p.cached(held.paths, quiet), p.views, quiet=quiet).mean(axis=1)

    def holdout(probs: np.ndarray) -> dict:
        return {"holdout": score(held.labels, probs)} if held is not None else {}

    rows = []
    for i, fm in enumerate(p.folds):
        idx = np.flatnonzero(data.fold_of == fm.fold)
        rows.append({"fold": str(fm.fold), "oof": score(data.y[idx], oof[idx]),
                     "oof_best": score(data.y[idx], oof_best[idx]), **(leaderboard(per_fold_test[i]) if has_lb else {}),
                     **(holdout(per_fold_held[i]) if held is not None else {})})
    scored = np.isin(data.fold_of, folds)
    rows.append({"fold": ENSEMBLE, "oof": score(data.y[scored], oof[scored]),
                 "oof_best": score(data.y[scored], oof_best[scored]),
                 **(leaderboard(per_fold_test.mean(axis=0)) if has_lb else {}),
                 **(holdout(per_fold_held.mean(axis=0)) if held is not None else {})})
    return pd.DataFrame(rows).assign(views="+".join(p.views))


def cached_scores(spec: AblationSpec, run: Run, folds: list[int], tta: str, device: str, quiet: bool) -> pd.DataFrame:
    """score_run, cached in <report_dir>/<name>/scores/ and recomputed when any fold's weights change."""
    exp_dir = Path(spec.runs_dir) / run.exp
    stamp = weights_stamp(exp_dir, folds)
    path = Path(spec.report_dir) / spec.name / "scores" / f"{run.exp}__tta-{tta}__{spec.metric}.csv"
    if path.is_file():
        cached = pd.read_csv(path, dtype={"fold": str, "stamp": str})
        if len(cached) and (cached["stamp"] == stamp).all() and "oof_best" in cached:
            return cached.drop(columns="stamp")
    frame = score_run(exp_dir, folds, tta, spec.metric, device, quiet)
    write_csv(path, frame.assign(stamp=stamp))
    return frame


def collect(spec: AblationSpec, device: str, quiet: bool) -> pd.DataFrame:
    """One row per (regime, arm, seed, fold) the spec asks for, scored where the fold finished; the
    'ensemble' row of a (regime, arm, seed) appears only when all its folds finished."""
    rows = []
    for (regime, arm_name, seed), run in plan_runs(spec).items():
        arm = spec.arm(arm_name)
        tta = arm.tta or spec.tta
        folds = run_folds(spec, run)
        done = [k for k in folds if run_fold_finished(run, spec.runs_dir, k)]
        scores = cached_scores(spec, run, done, tta, device, quiet) if done else pd.DataFrame(columns=["fold"])
        key = {"regime": regime, "arm": arm_name, "seed": seed, "exp": run.exp, "tta": tta}
        for k in folds:
            hit = scores[scores["fold"] == str(k)]
            rows.append({**key, "fold": str(k), **(hit.iloc[0].to_dict() if len(hit) else {"oof": np.nan})})
        if len(done) == len(folds):
            rows.append({**key, **scores[scores["fold"] == ENSEMBLE].iloc[0].to_dict()})
    frame = pd.DataFrame(rows)
    frame["fold"] = frame["fold"].astype(str)
    return frame


def _pairs(frame: pd.DataFrame, arm: str, baseline: str, column: str) -> np.ndarray:
    """Differences arm - baseline over the (seed, fold) pairs both have scored."""
    folds = frame[frame["fold"] != ENSEMBLE]
    a = folds[folds["arm"] == arm].set_index(["seed", "fold"])[column]
    b = folds[folds["arm"] == baseline].set_index(["seed", "fold"])[column]
    both = a.dropna().index.intersection(b.dropna().index)
    return (a.loc[both] - b.loc[both]).to_numpy(dtype=np.float64)


HELD_OUT = {"holdout": "holdout", "private": "private LB"}  # rows nothing was chosen on, besides the final OOF


def judged_columns(results: pd.DataFrame) -> list[str]:
    """The scores on rows no choice was made on that these results have: the holdout's and the private LB's."""
    return [c for c in HELD_OUT if c in results and results[c].notna().any()]


def summarize(spec: AblationSpec, results: pd.DataFrame) -> pd.DataFrame:
    """Per (regime, arm): runs done, mean ± std of the OOF, holdout and private scores over (fold, seed), the
    ensemble's holdout and private scores over seeds, and the paired difference to the baseline with its CI."""
    rows = []
    held_out = judged_columns(results)
    for regime in regimes(spec):
        part = results[results["regime"] == regime.name]
        base_done = part[(part["arm"] == spec.baseline) & (part["fold"] != ENSEMBLE)]["oof"].notna().all()
        for arm in spec.arms:
            mine = part[part["arm"] == arm.name]
            folds = mine[mine["fold"] != ENSEMBLE]
            complete = bool(folds["oof"].notna().all() and base_done)
            differs = " ".join([arm.train] + ([f"tta {arm.tta}"] if arm.tta else [])) or f"tta {spec.tta}"
            row = {"regime": regime.name, "arm": arm.name,
                   "differs": "(baseline)" if arm.name == spec.baseline else differs,
                   "runs_done": int(folds["oof"].notna().sum()), "runs_expected": len(folds),
                   "oof_mean": folds["oof"].mean(), "oof_std": folds["oof"].std(ddof=1)}  # over (fold, seed)
            if "oof_best" in folds:
                row.update({"oof_best_mean": folds["oof_best"].mean(), "oof_best_std": folds["oof_best"].std(ddof=1)})
            for column in held_out:
                ens = mine[mine["fold"] == ENSEMBLE][column]
                row.update({f"{column}_mean": folds[column].mean(), f"{column}_std": folds[column].std(ddof=1),
                            f"ensemble_{column}_mean": ens.mean() if len(ens) else np.nan})
            for column in ["oof", *held_out]:
                if arm.name == spec.baseline:
                    row.update({f"{column}_diff": np.nan, f"{column}_low": np.nan, f"{column}_high": np.nan,
                                f"{column}_pairs": np.nan, f"{column}_verdict": "baseline"})
                    continue
                result = paired_ci(_pairs(part, arm.name, spec.baseline, column), spec.ci)
                row.update({f"{column}_diff": result.mean, f"{column}_low": result.low, f"{column}_high": result.high,
                            f"{column}_pairs": result.n_pairs,
                            f"{column}_verdict": verdict(result) if complete else "incomplete"})
            rows.append(row)
    return pd.DataFrame(rows)


def _pp(value: float) -> str:
    return "" if not np.isfinite(value) else f"{100 * value:+.2f}"


def _mean_std(mean: float, std: float) -> str:
    if not np.isfinite(mean):
        return ""
    return f"{mean:.4f} ± {std:.4f}" if np.isfinite(std) else f"{mean:.4f}"


def verdict_line(row: pd.Series, spec: AblationSpec, held_out: list[str]) -> str:
    def part(column: str, label: str) -> str:
        return (f"{label} {_pp(row[f'{column}_diff'])} pp [{_pp(row[f'{column}_low'])}, {_pp(row[f'{column}_high'])}]"
                f" over {int(row[f'{column}_pairs'])} pairs: {row[f'{column}_verdict']}")
    parts = [part("oof", "OOF " + spec.metric)] + [part(c, HELD_OUT[c]) for c in held_out]
    return f"- **{row['arm']}** vs {spec.baseline} ({row['regime']}): " + "; ".join(parts) + "."


def markdown_report(spec: AblationSpec, summary: pd.DataFrame, results: pd.DataFrame) -> str:
    held_out = [c for c in HELD_OUT if f"{c}_mean" in summary]
    done, expected = int(summary["runs_done"].sum()), int(summary["runs_expected"].sum())
    status = ("complete" if done == expected else
              f"**PARTIAL: {done} of {expected} fold runs finished; arms with missing runs get no verdict**")
    method = {"t": "Student t interval", "bootstrap": "percentile bootstrap of the mean (10,000 resamples)"}[spec.ci]
    lines = [f"# Ablation: {spec.name}", "",
             f"Status: {status}. Baseline arm: `{spec.baseline}`. "
             f"metric {spec.metric}; default TTA `{spec.tta}`; common train.py flags `{spec.train or '(none)'}`.",
             "OOF scores and their verdicts use each fold's final weights (nothing was chosen on its validation "
             "rows); best.pt's OOF, whose epoch was picked on those rows, is shown for reference only (optimistic).",
             f"Differences are arm − baseline in percentage points, paired over (fold, seed), with a 95 % {method}. "
             "Folds share training rows, so the pairs are not fully independent and the intervals lean optimistic. "
             "Verdict: helps / hurts when the whole interval is above / below 0, else no evidence; with fewer "
             "than 3 pairs: too few pairs; when every pair differs by the same amount: no evidence (zero variance).",
             f"Written {datetime.now().isoformat(timespec='seconds')}, git {git_commit(Path.cwd())}.", ""]
    for regime in regimes(spec):
        part = summary[summary["regime"] == regime.name]
        flags = " ".join(train_flags(spec, spec.arm(spec.baseline), regime)) or "(none)"
        lines += [f"## {regime.name} ({regime.data_dir}; baseline flags `{flags}`; seeds {regime.seeds}, "
                  f"folds {regime.folds})", ""]
        table = pd.DataFrame({
            "arm": part["arm"], "differs": part["differs"].map(lambda s: f"`{s}`"),
            "runs": [f"{d}/{e}" for d, e in zip(part["runs_done"], part["runs_expected"])],
            f"OOF {spec.metric}, final weights": [_mean_std(m, s) for m, s in zip(part["oof_mean"], part["oof_std"])],
            "Δ OOF [95% CI]": [f"{_pp(d)} [{_pp(lo)}, {_pp(hi)}]" if np.isfinite(d) else ""
                               for d, lo, hi in zip(part["oof_diff"], part["oof_low"], part["oof_high"])],
            "verdict (OOF)": part["oof_verdict"]})
        if "oof_best_mean" in part:
            table.insert(4, "OOF, best.pt (optimistic)", [_mean_std(m, s) for m, s in
                                                          zip(part["oof_best_mean"], part["oof_best_std"])])
        for column in held_out:
            label = HELD_OUT[column]
            table[f"{label}, per fold model"] = [_mean_std(m, s) for m, s in
                                                 zip(part[f"{column}_mean"], part[f"{column}_std"])]
            table[f"Δ {column} [95% CI]"] = [f"{_pp(d)} [{_pp(lo)}, {_pp(hi)}]" if np.isfinite(d) else "" for d, lo, hi
                                             in zip(part[f"{column}_diff"], part[f"{column}_low"], part[f"{column}_high"])]
            table[f"verdict ({column})"] = part[f"{column}_verdict"]
            table[f"{label}, fold ensemble"] = part[f"ensemble_{column}_mean"]
        lines += [markdown_table(table), ""]
        lines += [verdict_line(row, spec, held_out) for _, row in part.iterrows() if row["arm"] != spec.baseline]
        lines.append("")
    lines += ["Per-run scores: `" + f"{spec.name}_runs.csv" + "`; summary: `" + f"{spec.name}.csv" + "`.", ""]
    return "\n".join(lines)


def plot_report(path: Path, spec: AblationSpec, summary: pd.DataFrame, results: pd.DataFrame) -> None:
    """Top: each arm's OOF metric per (fold, seed) and its mean ± std; bottom: paired difference to the
    baseline with its 95 % interval. One column per regime."""
    import matplotlib.pyplot as plt

    names = [r.name for r in regimes(spec)]
    fig, axes = plt.subplots(2, len(names), figsize=(2.2 + 1.3 * len(spec.arms) * len(names), 6.2), squeeze=False)
    arms = [a.name for a in spec.arms]
    for col, regime in enumerate(names):
        top, bottom = axes[0, col], axes[1, col]
        part = results[(results["regime"] == regime) & (results["fold"] != ENSEMBLE)]
        rows = summary[summary["regime"] == regime].set_index("arm")
        for x, arm in enumerate(arms):
            values = part[part["arm"] == arm]["oof"].dropna()
            jitter = np.linspace(-0.15, 0.15, len(values)) if len(values) > 1 else np.zeros(len(values))
            top.scatter(x + jitter, values, s=10, color="0.6", zorder=2)
            top.errorbar(x, rows.loc[arm, "oof_mean"], yerr=np.nan_to_num(rows.loc[arm, "oof_std"]), fmt="o",
                         color="C0", capsize=4, zorder=3)
            if arm != spec.baseline and np.isfinite(rows.loc[arm, "oof_diff"]):
                d, lo, hi = (100 * rows.loc[arm, k] for k in ("oof_diff", "oof_low", "oof_high"))
                lo, hi = (v if np.isfinite(v) else d for v in (lo, hi))
                bottom.errorbar(x, d, yerr=[[d - lo], [hi - d]], fmt="s", capsize=4,
                                color={"helps": "C2", "hurts": "C3"}.get(rows.loc[arm, "oof_verdict"], "0.3"))
        bottom.axhline(0, color="0.5", lw=1)
        for ax in (top, bottom):
            ax.set_xticks(range(len(arms)), arms, rotation=30, ha="right", fontsize=8)
            ax.set_xlim(-0.6, len(arms) - 0.4)
            ax.grid(alpha=0.3)
        top.set_title(regime, fontsize=10)
        top.set_ylabel(f"OOF {spec.metric} (final weights)")
        bottom.set_ylabel(f"Δ vs {spec.baseline}, pp (95% CI)")
    fig.tight_layout()
    save_figure(path, fig)
    plt.close(fig)


def write_report(spec: AblationSpec, results: pd.DataFrame) -> tuple[pd.DataFrame, Path]:
    summary = summarize(spec, results)
    folder = Path(spec.report_dir)
    write_csv(folder / f"{spec.name}_runs.csv", results)
    write_csv(folder / f"{spec.name}.csv", summary)
    plot_report(folder / f"{spec.name}.png", spec, summary, results)
    path = folder / f"{spec.name}.md"
    write_text(path, markdown_report(spec, summary, results))
    return summary, path
