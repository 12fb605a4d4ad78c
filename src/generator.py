"""Class-conditional diffusion generator: a diffusers UNet2DModel trained with the DDPM objective on one
fold's training rows, sampled with DDIM or DPM-Solver and classifier-free guidance.

Guidance follows Ho & Salimans: prediction = (1 + w) * conditional - w * unconditional, so w = 0 is the
plain conditional model (one forward pass) and w > 0 pushes samples towards their class. The
unconditional model is the same network given a "null" class, learnt by dropping labels in training.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, UNet2DModel
from timm.utils import ModelEmaV3
from tqdm import tqdm

from src.atomic import save_figure
from src.config import HELP, INF, DataFields, check_fields, config_to_dict
from src.data import ImageSpec
from src.engine import Runtime, epoch_row, optimizer_step
from src.errors import UserError
from src.repro import derived_seed, rng_state, seed_everything, set_rng_state
from src.runs import CHECKPOINT_FORMAT, load_checkpoint, plot_epoch_loss, save_checkpoint, write_log
from src.schedule import Schedule, lr_factor_at

# Channels per resolution level and residual blocks per level. The first level runs at full resolution
# and dominates the cost on a CPU, so the small sizes keep it narrow (measured: tiny at 20 px ~600 img/s
# on 2 cores, 28 px ~300 img/s).
GEN_SIZES = {"tiny": ((16, 32, 64), 1), "small": ((32, 64, 128), 1), "base": ((64, 128, 256), 2)}
# Keys that define the trained network and its noise schedule: sampling always uses the trained values.
MODEL_KEYS = ("size", "resolution_px", "prediction", "beta_schedule", "train_timesteps")
# Keys that only change sampling: a finished generator can be sampled with other values, and a resume
# does not compare them.
SAMPLING_KEYS = ("sampler", "sample_steps", "guidance_scale", "per_class", "sample_batch_size", "filter_exp",
                 "filter_confidence", "runs_dir", "cas_config")

GEN_HELP = {
    **{f.name: HELP[f.name] for f in dataclasses.fields(DataFields)},
    "exp": "generator experiment; outputs go to <out_dir>/<exp>/fold<k>/",
    "out_dir": "where generator folders are created",
    "size": f"network size: {', '.join(f'{k} = channels {v[0]}' for k, v in GEN_SIZES.items())}",
    "resolution_px": "square size the generator works at; samples are resized back to the data's size",
    "epochs": "training epochs over the fold's training rows",
    "batch_size": "images per optimiser step",
    "lr": "peak learning rate (AdamW), warmup then cosine",
    "lr_warmup_epochs": "linear warmup length in epochs",
    "weight_decay": "AdamW weight decay",
    "ema_decay": "decay of the weight average used for sampling",
    "cond_drop_prob": "fraction of training labels replaced by the null class (needed for guidance)",
    "prediction": "what the network predicts: v_prediction (stable with the cosine schedule), epsilon or sample",
    "beta_schedule": "DDPM noise schedule",
    "train_timesteps": "DDPM noise levels",
    "preview_every_epochs": "write a sample grid every this many epochs (0 = only at the end)",
    "sampler": "fast sampler: ddim (deterministic) or dpm (DPM-Solver++ multistep)",
    "sample_steps": "denoising steps per sample",
    "guidance_scale": "classifier-free guidance w: (1 + w) x conditional - w x unconditional; 0 = plain conditional "
                      "(on the demo, w > 0 lowered class agreement: see the README)",
    "per_class": "samples per class written by the sample command",
    "sample_batch_size": "images denoised at once",
    "filter_exp": "train.py experiment whose fold-k classifier filters samples; empty: 'all' uses its own "
                  "classifier trained on the fold's real training rows, 'sample' keeps every sample",
    "filter_confidence": "keep a sample if the filter predicts its label with at least this probability",
    "runs_dir": "where filter_exp's train.py runs live",
    "cas_config": "train.py config file (YAML/JSON) for the CAS classifiers; empty = train.py's defaults",
    "seed": "seed for weights, batches, noise and sample seeds",
    "device": "auto picks CUDA when available",
    "amp": "mixed precision on CUDA",
    "channels_last": "channels_last memory format",
    "deterministic": "bit-exact repeatable runs",
    "threads": "torch CPU threads; 0 = all cores",
}


@dataclass
class GenConfig(DataFields):
    """Everything that determines a generator run and its samples; saved in its checkpoints and meta.json."""

    CHOICES: ClassVar[dict] = {"size": tuple(GEN_SIZES), "prediction": ("v_prediction", "epsilon", "sample"),
                               "beta_schedule": ("squaredcos_cap_v2", "linear", "scaled_linear"),
                               "sampler": ("ddim", "dpm"), "device": ("auto", "cpu", "cuda")}
    RANGES: ClassVar[dict] = {
        "resolution_px": (8, 512, "[]"), "epochs": (1, INF, "[)"), "batch_size": (1, INF, "[)"), "lr": (0, 1, "()"),
        "lr_warmup_epochs": (0, INF, "[)"), "weight_decay": (0, INF, "[)"), "ema_decay": (0, 1, "[)"),
        "cond_drop_prob": (0, 1, "[)"), "train_timesteps": (10, 10000, "[]"), "preview_every_epochs": (0, INF, "[)"),
        "sample_steps": (1, 1000, "[]"), "guidance_scale": (0, 50, "[]"), "per_class": (1, INF, "[)"),
        "sample_batch_size": (1, INF, "[)"), "filter_confidence": (0, 1, "[]"), "threads": (0, INF, "[)")}
    HELP: ClassVar[dict] = GEN_HELP

    exp: str = "gen"
    out_dir: str = "synthetic"
    size: str = "tiny"
    resolution_px: int = 20
    epochs: int = 80
    batch_size: int = 64
    lr: float = 2e-3
    lr_warmup_epochs: float = 1.0
    weight_decay: float = 0.0
    ema_decay: float = 0.999
    cond_drop_prob: float = 0.1
    prediction: str = "v_prediction"
    beta_schedule: str = "squaredcos_cap_v2"
    train_timesteps: int = 1000
    preview_every_epochs: int = 20
    sampler: str = "dpm"
    sample_steps: int = 20
    guidance_scale: float = 0.0
    per_class: int = 100
    sample_batch_size: int = 250
    filter_exp: str = ""
    filter_confidence: float = 0.5
    runs_dir: str = "runs"
    cas_config: str = ""
    seed: int = 42
    device: str = "auto"
    amp: bool = True
    channels_last: bool = False
    deterministic: bool = True
    threads: int = 0

    def validate(self) -> "GenConfig":
        check_fields(self)
        levels = len(GEN_SIZES[self.size][0])
        if self.resolution_px % 2 ** (levels - 1):
            raise UserError(f"config: resolution_px={self.resolution_px} must be divisible by {2 ** (levels - 1)} "
                            f"(the {self.size} network halves it {levels - 1} times)")
        if self.lr_warmup_epochs >= self.epochs:
            raise UserError(f"config: lr_warmup_epochs ({self.lr_warmup_epochs}) must be < epochs ({self.epochs})")
        for name in ("exp", "filter_exp"):
            value = getattr(self, name)
            if (name == "exp" or value) and (not value or "/" in value or value.startswith(".")):
                raise UserError(f"config: {name}={value!r} must be a plain folder name")
        return self


def build_unet(size: str, in_chans: int, num_classes: int, resolution_px: int) -> UNet2DModel:
    """A class-conditional UNet; class index `num_classes` is the null class used for guidance."""
    channels, layers = GEN_SIZES[size]
    levels = len(channels)
    attention = size == "base"  # self-attention pays off only at the sizes a GPU can afford
    down = ("DownBlock2D",) * (levels - 1) + (("AttnDownBlock2D",) if attention else ("DownBlock2D",))
    up = (("AttnUpBlock2D",) if attention else ("UpBlock2D",)) + ("UpBlock2D",) * (levels - 1)
    return UNet2DModel(sample_size=resolution_px, in_channels=in_chans, out_channels=in_chans,
                       layers_per_block=layers, block_out_channels=channels, down_block_types=down,
                       up_block_types=up, num_class_embeds=num_classes + 1, norm_num_groups=8,
                       add_attention=attention)


def build_noise_scheduler(cfg: GenConfig) -> DDPMScheduler:
    return DDPMScheduler(num_train_timesteps=cfg.train_timesteps, beta_schedule=cfg.beta_schedule,
                         prediction_type=cfg.prediction, clip_sample=False)


def build_sampler(noise_scheduler: DDPMScheduler, sampler: str, steps: int):
    """The fast sampler over the training noise schedule, set to `steps` denoising steps."""
    if sampler == "ddim":
        # No x0 clipping: diffusers clips the predicted image but not the noise derived from the unclipped
        # one, and with guidance that mismatch wrecked samples (class agreement 0.880 vs 0.992 unclipped).
        out = DDIMScheduler.from_config(noise_scheduler.config, clip_sample=False, set_alpha_to_one=True)
    elif sampler == "dpm":
        out = DPMSolverMultistepScheduler.from_config(noise_scheduler.config, algorithm_type="dpmsolver++",
                                                      thresholding=False, lower_order_final=True)
    else:
        raise ValueError(f"unknown sampler {sampler!r}")
    out.set_timesteps(steps)
    return out


def to_model_range(images: np.ndarray, resolution_px: int) -> torch.Tensor:
    """uint8 (N, H, W, C) -> float (N, C, R, R) in [-1, 1]; area interpolation when shrinking."""
    out = np.empty((len(images), resolution_px, resolution_px, images.shape[-1]), dtype=np.uint8)
    for i, image in enumerate(images):
        if image.shape[:2] != (resolution_px, resolution_px):
            image = cv2.resize(image, (resolution_px, resolution_px), interpolation=cv2.INTER_AREA)
        out[i] = image.reshape(resolution_px, resolution_px, -1)
    return torch.from_numpy(out).permute(0, 3, 1, 2).float().div(127.5).sub(1)


def from_model_range(x: torch.Tensor, spec: ImageSpec) -> np.ndarray:
    """float (N, C, R, R) in [-1, 1] -> uint8 (N, H, W, C) at the data's size (cubic when enlarging)."""
    images = ((x.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    if images.shape[1:3] == (spec.height_px, spec.width_px):
        return images
    out = np.empty((len(images), spec.height_px, spec.width_px, spec.in_chans), dtype=np.uint8)
    grow = spec.height_px * spec.width_px > images.shape[1] * images.shape[2]
    for i, image in enumerate(images):
        resized = cv2.resize(image, (spec.width_px, spec.height_px),
                             interpolation=cv2.INTER_CUBIC if grow else cv2.INTER_AREA)
        out[i] = resized.reshape(spec.height_px, spec.width_px, spec.in_chans)
    return out


def diffusion_target(noise_scheduler: DDPMScheduler, x0: torch.Tensor, noise: torch.Tensor,
                     t: torch.Tensor) -> torch.Tensor:
    """What the network learns to predict for noise level t, by the scheduler's prediction type."""
    kind = noise_scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return noise_scheduler.get_velocity(x0, noise, t)
    return x0


def diffusion_batch(noise_scheduler: DDPMScheduler, x0: torch.Tensor, labels: torch.Tensor, null_class: int,
                    cond_drop_prob: float, generator: torch.Generator):
    """(noisy input, timesteps, conditioning labels, target) for one training batch; all randomness from
    `generator`, so an epoch is a pure function of its seed."""
    n = len(x0)
    noise = torch.randn(x0.shape, generator=generator, device=x0.device)
    t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (n,), generator=generator, device=x0.device)
    drop = torch.rand(n, generator=generator, device=x0.device) < cond_drop_prob
    cond = torch.where(drop, torch.full_like(labels, null_class), labels)
    return noise_scheduler.add_noise(x0, noise, t), t, cond, diffusion_target(noise_scheduler, x0, noise, t)


def sample_seeds(seed: int, fold: int, count: int, start: int = 0) -> list[int]:
    """One seed per sample, so any single image can be regenerated from the manifest."""
    return [derived_seed(seed, fold, 7, i) for i in range(start, start + count)]


@torch.no_grad()
def sample(unet: UNet2DModel, sampler, labels: torch.Tensor, seeds: list[int], guidance_scale: float,
           null_class: int, rt: Runtime) -> torch.Tensor:
    """Denoise one batch; image i starts from noise seeded by seeds[i]. Returns (N, C, R, R) in [-1, 1]."""
    cfg = unet.config
    shape = (cfg.in_channels, cfg.sample_size, cfg.sample_size)
    x = torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s in seeds]).to(rt.device)
    labels = labels.to(rt.device)
    guided = guidance_scale > 0
    class_in = torch.cat([labels, torch.full_like(labels, null_class)]) if guided else labels
    unet.eval()
    for t in sampler.timesteps:
        model_in = torch.cat([x, x]) if guided else x
        steps = torch.full((len(model_in),), int(t), device=rt.device)
        with torch.autocast(rt.device.type, dtype=rt.amp_dtype, enabled=rt.amp_dtype is not None):
            out = unet(model_in, steps, class_labels=class_in).sample.float()
        if guided:
            cond, uncond = out.chunk(2)
            out = cond + guidance_scale * (cond - uncond)
        x = sampler.step(out, t, x).prev_sample
    return x.clamp(-1, 1)


def sample_images(unet: UNet2DModel, noise_scheduler: DDPMScheduler, cfg: GenConfig, labels: np.ndarray,
                  seeds: list[int], spec: ImageSpec, rt: Runtime, quiet: bool = True) -> np.ndarray:
    """uint8 (N, H, W, C) samples at the data's size for the given class indices and seeds."""
    out = []
    null_class = unet.config.num_class_embeds - 1
    for start in tqdm(range(0, len(labels), cfg.sample_batch_size), desc="sample", unit="batch", leave=False,
                      disable=quiet):
        sampler = build_sampler(noise_scheduler, cfg.sampler, cfg.sample_steps)  # fresh: DPM-Solver keeps state
        stop = start + cfg.sample_batch_size
        x = sample(unet, sampler, torch.as_tensor(labels[start:stop]), seeds[start:stop], cfg.guidance_scale,
                   null_class, rt)
        out.append(from_model_range(x, spec))
    return np.concatenate(out)


def image_grid(images: np.ndarray, labels: np.ndarray, classes: list[str], per_row: int) -> np.ndarray:
    """One row per class (up to `per_row` images each), uint8 (H, W, C)."""
    h, w, c = images.shape[1:]
    grid = np.zeros((len(classes) * h, per_row * w, c), dtype=np.uint8)
    for row in range(len(classes)):
        for col, i in enumerate(np.flatnonzero(labels == row)[:per_row]):
            grid[row * h:(row + 1) * h, col * w:(col + 1) * w] = images[i]
    return grid


def save_grid(path: Path, images: np.ndarray, labels: np.ndarray, classes: list[str], title: str,
              per_row: int = 10) -> None:
    """Sample grid PNG, rows = classes, labelled with the class names."""
    import matplotlib.pyplot as plt

    grid = image_grid(images, labels, classes, per_row)
    h = images.shape[1]
    fig, ax = plt.subplots(figsize=(max(4.0, per_row * 0.45 + 1), max(3.0, len(classes) * 0.45 + 0.6)))
    ax.imshow(grid.squeeze(-1) if grid.shape[-1] == 1 else grid, cmap="gray", vmin=0, vmax=255)
    ax.set_yticks([(r + 0.5) * h for r in range(len(classes))], [str(c)[:12] for c in classes])
    ax.set_xticks([])
    ax.set_title(title, fontsize=9)
    save_figure(path, fig)
    plt.close(fig)


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
                "runtime": {"device": self.rt.device.type, "amp_dtype": str(self.rt.amp_dtype)}}

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
        if state.get("runtime") != self.header()["runtime"]:
            raise UserError(f"{path}: trained with {state.get('runtime')}, now {self.header()['runtime']}; resume on "
                            f"the same kind of device (--device) for an exact continuation")
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
