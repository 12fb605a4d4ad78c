"""infer.py's flow: OOF check of TTA views and the blend (src/infer/oof.py), the holdout score, predict test, write and
score a submission."""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from src.core.atomic import check_writable, write_csv, write_text
from src.core.errors import UserError
from src.core.rundir import prob_columns, write_json
from src.core.tables import markdown_table
from src.data.contract import resolve_image_path
from src.data.images import IMAGE_EXTS
from src.infer.ensemble import blend
from src.infer.holdout import holdout_section, predict_holdout, write_holdout
from src.infer.oof import OofData, load_oof_data, oof_report
from src.infer.predictor import Predictor, parse_threshold
from src.infer.submission import build_submission, read_sample, read_solution, score_frame
from src.infer.tta import chosen_mean, ensemble_variants, with_identity


def test_images(data_dir: Path, test_dir: str, sample: pd.DataFrame, sample_path: Path) -> list[Path]:
    """Image path per sample_submission id; every id must have an image in the test folder."""
    root = data_dir / test_dir
    if not root.is_dir():
        raise UserError(f"{root}: test image folder not found (set --test-dir)")
    paths = [resolve_image_path(i, root, f"{sample_path} line {n + 2}") for n, i in enumerate(sample.iloc[:, 0])]
    extra = sorted({p.name for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTS} - {p.name for p in paths})
    if extra:
        print(f"warning: {len(extra)} image(s) in {root} are not in {sample_path.name} (e.g. {extra[0]}); "
              f"they get no prediction")
    return paths


@dataclass
class InferOptions:
    """infer.py's options; the script's flags take their defaults from here."""

    exps: list[str]
    runs_dir: str = "runs"
    data_dir: str = ""
    test_dir: str = "test"
    sample_csv: str = "sample_submission.csv"
    solution_csv: str = "solution.csv"
    tta: str = "auto"
    blend: str = "mean"
    proba: bool = False
    threshold: str = ""
    name: str = ""
    out_dir: str = "submissions"
    device: str = "auto"
    weights: str = "best"
    holdout_only: bool = False
    quiet: bool = True


def load_predictors(opt: InferOptions) -> list[Predictor]:
    """One Predictor per experiment; experiments to be blended must share their class list."""
    threshold = parse_threshold(opt.threshold)
    threshold = None if threshold == "eer" else threshold  # set later, from the blended OOF probabilities
    tta = "auto" if opt.tta == "greedy" else opt.tta  # greedy picks from auto's views, on OOF rows
    predictors = [Predictor.load(Path(opt.runs_dir) / e, opt.device, tta, threshold, weights=opt.weights)
                  for e in opt.exps]
    for p in predictors[1:]:
        if p.classes != predictors[0].classes:
            raise UserError(f"{p.exp_dir} has classes {p.classes}, {predictors[0].exp_dir} has "
                            f"{predictors[0].classes}; only experiments on the same data can be blended")
    if opt.threshold == "eer" and len(predictors[0].classes) != 2:
        raise UserError(f"--threshold needs a binary task; {predictors[0].exp_dir} has "
                        f"{len(predictors[0].classes)} classes")
    return predictors


def check_outputs(opt: InferOptions, sample: pd.DataFrame, sample_path: Path, classes: list[str],
                  solution_path: Path) -> pd.DataFrame | None:
    """Everything that could refuse the outputs, checked before any prediction: --proba columns and the
    solution file (ids equal to the sample's, Public/Private rows)."""
    dummy = np.full((len(sample), len(classes)), 1 / len(classes))
    build_submission(sample, classes, dummy, [classes[0]] * len(sample), opt.proba, sample_path)
    if not solution_path.is_file():
        return None
    solution = read_solution(solution_path)
    if set(solution.iloc[:, 0]) != set(sample.iloc[:, 0]):
        raise UserError(f"{solution_path}: ids differ from {sample_path.name}'s")
    return solution


def make_submission(opt: InferOptions) -> dict:
    """The whole flow; returns the submission's leaderboard scores (empty without a solution file) and, when the
    fold file has a holdout, its accuracy (`holdout_accuracy`). A data folder with neither a test folder nor a sample
    submission (cross-validation only), or --holdout-only, gets the OOF report (and the holdout's) alone."""
    predictors = load_predictors(opt)
    lead = predictors[0]
    data_dir = Path(opt.data_dir or lead.cfg.data_dir)
    sample_path, solution_path = data_dir / opt.sample_csv, data_dir / opt.solution_csv
    if not data_dir.is_dir():  # a mistyped --data-dir must not pass for a cross-validation-only folder
        raise UserError(f"{data_dir}: data folder not found (set --data-dir)")
    cv_only = not sample_path.exists() and not (data_dir / opt.test_dir).exists()
    if not (cv_only or opt.holdout_only):
        sample = read_sample(sample_path)
        paths = test_images(data_dir, opt.test_dir, sample, sample_path)
        solution = check_outputs(opt, sample, sample_path, lead.classes, solution_path)
    check_writable(opt.out_dir, "the submission")
    data = load_oof_data(predictors, opt.quiet)
    held = data.table.holdout
    if opt.holdout_only and held is None:
        raise UserError(f"--holdout-only: {data.folds_path} has no holdout rows; make a fold file with "
                        f"make_folds.py --holdout 0.2 and train on it (--folds-csv)")
    report, weights, blended_oof = oof_report(predictors, data, opt.name, opt.tta, opt.blend, opt.threshold,
                                              opt.quiet)
    out, result, holdout = Path(opt.out_dir), {}, None
    if held is not None:
        table, held_probs = predict_holdout(predictors, held, weights, opt.quiet)
        section = holdout_section(table, held, opt.weights)
        report.append(section)
        holdout = (table, held_probs, section)
        result["holdout_accuracy"] = float(table["accuracy"].iloc[-1])
    if cv_only or opt.holdout_only:
        report[0] = f"# OOF report {opt.name}\n"
        why = "--holdout-only" if opt.holdout_only else (f"{data_dir} has no {opt.test_dir}/ and no {opt.sample_csv} "
                                                          f"(a cross-validation only folder)")
        report.append(f"No submission: {why}; this report and {opt.name}_oof_probs.csv are all there is to write.\n")
        write_oof_outputs(out, opt.name, data, blended_oof, lead.classes, report)
    else:
        per_exp, line = predict_test(predictors, paths, opt.quiet)
        report.append(line)
        final = blend([chosen_mean(p, v) for p, v in zip(predictors, per_exp)], weights)
        frame = build_submission(sample, lead.classes, final, lead.labels_from_probs(final), opt.proba, sample_path)
        if solution is not None:
            table = leaderboard_table(sample, solution, lead, per_exp[0], frame, opt.proba, solution_path)
            report.append(f"## Local leaderboard ({solution_path})\n\n{markdown_table(table)}\n")
            result.update(table.iloc[-1].to_dict())
        write_outputs(out, opt.name, frame, sample, final, data, blended_oof, lead.classes, report)
    if holdout is not None:
        write_holdout(out, opt.name, held, holdout[1], lead.classes, predictors, holdout[0], holdout[2])
    if result:  # for the run table (runs.py)
        write_json(out / f"{opt.name}_lb.json", {
            "experiments": [p.exp_dir.name for p in predictors], "runs_dir": str(opt.runs_dir), "tta": opt.tta,
            "weights": opt.weights, "metric": result.get("metric", "accuracy"), "public": result.get("public"),
            "private": result.get("private"), "holdout_accuracy": result.get("holdout_accuracy"),
            "written": datetime.now().isoformat(timespec="seconds")})
    return result


def predict_test(predictors: list[Predictor], paths: list[Path], quiet: bool) -> tuple[list[np.ndarray], str]:
    """(folds, views, N, classes) per experiment, identity always included (for the leaderboard's
    single-fold and no-TTA rows), and a line saying how long it took."""
    start = time.perf_counter()
    per_exp = [p.predict_views(p.cached(paths, quiet), with_identity(p.views), quiet=quiet) for p in predictors]
    passes = sum(v.shape[0] * v.shape[1] for v in per_exp)
    return per_exp, (f"Test inference: {len(paths)} images x {passes} (fold, view) passes in "
                     f"{time.perf_counter() - start:.1f} s (decoding or the cache included).\n")


def write_outputs(out: Path, name: str, frame: pd.DataFrame, sample: pd.DataFrame, final: np.ndarray,
                  data: OofData, blended_oof: np.ndarray, classes: list[str], report: list[str]) -> None:
    """All files last, each atomically, once every check has passed."""
    write_csv(out / f"{name}_test_probs.csv",
              pd.concat([sample.iloc[:, :1], pd.DataFrame(final, columns=prob_columns(classes))], axis=1))
    write_oof_outputs(out, name, data, blended_oof, classes, report)
    write_csv(out / f"{name}.csv", frame)
    print(f"wrote {out / name}.csv (+ _test_probs.csv, _oof_probs.csv, .md)")


def write_oof_outputs(out: Path, name: str, data: OofData, blended_oof: np.ndarray, classes: list[str],
                      report: list[str]) -> None:
    """<name>_oof_probs.csv and the report <name>.md (also printed)."""
    write_csv(out / f"{name}_oof_probs.csv", pd.concat([pd.DataFrame({"id": data.ids, "fold": data.fold_of}),
                                                        pd.DataFrame(blended_oof, columns=prob_columns(classes))],
                                                       axis=1))
    write_text(out / f"{name}.md", "\n".join(report))
    print("\n".join(report))


def leaderboard_table(sample: pd.DataFrame, solution: pd.DataFrame, p: Predictor, views: np.ndarray,
                      final: pd.DataFrame, proba: bool, source: Path) -> pd.DataFrame:
    """Public/private score of fold 0 alone, the fold ensemble, the ensemble + TTA, and the submission."""
    rows = []
    for label, probs in ensemble_variants(p, views).items():
        frame = build_submission(sample, p.classes, probs, p.labels_from_probs(probs), proba, source)
        rows.append({"predictions": f"{p.exp_dir.name}: {label}", **score_frame(frame, solution, source=source)})
    rows.append({"predictions": "submission", **score_frame(final, solution, source=source)})
    return pd.DataFrame(rows)


def predict_files(opt: InferOptions, images: list[str]) -> pd.DataFrame:
    """Label and probabilities for a few image files (mean over the experiments); printed as a table."""
    threshold = parse_threshold(opt.threshold)
    if opt.tta == "greedy" or threshold == "eer" and len(opt.exps) > 1:
        raise UserError("--images takes --tta auto/none/list and, with several experiments, a numeric threshold")
    predictors = load_predictors(dataclasses.replace(opt, threshold=""))
    lead = predictors[0]
    lead.threshold = lead.resolve_threshold(threshold)
    probs = np.mean([p.predict_files(images) for p in predictors], axis=0)
    frame = pd.DataFrame({"image": images, "label": lead.labels_from_probs(probs), "confidence": probs.max(1)})
    frame = pd.concat([frame, pd.DataFrame(probs, columns=prob_columns(lead.classes))], axis=1)
    print(frame.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return frame
