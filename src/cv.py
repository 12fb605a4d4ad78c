"""Cross-validated training: validate the data and folds once, decode images once, train the chosen folds."""
from __future__ import annotations

import shutil
import signal
from pathlib import Path

import numpy as np

from src.config import TrainConfig, UserError, config_to_dict
from src.data import channel_stats, decode_all, file_sha256, infer_spec, read_train_table, to_array
from src.engine import setup_runtime
from src.folds import check_class_counts, default_folds_path, parse_fold_arg, read_folds
from src.repro import git_commit, package_versions
from src.runs import exp_dir, fold_dir, markdown_table, summarize_oof, write_json
from src.trainer import DataInfo, FoldData, FoldTrainer

REPO = Path(__file__).resolve().parent.parent


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def prepare_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> bool:
    """Make the fold's folder; True when it holds a last.pt to resume from.

    An existing run is never mixed with a new one: it needs --resume (continue) or --overwrite (replace).
    """
    if resume and (run_dir / "last.pt").is_file():
        return True
    if run_dir.exists() and any(run_dir.iterdir()):
        if not (resume or overwrite):
            raise UserError(f"{run_dir} already holds a run; pass --resume to continue it or --overwrite to replace it")
        shutil.rmtree(run_dir)  # with --resume: a run that never finished an epoch; nothing to keep
    run_dir.mkdir(parents=True, exist_ok=True)
    return False


def train_folds(cfg: TrainConfig, fold_arg: str, resume: bool = False, overwrite: bool = False,
                quiet: bool = False) -> list[dict]:
    """Train each requested fold; returns one metrics dict per fold and prints the OOF summary."""
    signal.signal(signal.SIGTERM, _raise_interrupt)  # a scheduler's kill ends like Ctrl-C: last.pt is intact
    table = read_train_table(cfg.data_dir, cfg.train_csv, cfg.image_dir, cfg.id_col, cfg.label_col)
    folds_path = Path(cfg.folds_csv) if cfg.folds_csv else default_folds_path("folds", cfg.data_dir)
    fold_of = read_folds(folds_path, table, cfg.id_col, cfg.label_col)
    n_folds = int(fold_of.max()) + 1
    check_class_counts(table.labels, table.classes, n_folds, str(table.source))
    folds = parse_fold_arg(fold_arg, n_folds)
    rt = setup_runtime(cfg)
    print(f"data: {len(table.ids)} images, {len(table.classes)} classes, {n_folds} folds from {folds_path}; "
          f"device {rt.device}")
    decoded = decode_all(table.paths, quiet=quiet)
    spec = infer_spec(decoded, cfg.image_size_px)
    images = to_array(decoded, spec, cfg.resize_interp)
    del decoded
    provenance = {"n_folds": n_folds, "git_commit": git_commit(REPO), "packages": package_versions(),
                  "train_csv_sha256": file_sha256(table.source) if table.source.is_file() else None,
                  "folds_csv": str(folds_path), "folds_csv_sha256": file_sha256(folds_path)}
    results = []
    for k in folds:
        run_dir = fold_dir(cfg.runs_dir, cfg.exp, k)
        is_val = fold_of == k
        train_rows = np.flatnonzero(~is_val)
        mean, std = channel_stats(images[train_rows])
        info = DataInfo(table.classes, spec, mean, std)
        data = FoldData(images[train_rows], table.labels[train_rows], images[is_val], table.labels[is_val],
                        [table.ids[i] for i in np.flatnonzero(is_val)])
        trainer = FoldTrainer(cfg, k, run_dir, data, info, rt)  # builds the model: bad names fail before any file
        resuming = prepare_run_dir(run_dir, resume, overwrite)
        write_json(run_dir / "config.json", {"config": config_to_dict(cfg), "fold": k, **info.to_dict(),
                                             "n_train": len(train_rows), "n_val": int(is_val.sum()), **provenance})
        if resuming:
            trainer.resume()
        trainer.fit(quiet)
        results.append(trainer.write_oof())
    summary = summarize_oof(exp_dir(cfg.runs_dir, cfg.exp), table.classes)
    print(f"\nOOF summary ({exp_dir(cfg.runs_dir, cfg.exp)}/oof_summary.md):\n{markdown_table(summary)}")
    return results
