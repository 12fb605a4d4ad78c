"""Cross-validated training: validate the data and folds once, decode images once, train the chosen folds."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from src.core.atomic import check_writable, write_csv
from src.core.config import config_to_dict
from src.core.errors import UserError
from src.core.interrupts import raise_interrupt
from src.core.metrics import metric_names, monitor_direction
from src.core.repro import REPO, derived_seed, git_commit, package_versions
from src.core.rundir import OOF_BEST, exp_dir, fold_dir, oof_arrays, read_oof, write_json
from src.data.augment import resolve_flips
from src.data.cache import cached_images, default_cache_dir
from src.data.contract import LabelTable, data_fingerprint, read_train_table
from src.data.extra_rows import (
    load_pseudo_rows,
    load_synthetic_rows,
    read_pseudo_dir,
    read_sample_dir,
    resolve_pseudo_dir,
    resolve_sample_dir,
)
from src.data.folds import check_class_counts, default_folds_path, parse_fold_arg, read_folds
from src.data.holdout import split_holdout
from src.data.images import channel_stats
from src.data.rows import ConcatRows, RowView
from src.data.unlabeled import UnlabeledImages, load_unlabeled, without_copies
from src.train.config import TrainConfig
from src.train.consistency import semi_steps, threshold_note
from src.train.cpu_speed import describe, resolve_cpu_speed
from src.train.diagnostics import write_diagnostics
from src.train.distributed import barrier, shutdown
from src.train.engine import setup_runtime
from src.train.fold_trainer import DataInfo, FoldData, FoldTrainer
from src.train.hub import HubWeights, check_hub_weights, is_hub, resolve_hub
from src.train.oof_summary import counted_folds, summarize_oof, summary_text, validation_readers


def run_dir_action(run_dir: Path, resume: bool, overwrite: bool) -> str:
    """'resume', 'fresh' or 'replace' for a fold's folder, decided before any training starts.

    An existing run is never mixed with a new one: it needs --resume (continue) or --overwrite (replace).
    """
    if resume and (run_dir / "last.pt").is_file():
        return "resume"
    if run_dir.exists() and any(run_dir.iterdir()):
        if not (resume or overwrite):
            raise UserError(f"{run_dir} already holds a run; pass --resume to continue it or --overwrite to replace it")
        return "replace"  # with --resume: a run that never finished an epoch; nothing to keep
    return "fresh"


def write_run_record(run_dir: Path, action: str, record: dict) -> None:
    """config.json: written when a run starts; a resume only appends when and with which code it went on."""
    if action == "replace":
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "config.json"
    if action == "resume" and path.is_file():
        previous = json.loads(path.read_text())
        previous.setdefault("resumed", []).append({"at": datetime.now().isoformat(timespec="seconds"),
                                                   "git_commit": record["git_commit"]})
        record = previous
    write_json(path, record)


def load_split(data_dir: str, train_csv: str, image_dir: str, id_col: str, label_col: str,
               folds_csv: str) -> tuple[LabelTable, np.ndarray, Path]:
    """train.csv (or ImageFolder) and the fold file, both validated; (table, fold per row, fold file). The table
    holds the cross-validation rows only: a fold file's holdout rows ride along as `table.holdout`, out of reach of
    training, checkpoint selection and tuning."""
    table = read_train_table(data_dir, train_csv, image_dir, id_col, label_col)
    folds_path = Path(folds_csv) if folds_csv else default_folds_path("folds", data_dir, table)
    table, fold_of = split_holdout(table, read_folds(folds_path, table, id_col, label_col))
    check_class_counts(table.labels, table.classes, int(fold_of.max()) + 1, str(table.source))
    return table, fold_of, folds_path


def load_labelled(cfg: TrainConfig) -> tuple[LabelTable, np.ndarray, Path]:
    """load_split for a training config, plus the check that its monitored metric fits the task."""
    table, fold_of, folds_path = load_split(cfg.data_dir, cfg.train_csv, cfg.image_dir, cfg.id_col, cfg.label_col,
                                            cfg.folds_csv)
    if cfg.monitor not in metric_names(len(table.classes)):
        raise UserError(f"--monitor {cfg.monitor} needs a binary task; {table.source} has "
                        f"{len(table.classes)} classes")
    return table, fold_of, folds_path


def subsample(rows: np.ndarray, labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """`fraction` of `rows` from every class (at least one each), seeded, in their original order."""
    if fraction >= 1:
        return rows
    rng = np.random.default_rng(seed)
    keep = [rng.choice(part, max(1, round(fraction * len(part))), replace=False)
            for c in np.unique(labels[rows]) for part in [rows[labels[rows] == c]]]
    return np.sort(np.concatenate(keep))


def fold_trainer(cfg: TrainConfig, k: int, table: LabelTable, fold_of: np.ndarray, images: np.ndarray,
                 info: dict, rt, stats: tuple[list[float], list[float]] | None = None,
                 unlabeled: UnlabeledImages | None = None) -> FoldTrainer:
    """The trainer for fold k: its rows (plus synthetic rows, training side only; the unlabelled images of
    consistency training, less copies of its validation rows), normalisation from the rows it trains on (or the
    pretrained weights' `stats`), and the model."""
    is_val = fold_of == k
    train_rows = subsample(np.flatnonzero(~is_val), table.labels, cfg.train_fraction, derived_seed(cfg.seed, k, -3))
    if cfg.train_fraction < 1:
        print(f"fold {k}: {len(train_rows)} of {int((~is_val).sum())} training rows (train_fraction "
              f"{cfg.train_fraction:g}, per class)")
    real = (RowView(images, train_rows), table.labels[train_rows], [table.ids[i] for i in train_rows])
    parts, extra = [] if cfg.synthetic_only else [real], {}
    if cfg.synthetic:
        *rows, extra["synthetic"] = load_synthetic_rows(
            cfg.synthetic, k, table.classes, info["fingerprint"], info["spec"], cfg.resize_interp, real[1],
            cfg.synthetic_ratio, cfg.synthetic_per_class, cfg.synthetic_unfiltered)
        parts.append(rows)
        print(f"fold {k}: {extra['synthetic']['rows']} synthetic training rows from {extra['synthetic']['folder']}"
              f"{' (synthetic only)' if cfg.synthetic_only else ''}")
    targets = []  # soft pseudo-labels: every row's target distribution, one-hot for the labelled ones
    if cfg.pseudo:
        *rows, soft, extra["pseudo"] = load_pseudo_rows(cfg.pseudo, k, table, cfg.data_dir, info["fingerprint"],
                                                        info["spec"], cfg.resize_interp, cfg.pseudo_soft)
        if soft is not None:
            targets = [np.eye(len(table.classes), dtype=np.float32)[p[1]] for p in parts] + [soft]
        parts.append(rows)
        print(f"fold {k}: {extra['pseudo']['rows']} pseudo-labelled training rows from {extra['pseudo']['folder']} "
              f"(images from {', '.join(extra['pseudo']['sources'] or ['?'])})")
    train_images = parts[0][0] if len(parts) == 1 else ConcatRows([p[0] for p in parts])  # rows, not copies
    train_labels = np.concatenate([p[1] for p in parts])
    train_ids = [i for p in parts for i in p[2]]
    if len(train_labels) == 0:
        raise UserError(f"fold {k}: no training rows (the synthetic or pseudo-label selection is empty)")
    mean, std = stats or channel_stats(train_images)
    data = FoldData(train_images, train_labels, RowView(images, is_val), table.labels[is_val],
                    [table.ids[i] for i in np.flatnonzero(is_val)], train_ids, extra,
                    np.concatenate(targets) if targets else None)
    if unlabeled is not None:
        data.unlabeled, data.unlabeled_truth, extra["unlabeled"] = fold_unlabeled(cfg, k, unlabeled, data.val_images,
                                                                                  len(train_labels))
    return FoldTrainer(cfg, k, fold_dir(cfg.runs_dir, cfg.exp, k), data, DataInfo(mean=mean, std=std, **info), rt)


def fold_unlabeled(cfg: TrainConfig, k: int, unlabeled: UnlabeledImages, val_images, n_train: int) -> tuple:
    """Fold k's unlabelled stream (copies of its validation images left out), their truth, and the record."""
    keep = without_copies(unlabeled, val_images)
    if not len(keep):
        raise UserError(f"fold {k}: every unlabelled image is a copy of one of its validation images; add unlabelled "
                        f"images that are not in train.csv")
    copies = len(unlabeled.ids) - len(keep)
    record = {"folders": unlabeled.folders, "transductive": cfg.unlabeled_test, "rows": len(keep),
              "image_sha1": unlabeled.sha1, "copies_of_validation_rows_left_out": copies,
              "copies_of_holdout_rows_left_out": unlabeled.holdout_copies}
    steps = semi_steps(n_train, len(keep), cfg.batch_size, cfg.consistency_ratio)
    left_out = [f"{n} copies of its {what} images left out" for n, what in
                ((copies, "validation"), (unlabeled.holdout_copies, "holdout")) if n]
    print(f"fold {k}: consistency training on {len(keep)} unlabelled images from {', '.join(unlabeled.folders)}"
          f"{' (test images: transductive)' if cfg.unlabeled_test else ''}{'; ' if left_out else ''}"
          f"{'; '.join(left_out)}; {steps} steps per epoch")
    return RowView(unlabeled.images, keep), unlabeled.truth[keep], record


def train_folds(cfg: TrainConfig, fold_arg: str, resume: bool = False, overwrite: bool = False,
                quiet: bool = False, fold_source: str = "--fold", on_epoch=None,
                validate_last_only: bool = False) -> list[dict]:
    """Train each requested fold; returns one metrics dict per fold and prints the OOF summary. Under
    torchrun every process runs this; rank 0 alone prints and writes files. `on_epoch(fold, row)` is called
    after every epoch (FoldTrainer.fit). `validate_last_only` (tune.py's cheap trials) scores the validation
    rows after the last epoch alone, unless the plateau scheduler or early stopping need every epoch's score."""
    signal.signal(signal.SIGTERM, raise_interrupt)  # a scheduler's kill ends like Ctrl-C: last.pt is intact
    table, fold_of, folds_path = load_labelled(cfg)
    hub = resolve_hub(cfg.model, cfg.pretrained) if is_hub(cfg.pretrained) else None
    if hub:  # missing hub weights stop the run here, before any image is decoded or file written
        check_hub_weights(hub)
    n_folds = int(fold_of.max()) + 1
    folds = parse_fold_arg(fold_arg, n_folds, fold_source)
    actions = {k: run_dir_action(fold_dir(cfg.runs_dir, cfg.exp, k), resume, overwrite) for k in folds}
    check_writable(cfg.runs_dir, "run directories")
    rt = setup_runtime(cfg, distributed=True)
    try:
        if rt.dist.is_main:
            return _train_folds(cfg, table, fold_of, folds_path, folds, actions, rt, quiet, fold_source, hub, on_epoch,
                                validate_last_only)
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
            return _train_folds(cfg, table, fold_of, folds_path, folds, actions, rt, True, fold_source, hub,
                                validate_last_only=validate_last_only)
    finally:
        shutdown()


def _train_folds(cfg: TrainConfig, table: LabelTable, fold_of: np.ndarray, folds_path: Path, folds: list[int],
                 actions: dict, rt, quiet: bool, fold_source: str, hub: HubWeights | None,
                 on_epoch=None, validate_last_only: bool = False) -> list[dict]:
    n_folds = int(fold_of.max()) + 1
    processes = f" x {rt.dist.world_size} processes" if rt.dist.enabled else ""
    if fold_source not in ("--fold", "default"):
        print(f"fold {','.join(map(str, folds))} from {fold_source}")
    held = f" (+ {len(table.holdout.ids)} holdout rows set aside, never used here)" if table.holdout else ""
    print(f"data: {len(table.ids)} images{held}, {len(table.classes)} classes, {n_folds} folds from {folds_path}; "
          f"device {rt.device}{processes}")
    images = cached_images(table.paths, train_cache_dir(cfg), cfg.resize_interp, quiet,
                           image_size_px=cfg.image_size_px or (hub.input_size_px if hub else 0))
    spec = images.spec
    info = {"classes": table.classes, "spec": spec, "fingerprint": data_fingerprint(table, folds_path, images),
            "input_size_px": cfg.input_size_px or (hub.input_size_px if hub else 0)}
    stats = pretrained_stats(hub, spec.in_chans) if hub and cfg.normalize != "data" else None
    for k in folds:  # every fold's extra-row folders pass the leak guard before the first fold trains
        if cfg.synthetic:
            read_sample_dir(resolve_sample_dir(cfg.synthetic, k), k, table.classes, info["fingerprint"])
        if cfg.pseudo:
            read_pseudo_dir(resolve_pseudo_dir(cfg.pseudo, k), k, table, Path(cfg.data_dir), info["fingerprint"])
    unlabeled = None
    if cfg.consistency_weight:
        note = threshold_note(cfg, len(table.classes))
        if note:
            print(note)
        unlabeled = run_unlabeled(cfg, table, spec, quiet)
    fed_hw = (info["input_size_px"],) * 2 if info["input_size_px"] else (spec.height_px, spec.width_px)
    speed = resolve_cpu_speed(cfg, rt, spec.in_chans, len(table.classes), fed_hw, train_cache_dir(cfg),
                              recorded_speed(cfg, [k for k in folds if actions[k] == "resume"]))
    if speed:
        print(describe(speed))
    flips_used = resolve_flips(cfg.flips, spec.in_chans) if cfg.flips == "auto" else ""
    if flips_used:
        print(f"flips auto: {flips_used} ({'colour' if spec.in_chans >= 3 else 'grey'} images)")
    record = {"n_folds": n_folds, "folds_csv": str(folds_path), "git_commit": git_commit(REPO),
              "packages": package_versions(), "world_size": rt.dist.world_size,
              **({"pretrained_weights": hub.repo_id} if hub else {}), **({"cpu_speed": speed} if speed else {}),
              **({"flips_used": flips_used} if flips_used else {})}
    results = []
    for k in folds:
        trainer = fold_trainer(cfg, k, table, fold_of, images, info, rt, stats, unlabeled)  # builds, tries the model
        if actions[k] == "resume":  # checks last.pt against this run before anything in the folder changes
            trainer.resume()
        if rt.dist.is_main:
            write_run_record(trainer.run_dir, actions[k], {**trainer.header(), **record, "n_train": len(
                trainer.data.train_labels), "n_val": len(trainer.data.val_labels)})
            # Which rows trained this fold, so anyone can check that no validation id is among them.
            write_csv(trainer.run_dir / "train_rows.csv", pd.DataFrame({"id": trainer.data.train_ids}))
        barrier(rt.dist)  # a replaced run directory is gone before any rank reads or writes in it
        trainer.validate_last_only = validate_last_only
        trainer.fit(quiet, on_epoch)
        results.append(trainer.write_oof())
    if rt.dist.is_main:
        report_experiment(exp_dir(cfg.runs_dir, cfg.exp), table, images, cfg, info["fingerprint"])
    return results


def run_unlabeled(cfg: TrainConfig, table: LabelTable, spec, quiet: bool) -> UnlabeledImages:
    """The unlabelled images of consistency training: unlabeled_dir, plus test/ with unlabeled_test (transductive,
    so only by that flag: an unlabeled_dir that is test/ is refused)."""
    data_dir = Path(cfg.data_dir)
    if (data_dir / cfg.unlabeled_dir).resolve() == (data_dir / "test").resolve():
        raise UserError(f"--unlabeled-dir {cfg.unlabeled_dir}: that is test/; learning from the test images is "
                        f"transductive, so say so with --unlabeled-test (recorded in config.json)")
    folders = [cfg.unlabeled_dir] + (["test"] if cfg.unlabeled_test else [])
    flag = "--unlabeled-dir" + (" / --unlabeled-test" if cfg.unlabeled_test else "")
    return load_unlabeled(data_dir, folders, table, train_cache_dir(cfg), cfg.resize_interp, spec, quiet, flag)


def recorded_speed(cfg: TrainConfig, resumed: list[int]) -> dict | None:
    """The CPU precision choice the first resumed fold recorded (config.json's cpu_speed), so it continues as it
    began (folds of one run share one choice)."""
    for k in resumed:
        path = fold_dir(cfg.runs_dir, cfg.exp, k) / "config.json"
        if path.is_file():
            record = json.loads(path.read_text()).get("cpu_speed")
            if record:
                return record
    return None


def train_cache_dir(cfg: TrainConfig) -> Path:
    """--cache-dir, else the default beside the data folder."""
    return Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir(cfg.data_dir)


def pretrained_stats(hub: HubWeights, in_chans: int) -> tuple[list[float], list[float]]:
    """The pretrained weights' input mean/std; for grey input the channel average (timm sums the first conv's
    RGB filters into one, which sees a grey image like three equal channels)."""
    if in_chans == 1:
        return [float(np.mean(hub.mean))], [float(np.mean(hub.std))]
    return hub.mean, hub.std


def report_experiment(exp: Path, table: LabelTable, images: np.ndarray, cfg: TrainConfig, fingerprint: dict) -> None:
    """oof_summary (printed: the final weights' and the selected checkpoint's scores, and the CV epoch), the
    confusion matrix, per-class metrics and the most confidently wrong OOF images (of best.pt, which infer.py
    submits), over every fold of this experiment trained with this config."""
    config = config_to_dict(cfg)
    folds = counted_folds(exp, config, fingerprint)
    readers = validation_readers(config)
    summary, cv = summarize_oof(exp, table.classes, folds, cfg.monitor, monitor_direction(cfg.monitor, cfg.monitor_mode),
                                readers)
    oof = pd.concat([read_oof(exp / f"fold{k}" / OOF_BEST, table.classes)[2] for k in folds], ignore_index=True)
    row_of = {image_id: i for i, image_id in enumerate(table.ids)}
    write_diagnostics(exp, list(oof["id"]), *oof_arrays(oof, table.classes), table.classes,
                      RowView(images, [row_of[i] for i in oof["id"]]))
    print(f"\nOOF summary ({exp}/oof_summary.md; confusion.png, per_class.md, wrong.png beside it):\n"
          f"{summary_text(summary, cv, cfg.monitor, readers)}")
