"""pseudo_label.py's rounds: each fold's model (its final weights) labels the unlabelled (and optionally test)
images, its confident predictions join that fold's training split, every fold is retrained, and the next
round starts from the new experiment. Each round writes its pseudo-label CSVs and a report row."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from src.core.atomic import check_writable, write_csv, write_text
from src.core.config import config_from_dict, load_config_file
from src.core.repro import REPO, git_commit
from src.core.rundir import exp_dir, write_json
from src.core.tables import markdown_table
from src.data.extra_rows import PSEUDO_CSV, split_of
from src.data.unlabeled import TEST_TRUTH, UNLABELED_TRUTH, known_labels, unlabeled_ids
from src.infer.pipeline import InferOptions, make_submission
from src.infer.predictor import Predictor
from src.pseudo.select import per_round, pseudo_frame, select_confident, selection_table
from src.train.config import TrainConfig
from src.train.cv import train_folds
from src.train.oof_summary import pooled_score


@dataclass
class PseudoOptions:
    """pseudo_label.py's options; the script's flags take their defaults from here."""

    exp: str
    name: str = ""
    rounds: int = 3
    threshold: float = 0.8
    max_per_class: str = "0"
    balanced: bool = False
    soft: bool = False
    unlabeled_dir: str = "unlabeled"
    use_test: bool = False
    test_dir: str = "test"
    tta: str = "auto"
    retrain_config: str = ""
    runs_dir: str = "runs"
    out_dir: str = "pseudo"
    report_dir: str = "reports"
    submissions_dir: str = "submissions"
    device: str = "auto"
    quiet: bool = True


def label_round(predictor: Predictor, ids: list[str], images: np.ndarray, opt: PseudoOptions, round_index: int,
                out: Path, truth: dict | None) -> pd.DataFrame:
    """Pseudo-labels for every fold from that fold's own model; returns the per-class table over folds."""
    tables = []
    for fold_model in predictor.folds:
        probs = predictor.predict_views(images, predictor.views, folds=[fold_model], quiet=opt.quiet).mean(axis=(0, 1))
        cap = per_round(opt.max_per_class, opt.rounds)[round_index - 1]
        chosen = select_confident(probs, opt.threshold, cap, opt.balanced)
        frame = pseudo_frame(ids, probs, chosen, predictor.classes, round_index)
        folder = out / f"fold{fold_model.fold}"
        write_json(folder / "meta.json", {
            "fold": fold_model.fold, "classes": predictor.classes, "split": split_of(predictor.fingerprint),
            "round": round_index, "source_exp": str(predictor.exp_dir),
            "sources": [opt.unlabeled_dir] + ([opt.test_dir] if opt.use_test else []),
            "threshold": opt.threshold, "max_per_class": cap, "balanced": opt.balanced,
            "views": predictor.views, "weights": f"last.pt of epoch {fold_model.epoch} (final, EMA when kept)",
            "created": datetime.now().isoformat(timespec="seconds"),
            "git_commit": git_commit(REPO)})
        write_csv(folder / PSEUDO_CSV, frame)
        tables.append(selection_table(frame, predictor.classes, truth).assign(fold=fold_model.fold))
    return pd.concat(tables)


def leaderboard(name: str, opt: PseudoOptions) -> dict:
    """Each round's submission and score from its final weights, the ones that label the next round: with few
    labels best.pt's epoch is chosen on a handful of validation rows (at 20 per fold it lost 0.2-1.9 pp on the
    demo's private test digits, docs/results.md)."""
    return make_submission(InferOptions(exps=[name], runs_dir=opt.runs_dir, tta=opt.tta, name=name,
                                        out_dir=opt.submissions_dir, device=opt.device, weights="final",
                                        quiet=opt.quiet))


def run_rounds(opt: PseudoOptions) -> pd.DataFrame:
    """Round 0 is the given experiment; rounds 1..R add pseudo-labels and retrain all folds."""
    base = exp_dir(opt.runs_dir, opt.exp)
    prefix = opt.name or opt.exp
    for folder, what in ((opt.out_dir, "pseudo-labels"), (opt.runs_dir, "run directories"),
                         (opt.report_dir, "the report"), (opt.submissions_dir, "submissions")):
        check_writable(folder, what)
    # Final (EMA) weights: best.pt's epoch was chosen on each fold's validation labels, and these pseudo-labels
    # go back into that fold's training.
    predictor = Predictor.load(base, device=opt.device, tta=opt.tta, weights="final")
    # Retraining sees many more rows than the labelled-only start, so it may want other settings
    # (e.g. a larger batch and fewer epochs); everything else stays the starting experiment's.
    overrides = load_config_file(opt.retrain_config) if opt.retrain_config else {}
    retrain_base = config_from_dict(overrides, TrainConfig, source=opt.retrain_config or "retrain config",
                                    base=predictor.cfg)
    data_dir = Path(predictor.cfg.data_dir)
    folders = [opt.unlabeled_dir] + ([opt.test_dir] if opt.use_test else [])
    ids = unlabeled_ids(data_dir, folders, "--unlabeled-dir")
    images = predictor.cached([data_dir / i for i in ids], opt.quiet)
    truth = known_labels(data_dir, {opt.unlabeled_dir: UNLABELED_TRUTH, opt.test_dir: TEST_TRUTH})
    print(f"pseudo-labelling {len(ids)} images from {', '.join(sorted({i.split('/')[0] for i in ids}))}"
          f"{' (test images: transductive, recorded in each run config)' if opt.use_test else ''}")
    rows = [{"round": 0, "exp": opt.exp, "selected_per_fold": 0, "pseudo_accuracy": np.nan,
             "oof_accuracy_final": pooled_score(base, "accuracy", strict=False), **leaderboard(opt.exp, opt)}]
    per_class = []
    for r in range(1, opt.rounds + 1):
        name = f"{prefix}-pl{r}"
        out = Path(opt.out_dir) / name
        table = label_round(predictor, ids, images, opt, r, out, truth)
        per_class.append(table.assign(round=r))
        cfg = dataclasses.replace(retrain_base, exp=name, pseudo=str(out), pseudo_soft=opt.soft,
                                  runs_dir=opt.runs_dir, device=opt.device).validate()
        train_folds(cfg, "all", resume=True, quiet=opt.quiet)
        overall = table[table["class"] == "all"]
        rows.append({"round": r, "exp": name, "selected_per_fold": float(overall["selected"].mean()),
                     "pseudo_accuracy": float(overall["accuracy"].mean()) if "accuracy" in overall else np.nan,
                     "oof_accuracy_final": pooled_score(exp_dir(opt.runs_dir, name), "accuracy"), **leaderboard(name, opt)})
        print(markdown_table(pd.DataFrame(rows)))
        predictor = Predictor.load(exp_dir(opt.runs_dir, name), device=opt.device, tta=opt.tta, weights="final")
    report = pd.DataFrame(rows)
    write_report(opt, report, pd.concat(per_class))
    return report


def write_report(opt: PseudoOptions, report: pd.DataFrame, per_class: pd.DataFrame) -> None:
    folder = Path(opt.report_dir)
    prefix = opt.name or opt.exp
    write_csv(folder / f"pseudo_{prefix}.csv", report)
    write_csv(folder / f"pseudo_{prefix}_per_class.csv", per_class)
    mean_per_class = per_class.groupby(["round", "class"], sort=False)[
        [c for c in ("selected", "accuracy") if c in per_class]].mean().reset_index()
    text = [f"# Pseudo-labelling: {prefix} (from {opt.exp})", "",
            f"threshold {opt.threshold}, max per class per round {opt.max_per_class} (0 = none), balanced "
            f"{opt.balanced}, {'soft' if opt.soft else 'hard'} labels, "
            f"images from {opt.unlabeled_dir}{' and ' + opt.test_dir if opt.use_test else ''}; pseudo-labels per "
            f"fold from that fold's own model; selected and accuracy are means over folds.", "",
            "oof_accuracy_final: the pooled OOF accuracy of each round's final weights (nothing chosen on those rows); "
            "public / private: the submission of those final weights (infer.py --weights final).", "",
            markdown_table(report), "", "## Per class (mean over folds)", "", markdown_table(mean_per_class, 3), ""]
    write_text(folder / f"pseudo_{prefix}.md", "\n".join(text))
