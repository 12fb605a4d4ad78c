"""Self-supervised pretraining of a train.py backbone on a competition's own pixels (pretrain.py).

The images are every file in the train, unlabeled and (unless --no-include-test) test folders, listed from
disk: train.csv and folder names are never read here, so no label can reach the weights. The output,
<out_dir>/<exp>/backbone.pt, is what `train.py --pretrained` loads (backbone only; the head starts fresh).
"""
from __future__ import annotations

import hashlib
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import timm
import torch
from tqdm import tqdm

from src.core.atomic import check_writable, save_figure, write_csv
from src.core.config import config_differences, config_to_dict
from src.core.errors import UserError
from src.core.interrupts import raise_interrupt
from src.core.repro import REPO, derived_seed, git_commit, package_versions, rng_state, seed_everything, set_rng_state
from src.core.rundir import CHECKPOINT_FORMAT, load_checkpoint, save_checkpoint, write_log
from src.data.images import (
    IMAGE_EXTS,
    ImageSpec,
    channel_stats,
    decode_all,
    image_files,
    infer_spec,
    pixel_hash,
    to_array,
)
from src.pretrain.config import PROBE_KEYS, PretrainConfig, pretrain_dir
from src.pretrain.ssl import SSLNet, TwoViews
from src.train.curves import plot_epoch_loss
from src.train.cv import run_dir_action, write_run_record
from src.train.engine import (
    Runtime,
    check_runtime_kind,
    epoch_row,
    norm_tensors,
    optimizer_step,
    runtime_kind,
    to_input,
)
from src.train.models import classifier_prefixes
from src.train.schedule import Schedule, lr_factor_at


def list_pretrain_images(cfg: PretrainConfig) -> pd.DataFrame:
    """The manifest: (path relative to data_dir, split) of every image pretraining sees; no label column exists.

    A split's folder never contributes the other splits' folders (e.g. --image-dir . holds test/), so each
    image is listed once, and --no-include-test really leaves the test images out."""
    data_dir = Path(cfg.data_dir)
    if not data_dir.is_dir():
        raise UserError(f"{data_dir}: data folder not found (set --data-dir)")
    folders = {"train": data_dir / cfg.image_dir, "unlabeled": data_dir / cfg.unlabeled_dir,
               "test": data_dir / cfg.test_dir}
    if not folders["train"].is_dir():
        raise UserError(f"{folders['train']}: image folder not found (set --image-dir)")
    rows, seen = [], set()
    for split in ("train", "unlabeled", "test") if cfg.include_test else ("train", "unlabeled"):
        folder = folders[split]
        if not folder.is_dir():
            continue  # no unlabeled/ (or test/) folder: nothing to add
        others = [f for name, f in folders.items() if name != split and f.resolve() != folder.resolve()
                  and f.resolve().is_relative_to(folder.resolve())]
        for path in image_files(folder, others):
            if path.resolve() not in seen:
                seen.add(path.resolve())
                rows.append((str(path.relative_to(data_dir)), split))
    if not rows:
        searched = sorted({str(f) for f in folders.values()})
        raise UserError(f"{data_dir}: no images ({', '.join(IMAGE_EXTS)}) in {searched}")
    return pd.DataFrame(rows, columns=["path", "split"])


@dataclass
class PretrainImages:
    """All pretraining pixels decoded once, with what a checkpoint needs to check it sees the same ones."""

    manifest: pd.DataFrame  # path, split, pixel_sha1
    images: np.ndarray  # uint8 (N, H, W, C)
    spec: ImageSpec
    mean: list[float]
    std: list[float]

    @property
    def fingerprint(self) -> str:
        return hashlib.sha1("\n".join(self.manifest["pixel_sha1"]).encode()).hexdigest()


def load_pretrain_images(cfg: PretrainConfig, quiet: bool) -> PretrainImages:
    manifest = list_pretrain_images(cfg)
    decoded = decode_all([Path(cfg.data_dir) / p for p in manifest["path"]], quiet=quiet)
    manifest["pixel_sha1"] = [pixel_hash(im) for im in decoded]
    spec = infer_spec(decoded, cfg.image_size_px)
    images = to_array(decoded, spec, cfg.resize_interp)
    mean, std = channel_stats(images)
    return PretrainImages(manifest, images, spec, mean, std)


def build_views(cfg: PretrainConfig) -> TwoViews:
    return TwoViews((cfg.crop_scale_min, 1.0), cfg.rotate_deg, cfg.jitter, cfg.noise_prob, cfg.flips)


def build_backbone(model: str, in_chans: int) -> torch.nn.Module:
    """train.py's network without a classifier (num_classes=0: timm returns pooled features)."""
    return timm.create_model(model, pretrained=False, num_classes=0, in_chans=in_chans, drop_rate=0.0)


def backbone_state(backbone: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The backbone's tensors without classifier keys, so train.py's head is initialised fresh."""
    return {k: v for k, v in backbone.state_dict().items() if not k.startswith(classifier_prefixes(backbone))}


class PretrainTrainer:
    """Owns the SSL network, optimiser and schedule; checkpointed after every epoch, resumed exactly."""

    def __init__(self, cfg: PretrainConfig, out_dir: Path, data: PretrainImages, rt: Runtime):
        self.cfg, self.out_dir, self.data, self.rt = cfg, out_dir, data, rt
        if len(data.images) < 2:
            raise UserError(f"{cfg.data_dir}: pretraining needs at least 2 images, found {len(data.images)}")
        seed_everything(derived_seed(cfg.seed))
        self.batch_size = min(cfg.batch_size, len(data.images))
        self.net = SSLNet(build_backbone(cfg.model, data.spec.in_chans), cfg.method, cfg.proj_dim,
                          cfg.hidden_dim).to(rt.device)
        if rt.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.norm = norm_tensors(data.mean, data.std, rt)
        self.check_forward()
        self.optimizer = torch.optim.AdamW(self.net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        per_epoch = len(data.images) // self.batch_size  # the ragged last batch is dropped (BN, negatives)
        self.schedule = Schedule(kind="cosine", steps_per_epoch=per_epoch, total_steps=cfg.epochs * per_epoch,
                                 warmup_steps=round(cfg.lr_warmup_epochs * per_epoch), min_ratio=cfg.lr_min_ratio,
                                 step_every_steps=1, step_gamma=1.0)
        self.views = build_views(cfg)
        self.scaler = torch.amp.GradScaler(rt.device.type, enabled=rt.amp_dtype == torch.float16)
        self.epoch, self.step, self.log, self.finished = 0, 0, [], False

    def check_forward(self) -> None:
        """One loss on two images now, so a model that cannot take this input fails with a message before the
        output folder is written."""
        x = to_input(torch.from_numpy(self.data.images[:2]), self.norm, self.rt)
        spec = self.data.spec
        try:
            with torch.no_grad():
                self.net.eval().loss(x, x, self.cfg.temperature)
        except (RuntimeError, AssertionError, ValueError) as err:
            raise UserError(f"model {self.cfg.model} cannot take {spec.height_px}x{spec.width_px}x{spec.in_chans} "
                            f"input ({str(err).splitlines()[0][:100]}); set --image-size-px to the size it "
                            f"expects or pick another model") from None

    def header(self) -> dict:
        return {"format": CHECKPOINT_FORMAT, "kind": "ssl", "config": config_to_dict(self.cfg),
                "image_spec": vars(self.data.spec), "mean": self.data.mean, "std": self.data.std,
                "images_sha1": self.data.fingerprint, "n_images": len(self.data.images),
                # Views are drawn on the device, so a resume elsewhere would draw other views.
                "runtime": runtime_kind(self.rt)}

    def save_last(self) -> None:
        save_checkpoint(self.out_dir / "last.pt", {
            **self.header(), "epoch": self.epoch, "step": self.step, "finished": self.finished,
            "net": self.net.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(), "rng": rng_state(), "log": self.log})

    def resume(self) -> None:
        """Continue from last.pt exactly; refuses other training settings, images or device."""
        path = self.out_dir / "last.pt"
        state = load_checkpoint(path)
        saved, now = state["config"], config_to_dict(self.cfg)
        # The device is compared through the runtime below; threads change speed, not results.
        diff = [k for k in config_differences(saved, now, cls=PretrainConfig)
                if k not in (*PROBE_KEYS, "device", "threads")]
        if diff:
            k = diff[0]
            raise UserError(f"{path}: made with {k}={saved.get(k)!r}, now {k}={now[k]!r}; use the same settings "
                            f"or a new --exp")
        if state["images_sha1"] != self.data.fingerprint:
            raise UserError(f"{path}: the images changed since pretraining started; start a new --exp")
        check_runtime_kind(path, state, self.rt)
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        self.epoch, self.step, self.log, self.finished = state["epoch"], state["step"], state["log"], state["finished"]
        print(f"pretrain: resuming after epoch {self.epoch - 1} from {path}")

    def view_pair(self, images: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Two independently augmented, normalised views of a uint8 NHWC batch."""
        return tuple(to_input(images, self.norm, self.rt, lambda x: self.views(x, generator)) for _ in range(2))

    def run_epoch(self, quiet: bool) -> dict:
        cfg, rt = self.cfg, self.rt
        order = torch.randperm(len(self.data.images), generator=torch.Generator().manual_seed(
            derived_seed(cfg.seed, self.epoch)))
        view_rng = torch.Generator(device=rt.device).manual_seed(derived_seed(cfg.seed, self.epoch, 1))
        images = torch.from_numpy(self.data.images)
        self.net.train()
        loss_sum, seen, start = torch.zeros((), device=rt.device), 0, time.perf_counter()
        for b in tqdm(range(self.schedule.steps_per_epoch), desc=f"pretrain epoch {self.epoch}", leave=False,
                      disable=quiet, unit="batch"):
            rows = order[b * self.batch_size:(b + 1) * self.batch_size]
            x1, x2 = self.view_pair(images[rows], view_rng)
            lr = cfg.lr * lr_factor_at(self.step, self.schedule)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            with torch.autocast(rt.device.type, dtype=rt.amp_dtype, enabled=rt.amp_dtype is not None):
                loss = self.net.loss(x1, x2, cfg.temperature)
            optimizer_step(loss, self.optimizer, self.scaler)
            loss_sum += loss.detach() * len(rows)
            seen += len(rows)
            self.step += 1
        return epoch_row("pretrain", self.epoch, lr, loss_sum, seen, start)

    def fit(self, quiet: bool) -> None:
        """Train to the last epoch with last.pt after every epoch, then write backbone.pt."""
        while not self.finished:
            row = self.run_epoch(quiet)
            self.log.append(row)
            self.epoch += 1
            self.finished = self.epoch >= self.cfg.epochs
            self.save_last()
            write_log(self.out_dir, self.log)
            if not quiet or self.finished or self.epoch % 10 == 0:
                print(f"pretrain epoch {row['epoch']:>3} lr={row['lr']:.2e} loss={row['loss']:.4f} "
                      f"{row['seconds']:.1f}s {row['images_per_s']:.0f} img/s", flush=True)
        plot_epoch_loss(self.out_dir / "loss.png", self.log,
                        "NT-Xent loss" if self.cfg.method == "simclr" else "SimSiam loss (negative cosine)")
        self.save_backbone()

    def save_backbone(self) -> None:
        """backbone.pt: the tensors train.py --pretrained loads under "model", plus how they were made."""
        save_checkpoint(self.out_dir / "backbone.pt", {**self.header(), "epoch": self.epoch,
                                                       "model": backbone_state(self.net.backbone)})

    def save_view_grid(self, path: Path, count: int = 8) -> None:
        """Pairs of views of the first images (one pair per column), to check the augmentation by eye."""
        generator = torch.Generator(device=self.rt.device).manual_seed(derived_seed(self.cfg.seed, -1))
        batch = torch.from_numpy(self.data.images[:count]).to(self.rt.device).permute(0, 3, 1, 2).float()
        rows = [batch] + [self.views(batch, generator) for _ in range(2)]
        fig, axes = plt.subplots(3, len(batch), figsize=(1.2 * len(batch), 3.8), squeeze=False)
        for r, (name, views) in enumerate(zip(("image", "view 1", "view 2"), rows)):
            for c in range(len(batch)):
                pixels = views[c].permute(1, 2, 0).clamp(0, 255).to(torch.uint8).cpu().numpy()
                axes[r][c].imshow(pixels.squeeze(-1) if pixels.shape[-1] == 1 else pixels, cmap="gray", vmin=0,
                                  vmax=255)
                axes[r][c].set_xticks([])
                axes[r][c].set_yticks([])
            axes[r][0].set_ylabel(name)
        fig.suptitle("pretraining views (same seed every run)")
        save_figure(path, fig)
        plt.close(fig)


def write_manifest(out_dir: Path, data: PretrainImages) -> None:
    write_csv(out_dir / "manifest.csv", data.manifest)


def run_pretraining(cfg: PretrainConfig, resume: bool, overwrite: bool, quiet: bool, rt: Runtime) -> Path:
    """Pretrain (or resume) on every listed image; returns the backbone.pt path."""
    signal.signal(signal.SIGTERM, raise_interrupt)  # a scheduler's kill ends like Ctrl-C: last.pt is intact
    out = pretrain_dir(cfg)
    action = run_dir_action(out, resume, overwrite)
    check_writable(out.parent, "pretraining folders")
    data = load_pretrain_images(cfg, quiet)
    trainer = PretrainTrainer(cfg, out, data, rt)
    if action == "resume":
        trainer.resume()  # refuses other settings or images before anything in the folder is rewritten
    counts = data.manifest["split"].value_counts().to_dict()
    write_run_record(out, action, {**trainer.header(), "images_by_split": counts, "git_commit": git_commit(REPO),
                                   "packages": package_versions()})
    if action != "resume":
        write_manifest(out, data)
        trainer.save_view_grid(out / "views.png")
    params = sum(p.numel() for p in trainer.net.backbone.parameters())
    spec = data.spec
    print(f"pretrain: {len(data.images)} images ({', '.join(f'{v} {k}' for k, v in counts.items())}) at "
          f"{spec.height_px}x{spec.width_px}x{spec.in_chans}, {cfg.method} on {cfg.model} "
          f"({params / 1e6:.2f} M parameters), {cfg.epochs} epochs, device {rt.device}")
    trainer.fit(quiet)
    return out / "backbone.pt"
