"""infer.py's flow: OOF check of TTA views, blend experiments, predict test, write and score a submission."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from src.atomic import write_csv, write_text
from src.data import decode_all, read_train_table, resolve_image_path
from src.ensemble import blend, fit_weights, nested_blend
from src.errors import UserError
from src.folds import read_folds
from src.metrics import accuracy, logloss
from src.predict import Predictor
from src.runs import markdown_table, prob_columns
from src.submission import build_submission, read_sample, read_solution, score_frame
from src.tta import greedy_views


@dataclass
class OofData:
    """The labelled rows all experiments were validated on, in fold-file order."""

    ids: list[str]
    y: np.ndarray
    fold_of: np.ndarray
    decoded: list[np.ndarray]


def load_oof_data(predictors: list[Predictor], quiet: bool) -> OofData:
    """Training rows and folds of the experiments, which must share one fold file and class list."""
    cfg = predictors[0].cfg
    for p in predictors[1:]:
        if (p.cfg.data_dir, p.folds_csv) != (cfg.data_dir, predictors[0].folds_csv):
            raise UserError(f"{p.exp_dir} and {predictors[0].exp_dir} used different data or fold files; "
                            f"OOF rows would not line up")
    table = read_train_table(cfg.data_dir, cfg.train_csv, cfg.image_dir, cfg.id_col, cfg.label_col)
    if table.classes != predictors[0].classes:
        raise UserError(f"{table.source}: classes changed since {predictors[0].exp_dir} was trained")
    fold_of = read_folds(predictors[0].folds_csv, table, cfg.id_col, cfg.label_col)
    return OofData(table.ids, table.labels, fold_of, decode_all(table.paths, quiet=quiet))


def oof_by_view(p: Predictor, data: OofData, views: list[str], quiet: bool) -> dict[str, np.ndarray]:
    """Each fold model predicts its own validation rows under each view: {view: (N, classes)}."""
    images = p.prepare(data.decoded)
    out = {v: np.zeros((len(data.y), len(p.classes)), dtype=np.float32) for v in views}
    for fold in p.folds:
        rows = np.flatnonzero(data.fold_of == fold.fold)
        probs = p.predict_views(images[rows], views, folds=[fold], quiet=quiet)[0]
        for i, v in enumerate(views):
            out[v][rows] = probs[i]
    return out


def tta_table(y: np.ndarray, by_view: dict[str, np.ndarray], chosen: list[str]) -> pd.DataFrame:
    rows = [{"views": v, "oof_accuracy": accuracy(y, probs), "oof_log_loss": logloss(y, probs)}
            for v, probs in by_view.items()]
    everything = np.mean(list(by_view.values()), axis=0)
    rows.append({"views": f"mean of all {len(by_view)}", "oof_accuracy": accuracy(y, everything),
                 "oof_log_loss": logloss(y, everything)})
    mine = np.mean([by_view[v] for v in chosen], axis=0)
    rows.append({"views": "chosen: " + "+".join(chosen), "oof_accuracy": accuracy(y, mine),
                 "oof_log_loss": logloss(y, mine)})
    return pd.DataFrame(rows)


def blend_table(y: np.ndarray, fold_of: np.ndarray, names: list[str], oofs: list[np.ndarray]
                ) -> tuple[pd.DataFrame, np.ndarray]:
    """Each experiment alone, their mean, and fitted weights scored by the nested scheme."""
    rows = [{"blend": n, "oof_accuracy": accuracy(y, o), "oof_log_loss": logloss(y, o)} for n, o in zip(names, oofs)]
    mean = np.mean(oofs, axis=0)
    rows.append({"blend": "mean", "oof_accuracy": accuracy(y, mean), "oof_log_loss": logloss(y, mean)})
    nested, _ = nested_blend(y, fold_of, oofs)
    weights = fit_weights(y, oofs)
    rows.append({"blend": "fitted weights (nested: each fold scored with weights fitted on the others)",
                 "oof_accuracy": accuracy(y, nested), "oof_log_loss": logloss(y, nested)})
    return pd.DataFrame(rows), weights


def test_images(data_dir: Path, test_dir: str, sample: pd.DataFrame, sample_path: Path) -> list[Path]:
    """Image path per sample_submission id; every id must have an image in the test folder."""
    root = data_dir / test_dir
    if not root.is_dir():
        raise UserError(f"{root}: test image folder not found (set --test-dir)")
    return [resolve_image_path(i, root, f"{sample_path} line {n + 2}") for n, i in enumerate(sample.iloc[:, 0])]


@dataclass
class InferOptions:
    """infer.py's options (see its --help)."""

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
    quiet: bool = True


def load_predictors(opt: InferOptions) -> list[Predictor]:
    """One Predictor per experiment; experiments to be blended must share their class list."""
    threshold = None if not opt.threshold else (opt.threshold if opt.threshold == "eer" else _float(opt.threshold))
    predictors = [Predictor.load(Path(opt.runs_dir) / e, opt.device, opt.tta, threshold) for e in opt.exps]
    for p in predictors[1:]:
        if p.classes != predictors[0].classes:
            raise UserError(f"{p.exp_dir} has classes {p.classes}, {predictors[0].exp_dir} has "
                            f"{predictors[0].classes}; only experiments on the same data can be blended")
    return predictors


def make_submission(opt: InferOptions) -> dict:
    """The whole flow; returns the leaderboard scores (empty when there is no solution file)."""
    predictors = load_predictors(opt)
    data_dir = Path(opt.data_dir or predictors[0].cfg.data_dir)
    sample_path = data_dir / opt.sample_csv
    sample = read_sample(sample_path)
    paths = test_images(data_dir, opt.test_dir, sample, sample_path)  # fail on a missing image before any work
    data = load_oof_data(predictors, opt.quiet)
    report, oofs = [f"# Submission {opt.name}\n"], []
    for p in predictors:
        by_view = oof_by_view(p, data, p.views, opt.quiet)
        p.views = greedy_views(data.y, by_view) if opt.tta == "greedy" else p.views
        table = tta_table(data.y, by_view, p.views)
        report.append(f"## TTA on OOF rows: {p.exp_dir.name}\n\n{markdown_table(table)}\n")
        oofs.append(np.mean([by_view[v] for v in p.views], axis=0))
    weights = np.full(len(predictors), 1 / len(predictors))
    if len(predictors) > 1:
        table, fitted = blend_table(data.y, data.fold_of, [p.exp_dir.name for p in predictors], oofs)
        weights = fitted if opt.blend == "fitted" else weights
        report.append(f"## Blend on OOF rows\n\n{markdown_table(table)}\n\nweights used ({opt.blend}): "
                      + ", ".join(f"{p.exp_dir.name}={w:.3f}" for p, w in zip(predictors, weights)) + "\n")
    start = time.perf_counter()
    decoded = decode_all(paths, quiet=opt.quiet)
    # identity is always predicted too, for the single-fold / no-TTA rows of the leaderboard table
    per_exp = [p.predict_views(p.prepare(decoded), with_identity(p.views), quiet=opt.quiet) for p in predictors]
    passes = sum(v.shape[0] * v.shape[1] for v in per_exp)
    report.append(f"Test inference: {len(paths)} images x {passes} (fold, view) passes in "
                  f"{time.perf_counter() - start:.1f} s (decoding included).\n")
    final = blend([chosen_mean(p, v) for p, v in zip(predictors, per_exp)], weights)
    frame = build_submission(sample, predictors[0].classes, final, predictors[0].labels_from_probs(final),
                             opt.proba, sample_path)
    out = Path(opt.out_dir)
    write_csv(out / f"{opt.name}.csv", frame)
    probs = pd.concat([sample.iloc[:, :1], pd.DataFrame(final, columns=prob_columns(predictors[0].classes))], axis=1)
    write_csv(out / f"{opt.name}_test_probs.csv", probs)
    oof_frame = pd.DataFrame({"id": data.ids, "fold": data.fold_of})
    blended_oof = blend(oofs, weights)
    write_csv(out / f"{opt.name}_oof_probs.csv",
              pd.concat([oof_frame, pd.DataFrame(blended_oof, columns=prob_columns(predictors[0].classes))], axis=1))
    scores = {}
    solution = data_dir / opt.solution_csv
    if solution.is_file():
        table = leaderboard_table(sample, read_solution(solution), predictors[0], per_exp[0], frame, opt.proba)
        report.append(f"## Local leaderboard ({solution})\n\n{markdown_table(table)}\n")
        scores = table.iloc[-1].to_dict()
    write_text(out / f"{opt.name}.md", "\n".join(report))
    print("\n".join(report))
    print(f"wrote {out / opt.name}.csv (+ _test_probs.csv, _oof_probs.csv, .md)")
    return scores


def leaderboard_table(sample: pd.DataFrame, solution: pd.DataFrame, p: Predictor, views: np.ndarray,
                      final: pd.DataFrame, proba: bool) -> pd.DataFrame:
    """Public/private score of fold 0 alone, the fold ensemble, the ensemble + TTA, and the submission."""
    variants = {"fold 0, no TTA": views[0, 0], f"{len(p.folds)}-fold ensemble, no TTA": views[:, 0].mean(0),
                f"{len(p.folds)}-fold ensemble + TTA ({'+'.join(p.views)})": chosen_mean(p, views)}
    rows = []
    for label, probs in variants.items():
        frame = build_submission(sample, p.classes, probs, p.labels_from_probs(probs), proba, Path("sample"))
        rows.append({"predictions": f"{p.exp_dir.name}: {label}", **score_frame(frame, solution)})
    rows.append({"predictions": "submission", **score_frame(final, solution)})
    return pd.DataFrame(rows)


def with_identity(views: list[str]) -> list[str]:
    return list(dict.fromkeys(["identity"] + views))


def chosen_mean(p: Predictor, views: np.ndarray) -> np.ndarray:
    """Mean over folds and the predictor's chosen views of a (folds, with_identity(views), N, C) array."""
    index = [with_identity(p.views).index(v) for v in p.views]
    return views[:, index].mean(axis=(0, 1))


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise UserError(f"--threshold {text!r}: give a number or 'eer'") from None


def predict_files(opt: InferOptions, images: list[str]) -> pd.DataFrame:
    """Label and probabilities for a few image files (mean over the experiments); printed as a table."""
    predictors = load_predictors(opt)
    probs = np.mean([p.predict_array(p.prepare(decode_all([Path(i) for i in images]))) for p in predictors], axis=0)
    classes = predictors[0].classes
    frame = pd.DataFrame({"image": images, "label": predictors[0].labels_from_probs(probs),
                          "confidence": probs.max(1)})
    frame = pd.concat([frame, pd.DataFrame(probs, columns=prob_columns(classes))], axis=1)
    print(frame.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return frame
