"""Class-conditional diffusion generator: a diffusers UNet2DModel trained with the DDPM objective on one
fold's training rows, sampled with DDIM or DPM-Solver and classifier-free guidance.

Guidance follows Ho & Salimans: prediction = (1 + w) * conditional - w * unconditional, so w = 0 is the
plain conditional model (one forward pass) and w > 0 pushes samples towards their class. The
unconditional model is the same network given a "null" class, learnt by dropping labels in training.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import UNet2DModel
from timm.utils import ModelEmaV3
from tqdm import tqdm

from src.core.config import config_to_dict
from src.core.errors import UserError
from src.core.repro import derived_seed, rng_state, seed_everything, set_rng_state
from src.core.rundir import CHECKPOINT_FORMAT, load_checkpoint, save_checkpoint, write_log
from src.data.images import ImageSpec
from src.synthetic.config import MODEL_KEYS, SAMPLING_KEYS, GenConfig
from src.synthetic.diffusion import (
    build_noise_scheduler,
    build_unet,
    diffusion_batch,
    sample_images,
    sample_seeds,
    save_grid,
    to_model_range,
)
from src.train.curves import plot_epoch_loss
from src.train.engine import Runtime, check_runtime_kind, epoch_row, optimizer_step, runtime_kind
from src.train.schedule import Schedule, lr_factor_at


class GeneratorTrainer:
    """Owns the UNet, its weight average, optimiser and schedule state for one fold, so training can be
    checkpointed after every epoch and resumed exactly."""

    def __init__(self, cfg: GenConfig, fold: int, out_dir: Path, images: np.ndarray, labels: np.ndarray,
                 classes: list[str], spec: ImageSpec, fingerprint: dict, rt: Runtime):
        self.cfg, self.fold, self.out_dir, self.classes, self.spec, self.rt = cfg, fold, out_dir, classes, spec, rt
        self.fingerprint = fingerprint
        seed_everything(derived_seed(cfg.seed, fold))
        self.x0 = to_model_range(images, cfg.resolution_px)
        self.labels = torch.as_tensor(labels, dtype=torch.long)
        self.unet = build_unet(cfg.size, spec.in_chans, len(classes), cfg.resolution_px).to(rt.device)
        if rt.channels_last:
            self.unet = self.unet.to(memory_format=torch.channels_last)
        self.ema = ModelEmaV3(self.unet, decay=cfg.ema_decay, use_warmup=True)
        self.optimizer = torch.optim.AdamW(self.unet.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.noise_scheduler = build_noise_scheduler(cfg)
        per_epoch = max(1, len(self.x0) // cfg.batch_size)
        self.schedule = Schedule(kind="cosine", steps_per_epoch=per_epoch, total_steps=cfg.epochs * per_epoch,
                                 warmup_steps=round(cfg.lr_warmup_epochs * per_epoch), min_ratio=0.05,
                                 step_every_steps=1, step_gamma=1.0)
        self.scaler = torch.amp.GradScaler(rt.device.type, enabled=rt.amp_dtype == torch.float16)
        self.epoch, self.step, self.log, self.finished = 0, 0, [], False

    def header(self) -> dict:
        return {"format": CHECKPOINT_FORMAT, "kind": "generator", "config": config_to_dict(self.cfg),
                "fold": self.fold, "classes": self.classes, "image_spec": vars(self.spec),
                "fingerprint": self.fingerprint,
                # The noise comes from a generator on the device, so a resume elsewhere would draw other noise.
                "runtime": runtime_kind(self.rt)}

    def save_last(self) -> None:
        save_checkpoint(self.out_dir / "last.pt", {
            **self.header(), "epoch": self.epoch, "step": self.step, "finished": self.finished,
            "unet": self.unet.state_dict(), "ema": self.ema.module.state_dict(),
            "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(), "rng": rng_state(),
            "log": self.log})

    def resume(self) -> None:
        """Continue from last.pt exactly; refuses a checkpoint made with other training settings or data."""
        path = self.out_dir / "last.pt"
        state = load_checkpoint(path)
        check_same_run(path, state, self.header())
        check_runtime_kind(path, state, self.rt)
        self.unet.load_state_dict(state["unet"])
        self.ema.module.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        self.epoch, self.step, self.log, self.finished = state["epoch"], state["step"], state["log"], state["finished"]
        print(f"generator fold {self.fold}: resuming after epoch {self.epoch - 1} from {path}")

    def run_epoch(self, quiet: bool) -> dict:
        cfg, rt = self.cfg, self.rt
        order = torch.randperm(len(self.x0), generator=torch.Generator().manual_seed(
            derived_seed(cfg.seed, self.fold, self.epoch)))
        noise_rng = torch.Generator(device=rt.device).manual_seed(derived_seed(cfg.seed, self.fold, self.epoch, 1))
        null_class = len(self.classes)
        self.unet.train()
        loss_sum, seen, start = torch.zeros((), device=rt.device), 0, time.perf_counter()
        batches = range(self.schedule.steps_per_epoch)
        for b in tqdm(batches, desc=f"generator fold {self.fold} epoch {self.epoch}", leave=False, disable=quiet,
                      unit="batch"):
            rows = order[b * cfg.batch_size:(b + 1) * cfg.batch_size]
            x0 = self.x0[rows].to(rt.device, non_blocking=True)
            labels = self.labels[rows].to(rt.device, non_blocking=True)
            noisy, t, cond, target = diffusion_batch(self.noise_scheduler, x0, labels, null_class,
                                                     cfg.cond_drop_prob, noise_rng)
            if rt.channels_last:
                noisy = noisy.contiguous(memory_format=torch.channels_last)
            lr = cfg.lr * lr_factor_at(self.step, self.schedule)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            with torch.autocast(rt.device.type, dtype=rt.amp_dtype, enabled=rt.amp_dtype is not None):
                pred = self.unet(noisy, t, class_labels=cond).sample
            loss = F.mse_loss(pred.float(), target)
            optimizer_step(loss, self.optimizer, self.scaler)
            self.ema.update(self.unet, step=self.step + 1)
            loss_sum += loss.detach() * len(rows)
            seen += len(rows)
            self.step += 1
        return epoch_row(f"generator fold {self.fold}", self.epoch, lr, loss_sum, seen, start)

    def preview(self, path: Path, per_class: int = 10) -> None:
        """Sample grid from the weight average (same seeds every time, so grids are comparable)."""
        labels = np.repeat(np.arange(len(self.classes)), per_class)
        seeds = sample_seeds(self.cfg.seed, self.fold, len(labels), start=10**6)
        images = sample_images(self.ema.module, self.noise_scheduler, self.cfg, labels, seeds, self.spec, self.rt)
        title = (f"fold {self.fold}, epoch {self.epoch - 1}, {self.cfg.sampler} {self.cfg.sample_steps} steps, "
                 f"guidance {self.cfg.guidance_scale:g}")
        save_grid(path, images, labels, self.classes, title)

    def fit(self, quiet: bool) -> None:
        """Train to the last epoch; last.pt after every epoch, previews every few, generator.pt at the end."""
        every = self.cfg.preview_every_epochs
        while not self.finished:
            row = self.run_epoch(quiet)
            self.log.append(row)
            self.epoch += 1
            self.finished = self.epoch >= self.cfg.epochs
            self.save_last()
            write_log(self.out_dir, self.log)
            if every and self.epoch % every == 0 and not self.finished:
                self.preview(self.out_dir / "previews" / f"epoch{self.epoch - 1:03d}.png")
                plot_epoch_loss(self.out_dir / "loss.png", self.log, "diffusion loss (MSE)", log_scale=True)
            if not quiet or self.finished or self.epoch % 10 == 0:
                print(f"generator fold {self.fold} epoch {row['epoch']:>3} lr={row['lr']:.2e} loss={row['loss']:.4f} "
                      f"{row['seconds']:.1f}s {row['images_per_s']:.0f} img/s", flush=True)
        plot_epoch_loss(self.out_dir / "loss.png", self.log, "diffusion loss (MSE)", log_scale=True)
        save_checkpoint(self.out_dir / "generator.pt", {**self.header(), "epoch": self.epoch,
                                                        "unet": self.ema.module.state_dict()})
        self.preview(self.out_dir / "grid.png")


def check_same_run(path: Path, state: dict, header: dict) -> None:
    """A checkpoint may only continue the run that made it: same training settings, classes and data."""
    saved, now = state["config"], header["config"]
    diff = [k for k in now if k not in SAMPLING_KEYS and saved.get(k) != now[k]]
    if diff:
        k = diff[0]
        raise UserError(f"{path}: made with {k}={saved.get(k)!r}, now {k}={now[k]!r}; use the same settings "
                        f"or a new --exp")
    if state["fold"] != header["fold"] or state["classes"] != header["classes"]:
        raise UserError(f"{path}: made for fold {state['fold']} with classes {state['classes'][:5]}...; "
                        f"this is another fold or data set")
    if state["fingerprint"] != header["fingerprint"]:
        changed = [k for k, v in header["fingerprint"].items() if state["fingerprint"].get(k) != v]
        raise UserError(f"{path}: the data changed since this generator was trained ({', '.join(changed)} "
                        f"differ); validation rows could leak into it, so train a new --exp")


def load_generator(path: Path, cfg: GenConfig, fold: int, classes: list[str], fingerprint: dict,
                   rt: Runtime) -> tuple[UNet2DModel, GenConfig, dict]:
    """The trained weight average from generator.pt, checked against the fold and data, and the config to
    sample with: the network keys as trained, the sampling keys as given now."""
    if not path.is_file():
        raise UserError(f"{path}: no trained generator; run gen_synthetic.py train for this fold first")
    state = load_checkpoint(path)
    if state.get("kind") != "generator":
        raise UserError(f"{path}: not a generator checkpoint")
    check_same_run(path, state, {"config": {}, "fold": fold, "classes": classes, "fingerprint": fingerprint})
    trained = {k: state["config"][k] for k in MODEL_KEYS}
    cfg = dataclasses.replace(cfg, **trained)
    spec = ImageSpec(**state["image_spec"])
    unet = build_unet(cfg.size, spec.in_chans, len(classes), cfg.resolution_px)
    unet.load_state_dict(state["unet"])
    return unet.to(rt.device).eval(), cfg, state
