"""The epoch loop of one fold: schedule, early stopping, best/last checkpoints, exact resume, OOF output."""
from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from timm.data import Mixup
from timm.utils import ModelEmaV3

from src.core.config import config_differences, config_to_dict
from src.core.errors import UserError
from src.core.metrics import compute_metrics, metric_names, monitor_direction
from src.core.repro import derived_seed, rng_state, seed_everything, set_rng_state
from src.core.rundir import CHECKPOINT_FORMAT, OOF_FINAL, load_checkpoint, save_checkpoint, write_log, write_oof
from src.data.augment import build_batch_augment, build_transforms, resolve_flips, trained_flips
from src.data.contract import changed_data, changed_data_text
from src.data.images import ImageSpec
from src.data.rows import RowView
from src.train.board import EpochBoard
from src.train.config import TrainConfig
from src.train.consistency import Consistency, SemiBatches, SemiSampler, check_unlabeled_batch, epoch_stats, semi_steps
from src.train.curves import plot_curves
from src.train.diagnostics import confusion_figure
from src.train.distributed import (
    all_gather_rows,
    barrier,
    broadcast_module,
    broadcast_object,
    check_shares,
    gather_objects,
    rank_share,
    wrap_model,
)
from src.train.engine import (
    ArrayBatches,
    Runtime,
    build_optimizer,
    check_runtime_kind,
    mix_batch,
    norm_tensors,
    predict_probs,
    runtime_kind,
    steps_per_epoch,
    to_input,
    train_loader,
    train_one_epoch,
)
from src.train.losses import balanced_class_weights, build_loss
from src.train.models import build_model, check_ssl_weights
from src.train.schedule import EarlyStopping, PlateauScale, build_schedule, lr_factor_at

PLOT_EVERY_S = 30
SAMPLE_BATCH = 32


class NonFiniteLoss(UserError):
    """Training diverged; the last good checkpoint is kept."""


@dataclass
class FoldData:
    """One fold's split of the uint8 cache. Extra rows (synthetic, pseudo-labels) only ever join `train`."""

    train_images: np.ndarray
    train_labels: np.ndarray
    val_images: np.ndarray
    val_labels: np.ndarray
    val_ids: list[str]
    train_ids: list[str]
    extra: dict  # provenance of rows added to training (e.g. the synthetic manifest's hash)
    train_targets: np.ndarray | None = None  # (N, classes) soft targets when training on soft pseudo-labels
    unlabeled: object = None  # consistency training's unlabelled images (rows of the cache's shape), or None
    unlabeled_truth: np.ndarray | None = None  # their true class where known (the demo), else -1: logging only


@dataclass
class DataInfo:
    """What a checkpoint needs to turn raw images into model input again."""

    classes: list[str]
    spec: ImageSpec
    mean: list[float]
    std: list[float]
    fingerprint: dict
    input_size_px: int = 0  # the side the model is fed at (0 = the cache's)

    def to_dict(self) -> dict:
        return {"classes": self.classes, "image_spec": vars(self.spec), "mean": self.mean, "std": self.std,
                "fingerprint": self.fingerprint, "input_size_px": self.input_size_px}


def needs_every_score(cfg: TrainConfig) -> bool:
    """The plateau scheduler and early stopping act on every epoch's validation score."""
    return cfg.scheduler == "plateau" or cfg.patience_epochs > 0


class FoldTrainer:
    """Owns model, optimiser and schedule state for one fold, so it can be checkpointed and resumed whole."""

    def __init__(self, cfg: TrainConfig, fold: int, run_dir: Path, data: FoldData, info: DataInfo, rt: Runtime):
        self.cfg, self.fold, self.run_dir, self.data, self.info, self.rt = cfg, fold, run_dir, data, info, rt
        self.dist = rt.dist
        check_shares(len(data.train_labels), len(data.val_labels), cfg.batch_size, self.dist, f"fold {fold}")
        seed_everything(derived_seed(cfg.seed, fold))  # the same initial weights on every rank
        num_classes = len(info.classes)
        if cfg.pretrained:  # every rank: a refusal must stop them all
            check_ssl_weights(cfg.pretrained, cfg.model, info.spec.height_px, info.spec.width_px)
        self.model = build_model(cfg, info.spec.in_chans, num_classes)
        if cfg.sync_batchnorm and self.dist.enabled:
            if rt.device.type != "cuda":
                raise UserError("--sync-batchnorm needs CUDA GPUs (PyTorch's SyncBatchNorm has no CPU kernel); "
                                "drop the flag for CPU training")
            self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        self.model = self.model.to(rt.device)
        if rt.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.ema = ModelEmaV3(self.model, decay=cfg.ema_decay, use_warmup=True) if cfg.ema_decay else None
        # What is validated and saved as best.pt: the weight average when there is one.
        self.eval_model = self.ema.module if self.ema else self.model
        self.optimizer = build_optimizer(cfg, self.model)
        self.mode = monitor_direction(cfg.monitor, cfg.monitor_mode)
        self.plateau = PlateauScale(cfg.plateau_patience_epochs, cfg.plateau_factor, self.mode)
        self.stopper = EarlyStopping(self.mode, cfg.patience_epochs, cfg.min_delta)
        self.scaler = torch.amp.GradScaler(rt.device.type, enabled=rt.amp_dtype == torch.float16)
        weight = None
        if cfg.class_weights == "balanced":
            weight = balanced_class_weights(data.train_labels, num_classes).to(rt.device)
        self.losses = {name: build_loss(name, cfg, weight) for name in {cfg.loss, cfg.loss2} if name}
        targets = data.train_labels if data.train_targets is None else data.train_targets
        size_hw = (info.spec.height_px, info.spec.width_px)
        flips = resolve_flips(cfg.flips, info.spec.in_chans)
        self.dataset = ArrayBatches(data.train_images, targets, build_transforms(cfg.augment, flips, size_hw))
        self.train_data, self.consistency = self.dataset, None
        steps = steps_per_epoch(len(data.train_labels), cfg.batch_size)
        if data.unlabeled is not None:
            check_unlabeled_batch(cfg.batch_size, cfg.consistency_ratio, self.dist)
            self.train_data = SemiBatches(self.dataset, data.unlabeled, data.unlabeled_truth,
                                          build_transforms(cfg.consistency_augment, flips, size_hw))
            # The weak view is the light warp with the flips the model trains with, whatever the labelled pipeline.
            weak = build_batch_augment("light", trained_flips(cfg.augment, flips), cfg.augment_fill)
            self.consistency = Consistency(cfg.consistency_weight, cfg.consistency_threshold, weak, rt.device)
            steps = semi_steps(len(data.train_labels), len(data.unlabeled), cfg.batch_size, cfg.consistency_ratio)
        self.schedule = build_schedule(cfg, steps)
        self.mixup = None
        if cfg.mixes:
            # Smoothing stays with the loss (label_smoothing), which takes the soft targets as they are.
            self.mixup = Mixup(mixup_alpha=cfg.mixup_alpha, cutmix_alpha=cfg.cutmix_alpha, label_smoothing=0.0,
                               num_classes=num_classes)
        self.batch_augment = build_batch_augment(cfg.augment, flips, cfg.augment_fill)
        self.norm = norm_tensors(info.mean, info.std, rt, info.input_size_px)
        self.check_forward()
        # What trains: the model itself, or its DistributedDataParallel wrapper (same weights) under torchrun.
        self.train_model = wrap_model(self.model, self.dist, rt.device)
        if self.dist.rank:  # each rank its own dropout masks
            seed_everything(derived_seed(cfg.seed, fold, -1, self.dist.rank))
        self.epoch, self.step, self.log, self.finished = 0, 0, [], False
        self.validate_last_only = False
        self.last_plot_time = time.monotonic()

    def check_forward(self) -> None:
        """One forward pass on two validation images, so a model that cannot take this input size fails
        now, with a message, instead of after the run directory exists."""
        x = to_input(torch.from_numpy(self.data.val_images[:2]), self.norm, self.rt)
        fed = "x".join(map(str, (*x.shape[2:], x.shape[1])))
        flag = "--input-size-px" if self.info.input_size_px else "--image-size-px"
        try:
            with torch.no_grad():
                out = self.model.eval()(x)
        except (RuntimeError, AssertionError, ValueError) as err:
            raise UserError(f"model {self.cfg.model} cannot take {fed} input ({str(err).splitlines()[0][:100]}); "
                            f"set {flag} to the size it expects or pick another model") from None
        if tuple(out.shape) != (len(x), len(self.info.classes)):
            raise UserError(f"model {self.cfg.model} returns shape {tuple(out.shape)}, not (batch, classes)")

    # --- state -------------------------------------------------------------------------------------------
    def header(self) -> dict:
        return {"format": CHECKPOINT_FORMAT, "config": config_to_dict(self.cfg), "fold": self.fold,
                **self.info.to_dict(), "extra_rows": self.data.extra, "runtime": runtime_kind(self.rt)}

    def save_last(self) -> None:
        """Every rank calls this (its RNG state is gathered); rank 0 writes."""
        rng = gather_objects(rng_state(), self.dist)
        if not self.dist.is_main:
            return
        save_checkpoint(self.run_dir / "last.pt", {
            **self.header(), "epoch": self.epoch, "step": self.step, "finished": self.finished,
            "model": self.model.state_dict(), "ema": self.ema.module.state_dict() if self.ema else None,
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(), "plateau": self.plateau.state_dict(),
            "early_stop": self.stopper.state_dict(), "rng": rng[0], "log": self.log,
            **({"world_size": self.dist.world_size, "rng_ranks": rng} if self.dist.enabled else {})})

    def save_best(self, score: float) -> None:
        if not self.dist.is_main:
            return
        save_checkpoint(self.run_dir / "best.pt", {**self.header(), "epoch": self.epoch - 1,
                                                   "monitor": self.cfg.monitor, "score": score,
                                                   "model": self.eval_model.state_dict()})

    def resume(self) -> None:
        """Continue from last.pt exactly; refuses a checkpoint made with a different config or data."""
        path = self.run_dir / "last.pt"
        state = load_checkpoint(path)
        saved, now = TrainConfig.upgrade(state["config"]), config_to_dict(self.cfg)  # older keys as today's
        diff = config_differences(saved, now, TrainConfig)
        if diff:
            k = diff[0]
            was = saved.get(k, getattr(TrainConfig(), k, None))  # a key older code did not write: its default
            raise UserError(f"{path}: made with {k}={was!r}, now {k}={now.get(k)!r}; resume with the same "
                            f"config, or start a new --exp")
        if state.get("extra_rows", {}) != self.data.extra:
            raise UserError(f"{path}: the added training rows changed since this run started (now "
                            f"{self.data.extra}); start a new --exp")
        if state["classes"] != self.info.classes:
            raise UserError(f"{path}: class list differs from the data's; this checkpoint is for other data")
        if state.get("world_size", 1) != self.dist.world_size:
            raise UserError(f"{path}: made by {state.get('world_size', 1)} process(es), now {self.dist.world_size}; "
                            f"resume with the same torchrun --nproc-per-node (total processes)")
        check_runtime_kind(path, state, self.rt)
        changed = changed_data(state["fingerprint"], self.info.fingerprint)
        if changed:
            raise UserError(f"{path}: the data changed since this run started ({changed_data_text(changed)}); "
                            f"rows could move between training, validation and the holdout, so start a new --exp")
        self.model.load_state_dict(state["model"])
        if self.ema:
            self.ema.module.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.plateau.load_state_dict(state["plateau"])
        self.stopper.load_state_dict(state["early_stop"])
        set_rng_state(state["rng_ranks"][self.dist.rank] if self.dist.enabled else state["rng"])
        self.epoch, self.step, self.log, self.finished = state["epoch"], state["step"], state["log"], state["finished"]
        if self.dist.is_main:
            print(f"fold {self.fold}: resuming after epoch {self.epoch - 1} from {path}")

    # --- loop --------------------------------------------------------------------------------------------
    def lr_factor(self, step: int) -> float:
        return lr_factor_at(step, self.schedule) * self.plateau.scale

    def run_epoch(self, quiet: bool) -> dict:
        cfg, rt = self.cfg, self.rt
        use_second = cfg.loss2 and self.epoch >= cfg.loss_switch_epoch
        loss_name = cfg.loss2 if use_second else cfg.loss
        loss_fn = self.losses[loss_name]
        batches = None
        if self.consistency is not None:
            batches = SemiSampler(len(self.data.train_labels), len(self.data.unlabeled), cfg.batch_size,
                                  cfg.consistency_ratio, derived_seed(cfg.seed, self.fold, self.epoch, 2), self.dist)
            seed = derived_seed(cfg.seed, self.fold, self.epoch, 3, self.dist.rank)
            self.consistency.start_epoch(torch.Generator(device=rt.device).manual_seed(seed))
        loader = train_loader(self.train_data, cfg.batch_size, derived_seed(cfg.seed, self.fold, self.epoch),
                              self.num_workers(), pin_memory=rt.device.type == "cuda", info=self.dist,
                              batches=batches)
        augment = None
        if self.batch_augment is not None:
            seed = derived_seed(cfg.seed, self.fold, self.epoch, 1)
            seed = derived_seed(seed, self.dist.rank) if self.dist.enabled else seed
            generator = torch.Generator(device=rt.device).manual_seed(seed)
            augment = functools.partial(self.batch_augment, generator=generator)
        mix = None
        if self.mixup is not None and not (cfg.mixup_off_epoch and self.epoch >= cfg.mixup_off_epoch):
            mix = functools.partial(mix_batch, self.mixup, len(self.info.classes))
        start = time.perf_counter()
        stats = train_one_epoch(self.train_model, loader, self.optimizer, loss_fn, self.lr_factor, self.step,
                                self.scaler, self.norm, rt, f"fold {self.fold} epoch {self.epoch}", quiet, self.ema,
                                augment, freeze_backbone=self.epoch < cfg.freeze_epochs, mix=mix,
                                consistency=self.consistency)
        if self.dist.enabled:  # every rank's mean loss over its equal share of each batch
            stats["train_loss"] = float(np.mean(gather_objects(stats["train_loss"], self.dist)))
            stats["images_per_s"] *= self.dist.world_size
        consistency_stats = {}
        if self.consistency is not None:  # counted over every rank's share
            counts = gather_objects([self.consistency.images, *self.consistency.counts.tolist()], self.dist)
            total = np.sum(counts, axis=0)
            consistency_stats = epoch_stats(int(total[0]), total[1:])
        if not math.isfinite(stats["train_loss"]):
            last = f"epoch {self.epoch - 1}" if self.epoch else "none yet"
            raise NonFiniteLoss(f"fold {self.fold} epoch {self.epoch}: training loss is {stats['train_loss']}; "
                                f"lower --lr or check the data (last good checkpoint: {last})")
        if self.validates(self.epoch):
            metrics = compute_metrics(self.data.val_labels, self.predict_val())
        else:  # the validation pass would cost more than the epoch's training in a cheap tune trial
            metrics = dict.fromkeys(metric_names(len(self.info.classes)), float("nan"))
        row = {"epoch": self.epoch, "lr": self.optimizer.param_groups[-1]["lr"], "loss": loss_name,  # the head's
               "train_loss": stats["train_loss"], **{f"val_{k}": v for k, v in metrics.items()},
               **consistency_stats, "seconds": time.perf_counter() - start, "train_seconds": stats["train_seconds"],
               "images_per_s": stats["images_per_s"]}
        self.step += stats["steps"]
        return broadcast_object(row, self.dist)  # rank 0's numbers drive every rank's decisions

    def validates(self, epoch: int) -> bool:
        """Whether `epoch` is scored on the validation rows: every epoch, unless validate_last_only (tune.py's
        multi-fidelity trials, scored on their final weights alone) and nothing reads the per-epoch score."""
        return not self.validate_last_only or needs_every_score(self.cfg) or epoch == self.cfg.epochs - 1

    def predict_val(self) -> np.ndarray:
        """Validation probabilities in row order; under DDP each rank predicts its share with rank 0's weights."""
        images = self.data.val_images
        if self.dist.enabled:
            broadcast_module(self.eval_model, self.dist)
            images = RowView(images, rank_share(np.arange(len(images)), self.dist))
        probs = predict_probs(self.eval_model, images, self.cfg.batch_size * 2, self.norm, self.rt)
        return all_gather_rows(probs, self.dist)

    def num_workers(self) -> int:
        if self.cfg.num_workers >= 0:
            return self.cfg.num_workers
        return 4 if self.rt.device.type == "cuda" else 0

    def sample_batch(self) -> np.ndarray:
        """The first training images as the model sees them (augmented), uint8 NHWC, for a quick visual check.
        Uses its own augmentation seed; every epoch re-seeds the real pipeline, so training is unchanged."""
        rows = list(range(min(SAMPLE_BATCH, len(self.dataset))))
        images, _ = self.dataset[rows]
        if self.batch_augment is None:
            return images.numpy()
        generator = torch.Generator(device=self.rt.device).manual_seed(derived_seed(self.cfg.seed, self.fold, -2))
        x = self.batch_augment(images.to(self.rt.device).permute(0, 3, 1, 2).float(), generator=generator)
        return x.clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()

    def fit(self, quiet: bool, on_epoch=None) -> None:
        """Train until the last epoch or early stop; checkpoints after every epoch. `on_epoch(fold, row)` runs on
        the main process after each epoch's checkpoint (tune.py's pruner: an exception it raises ends the run
        there, with last.pt and log.csv intact)."""
        board = EpochBoard(self.run_dir, self.cfg.tensorboard and self.dist.is_main)
        if self.epoch == 0:
            board.image_grid("train/sample_batch", self.sample_batch(), 0)
        try:
            while not self.finished:
                row = self.run_epoch(quiet)
                score = row[f"val_{self.cfg.monitor}"]
                improved = self.stopper.update(score, self.epoch)
                if self.cfg.scheduler == "plateau":
                    self.plateau.update(score)
                self.log.append(row)
                self.epoch += 1
                self.finished = broadcast_object(self.epoch >= self.cfg.epochs or self.stopper.should_stop, self.dist)
                if improved:
                    self.save_best(score)
                self.save_last()
                if self.dist.is_main:
                    print(self.epoch_line(row, improved), flush=True)
                    self.write_progress(final=False)
                    board.scalars(row, row["epoch"])
                    if on_epoch is not None:
                        on_epoch(self.fold, row)
            if self.stopper.best is None:  # the monitor was NaN in every epoch, so no epoch could be chosen
                self.save_best(float("nan"))
                if self.dist.is_main:
                    print(f"fold {self.fold}: val {self.cfg.monitor} was NaN in every epoch (undefined on this "
                          f"fold's validation rows); best.pt holds the last epoch's weights. Pick a --monitor that "
                          f"is defined here (accuracy, log_loss)")
            if self.stopper.should_stop and self.epoch < self.cfg.epochs and self.dist.is_main:
                print(f"fold {self.fold}: early stop after epoch {self.epoch - 1} "
                      f"(best {self.cfg.monitor} {self.stopper.best:.4f} at epoch {self.stopper.best_epoch})")
        finally:
            board.close()
            if self.log and self.dist.is_main:
                self.write_progress(final=True)

    def write_progress(self, final: bool) -> None:
        """log.csv after every epoch; curves.png at the end, or mid-run at most every 30 s (a plot costs ~0.3 s)."""
        write_log(self.run_dir, self.log)
        if final or time.monotonic() - self.last_plot_time >= PLOT_EVERY_S:
            steps = np.arange(self.schedule.total_steps)
            planned = self.cfg.lr * np.array([lr_factor_at(s, self.schedule) for s in steps])
            plot_curves(self.run_dir, self.log, steps, planned, self.schedule.steps_per_epoch, self.cfg.monitor)
            self.last_plot_time = time.monotonic()

    def epoch_line(self, row: dict, improved: bool) -> str:
        metrics = " ".join(f"{k[4:]}={v:.4f}" for k, v in row.items() if k.startswith("val_"))
        mark = " *" if improved else ""
        return (f"fold {self.fold} epoch {row['epoch']:>2} lr={row['lr']:.2e} train_loss={row['train_loss']:.4f} "
                f"{metrics} {row['seconds']:.1f}s {row['images_per_s']:.0f} img/s{mark}")

    def write_oof(self) -> dict:
        """Predict the validation rows with the final weights (oof_final.csv: nothing was chosen on these rows)
        and with best.pt's (oof.csv: its epoch was chosen on them, so its score is optimistic); returns the
        fold's metrics for both, the final ones prefixed final_."""
        barrier(self.dist)  # rank 0 has written best.pt
        final = self.predict_val()  # eval_model still holds the last epoch's weights (EMA when kept)
        best = load_checkpoint(self.run_dir / "best.pt")
        probs = final
        if best["epoch"] != self.epoch - 1:  # else best.pt holds the final weights: no second pass
            self.eval_model.load_state_dict(best["model"])
            probs = self.predict_val()
        if self.dist.is_main:
            write_oof(self.run_dir, self.data.val_ids, self.data.val_labels, final, self.info.classes, self.fold,
                      OOF_FINAL)
            write_oof(self.run_dir, self.data.val_ids, self.data.val_labels, probs, self.info.classes, self.fold)
            board = EpochBoard(self.run_dir, self.cfg.tensorboard)
            if board.writer is not None:
                fig = confusion_figure(self.data.val_labels, probs.argmax(1), self.info.classes,
                                       f"fold {self.fold} OOF (best.pt, epoch {best['epoch']})")
                board.figure("val/confusion_matrix_best", fig, best["epoch"])
                plt.close(fig)
            board.close()
        final_metrics = compute_metrics(self.data.val_labels, final)
        return {"fold": self.fold, "best_epoch": best["epoch"], "final_epoch": self.epoch - 1,
                **compute_metrics(self.data.val_labels, probs), **{f"final_{k}": v for k, v in final_metrics.items()}}
