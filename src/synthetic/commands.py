"""The gen_synthetic.py commands for one fold: train the generator, sample and filter, and the quality
report (Classification Accuracy Score: a classifier trained on synthetic images only, scored on the
fold's real validation rows, next to the same classifier trained on the real training rows)."""
from __future__ import annotations

import dataclasses
import json
import signal
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from src.core.atomic import check_writable, write_csv, write_text
from src.core.config import config_differences, config_from_dict, config_to_dict, load_config_file
from src.core.errors import UserError
from src.core.interrupts import raise_interrupt
from src.core.repro import REPO, git_commit, package_versions
from src.core.rundir import exp_dir, fold_dir, load_checkpoint
from src.core.tables import markdown_table
from src.data.contract import data_fingerprint, file_sha256
from src.data.extra_rows import MANIFEST, SPLIT_KEYS, read_sample_dir
from src.data.images import ImageSpec, decode_all, infer_spec, to_array
from src.synthetic.config import GenConfig
from src.synthetic.diffusion import build_noise_scheduler, sample_images, sample_seeds, save_grid
from src.synthetic.generator import GeneratorTrainer, load_generator
from src.synthetic.samples import apply_filter, kept_table, new_manifest, write_samples
from src.train.config import TrainConfig
from src.train.cv import load_split, run_dir_action, train_folds, write_run_record
from src.train.engine import norm_tensors, predict_probs, setup_runtime
from src.train.models import build_model


@dataclasses.dataclass
class FoldImages:
    """The labelled data decoded once at its own size, and the split it belongs to."""

    classes: list[str]
    labels: np.ndarray
    fold_of: np.ndarray
    images: np.ndarray
    spec: ImageSpec
    fingerprint: dict
    folds_path: Path


def load_fold_images(cfg: GenConfig, quiet: bool) -> FoldImages:
    table, fold_of, folds_path = load_split(cfg.data_dir, cfg.train_csv, cfg.image_dir, cfg.id_col, cfg.label_col,
                                            cfg.folds_csv)
    decoded = decode_all(table.paths, quiet=quiet)
    spec = infer_spec(decoded, 0)
    images = to_array(decoded, spec, "area")
    return FoldImages(table.classes, table.labels, fold_of, images, spec,
                      data_fingerprint(table, folds_path, images), folds_path)


def gen_dir(cfg: GenConfig, fold: int) -> Path:
    return Path(cfg.out_dir) / cfg.exp / f"fold{fold}"


def train_generator(cfg: GenConfig, fold: int, data: FoldImages, resume: bool, overwrite: bool, quiet: bool) -> Path:
    """Train (or resume) fold `fold`'s generator on that fold's training rows only."""
    out = gen_dir(cfg, fold)
    action = run_dir_action(out, resume, overwrite)
    check_writable(out.parent, "generator folders")
    rt = setup_runtime(cfg)
    rows = np.flatnonzero(data.fold_of != fold)  # never the fold's validation rows
    trainer = GeneratorTrainer(cfg, fold, out, data.images[rows], data.labels[rows], data.classes, data.spec,
                               data.fingerprint, rt)
    if action == "resume":  # checks last.pt against this run before anything in the folder changes
        trainer.resume()
    write_run_record(out, action, {**trainer.header(), "n_train": len(rows), "folds_csv": str(data.folds_path),
                                   "git_commit": git_commit(REPO), "packages": package_versions()})
    params = sum(p.numel() for p in trainer.unet.parameters())
    print(f"generator fold {fold}: {len(rows)} training rows, {cfg.size} UNet ({params / 1e6:.2f} M parameters) at "
          f"{cfg.resolution_px} px, {cfg.epochs} epochs, device {rt.device}")
    trainer.fit(quiet)
    return out


def load_classifier(run_dir: Path, fold: int, data: FoldImages, rt):
    """A finished train.py fold usable as a filter, with its final weights (EMA when used): best.pt is
    chosen on the validation rows, and those must not steer which samples are kept or how CAS scores."""
    path = run_dir / "last.pt"
    if not path.is_file() or not (run_dir / "config.json").is_file():
        raise UserError(f"{run_dir}: no trained classifier (last.pt); train it with train.py --fold {fold} first")
    state = load_checkpoint(path)
    if not state.get("finished"):
        raise UserError(f"{run_dir}: training has not finished; resume it with train.py --resume first")
    if state["fold"] != fold or any(state["fingerprint"].get(k) != data.fingerprint.get(k) for k in SPLIT_KEYS):
        raise UserError(f"{run_dir}: trained for fold {state['fold']} of another split; the filter must be trained "
                        f"on this fold's training rows only")
    if state["classes"] != data.classes:
        raise UserError(f"{run_dir}: class list differs from the data's")
    cfg = dataclasses.replace(config_from_dict(state["config"], TrainConfig, source=str(run_dir)), pretrained="")
    spec = ImageSpec(**state["image_spec"])
    model = build_model(cfg, spec.in_chans, len(data.classes))
    model.load_state_dict(state["ema"] if state.get("ema") is not None else state["model"])
    return model.to(rt.device).eval(), norm_tensors(state["mean"], state["std"], rt, state.get("input_size_px", 0)), \
        spec, cfg


def classify(run_dir: Path, fold: int, data: FoldImages, images: np.ndarray, rt) -> np.ndarray:
    """A finished fold classifier's probabilities for images given at the data's own size."""
    model, norm, spec, cfg = load_classifier(run_dir, fold, data, rt)
    if (spec.height_px, spec.width_px, spec.in_chans) != images.shape[1:]:
        images = to_array(list(images), spec, cfg.resize_interp)
    return predict_probs(model, images, 256, norm, rt)


def sample_fold(cfg: GenConfig, fold: int, data: FoldImages, overwrite: bool, quiet: bool,
                filter_dir: Path | None = None) -> pd.DataFrame:
    """Sample per_class images per class from generator.pt, optionally filter them, write the folder."""
    out = gen_dir(cfg, fold)
    check_sample_target(out, overwrite)
    filter_dir = filter_dir or (fold_dir(cfg.runs_dir, cfg.filter_exp, fold) if cfg.filter_exp else None)
    rt = setup_runtime(cfg)
    if filter_dir:  # fail before minutes of sampling, not after
        load_classifier(filter_dir, fold, data, rt)
        if load_checkpoint(filter_dir / "last.pt")["config"].get("synthetic"):
            raise UserError(f"{filter_dir}: trained with synthetic rows; filter with a classifier trained on real rows")
    unet, cfg, state = load_generator(out / "generator.pt", cfg, fold, data.classes, data.fingerprint, rt)
    labels = np.repeat(np.arange(len(data.classes)), cfg.per_class)
    seeds = sample_seeds(cfg.seed, fold, len(labels))
    start = time.perf_counter()
    images = sample_images(unet, build_noise_scheduler(cfg), cfg, labels, seeds, data.spec, rt, quiet)
    seconds = time.perf_counter() - start
    print(f"fold {fold}: sampled {len(labels)} images in {seconds:.1f} s ({cfg.sampler}, {cfg.sample_steps} steps, "
          f"guidance {cfg.guidance_scale:g})")
    manifest = new_manifest(fold, labels, seeds, data.classes, cfg.guidance_scale)
    if filter_dir:  # decided in memory, so the folder is written once, complete and consistent
        manifest = apply_filter(manifest, classify(filter_dir, fold, data, images, rt), data.classes,
                                cfg.filter_confidence)
    meta = {"fold": fold, "classes": data.classes, "split": {k: data.fingerprint[k] for k in SPLIT_KEYS},
            "generator_sha256": file_sha256(out / "generator.pt"), "generator_epochs": state["epoch"],
            "generator_config": state["config"], "config": config_to_dict(cfg), "sample_seconds": round(seconds, 2),
            "created": datetime.now().isoformat(timespec="seconds"), "git_commit": git_commit(REPO),
            "filter": {"classifier": str(filter_dir), "min_confidence": cfg.filter_confidence} if filter_dir else None}
    write_samples(out, images, manifest, meta)
    if filter_dir:
        table = kept_table(manifest, data.classes)
        write_csv(out / "kept_per_class.csv", table)
        print(f"filter {filter_dir}: kept {int(manifest['kept'].sum())} of {len(manifest)} "
              f"(confidence >= {cfg.filter_confidence:g})\n{markdown_table(table, digits=3)}")
    kept = manifest["kept"].to_numpy()
    save_grid(out / "samples.png", images[kept], labels[kept], data.classes,
              f"fold {fold}: kept samples, guidance {cfg.guidance_scale:g}")
    return manifest


def check_sample_target(out: Path, overwrite: bool) -> None:
    if (out / MANIFEST).is_file() and not overwrite:
        raise UserError(f"{out}: already holds samples ({MANIFEST}); pass --overwrite to replace them")
    check_writable(out, "samples")


def cas_train_config(cfg: GenConfig, fold: int) -> TrainConfig:
    """The classifier used for CAS: train.py's config (defaults or cas_config), on this data and split."""
    values = load_config_file(cfg.cas_config) if cfg.cas_config else {}
    base = config_from_dict(values, TrainConfig, source=cfg.cas_config or "cas config")
    return dataclasses.replace(base, data_dir=cfg.data_dir, train_csv=cfg.train_csv, image_dir=cfg.image_dir,
                               id_col=cfg.id_col, label_col=cfg.label_col, folds_csv=cfg.folds_csv,
                               runs_dir=str(gen_dir(cfg, fold) / "cas"), seed=cfg.seed, synthetic="",
                               monitor="accuracy").validate()


def real_classifier(cfg: GenConfig, fold: int, quiet: bool) -> Path:
    """Train (or reuse) the CAS baseline: the classifier on the fold's real training rows."""
    train_cfg = dataclasses.replace(cas_train_config(cfg, fold), exp="real")
    run_dir = fold_dir(train_cfg.runs_dir, "real", fold)
    record = run_dir / "config.json"
    changed = record.is_file() and bool(config_differences(json.loads(record.read_text()).get("config", {}),
                                                              config_to_dict(train_cfg), TrainConfig))
    # Reused while its config holds (it is the slowest of the CAS classifiers); replaced when cas_config changed.
    train_folds(train_cfg, str(fold), resume=not changed, overwrite=changed, quiet=quiet)
    return run_dir


def per_class_accuracy(run_dir: Path, fold: int, data: FoldImages, rt) -> dict:
    """Accuracy of a finished fold classifier's final weights on the fold's real validation rows."""
    is_val = data.fold_of == fold
    pred = classify(run_dir, fold, data, data.images[is_val], rt).argmax(1)
    y = data.labels[is_val]
    return {"all": float((pred == y).mean()),
            **{name: float((pred[y == c] == c).mean()) for c, name in enumerate(data.classes) if (y == c).any()}}


def cas_report(cfg: GenConfig, fold: int, data: FoldImages, quiet: bool) -> pd.DataFrame:
    """cas.md / cas.csv: accuracy on the fold's real validation rows of classifiers trained on real rows,
    on all synthetic samples and (when filtered) on the kept samples; overall and per class."""
    out = gen_dir(cfg, fold)
    if not (out / MANIFEST).is_file():
        raise UserError(f"{out}: no samples yet; run gen_synthetic.py sample --fold {fold} first")
    manifest, meta = read_sample_dir(out, fold, data.classes, data.fingerprint)
    real_dir = real_classifier(cfg, fold, quiet)
    rt = setup_runtime(cfg)
    filtered, sampled_with = meta.get("filter") is not None, meta["config"]
    arms = {"real": (real_dir, int((data.fold_of != fold).sum()))}
    variants = [("synthetic (all samples)", "synthetic-all", True)]
    if filtered:
        variants.append(("synthetic (kept by filter)", "synthetic-kept", False))
    for name, exp, unfiltered in variants:
        rows = len(manifest) if unfiltered else int(manifest["kept"].sum())
        if rows == 0:  # nothing to train on: reported as such, not as a score
            arms[name] = (None, 0)
            continue
        train_cfg = dataclasses.replace(cas_train_config(cfg, fold), exp=exp, synthetic=str(out), synthetic_only=True,
                                        synthetic_per_class=-1, synthetic_unfiltered=unfiltered).validate()
        train_folds(train_cfg, str(fold), overwrite=True, quiet=quiet)  # cheap, and always from these samples
        arms[name] = (fold_dir(train_cfg.runs_dir, exp, fold), rows)
    table = pd.DataFrame([{"trained on": name, "train rows": rows,
                           **(per_class_accuracy(run_dir, fold, data, rt) if run_dir else {})}
                          for name, (run_dir, rows) in arms.items()])
    write_csv(out / "cas.csv", table)
    gen_state = load_checkpoint(out / "generator.pt")
    lines = [f"# Classification Accuracy Score: {cfg.exp}, fold {fold}", "",
             f"Accuracy on the fold's {int((data.fold_of == fold).sum())} real validation rows of the same "
             f"classifier ({cas_train_config(cfg, fold).model}, train.py config "
             f"{cfg.cas_config or 'defaults'}, final weights) trained on different rows. "
             f"Generator: {gen_state['config']['size']}, "
             f"{gen_state['epoch']} epochs at {gen_state['config']['resolution_px']} px; samples: "
             f"{sampled_with['sampler']} {sampled_with['sample_steps']} steps, guidance "
             f"{sampled_with['guidance_scale']:g}"
             f"{', filter confidence >= %g' % sampled_with['filter_confidence'] if filtered else ''}.", "",
             markdown_table(table), ""]
    write_text(out / "cas.md", "\n".join(lines))
    print("\n".join(lines))
    return table


def run_command(command: str, cfg: GenConfig, data: FoldImages, folds: list[int], resume: bool, overwrite: bool,
                quiet: bool) -> None:
    """train | sample | report | all, for each fold."""
    signal.signal(signal.SIGTERM, raise_interrupt)  # a scheduler's kill cleans up like Ctrl-C
    if command == "all":  # refuse before a long generator run, not after it
        for fold in folds:
            check_sample_target(gen_dir(cfg, fold), overwrite)
    print(f"data: {len(data.labels)} images, {len(data.classes)} classes, "
          f"{int(data.fold_of.max()) + 1} folds from {data.folds_path}")
    for fold in folds:
        if command in ("train", "all"):
            train_generator(cfg, fold, data, resume, overwrite, quiet)
        if command in ("sample", "all"):
            filter_dir = None
            if command == "all" and not cfg.filter_exp:  # the CAS baseline doubles as the filter
                filter_dir = real_classifier(cfg, fold, quiet)
            sample_fold(cfg, fold, data, overwrite, quiet, filter_dir)
        if command in ("report", "all"):
            cas_report(cfg, fold, data, quiet)
    if command in ("sample", "all"):
        print(f"use with: python train.py --synthetic {exp_dir(cfg.out_dir, cfg.exp)} --fold "
              f"{','.join(map(str, folds))}")
