"""Training and prediction primitives: device set-up, batches from the uint8 cache, one epoch, predict."""
from __future__ import annotations

import functools
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from src.core.errors import UserError
from src.core.repro import derived_seed
from src.data.augment import augment_batch
from src.train.config import TrainConfig
from src.train.distributed import SINGLE, Dist, ShardedBatches, init_distributed
from src.train.models import freeze_backbone_norms, head_and_backbone


@dataclass
class Runtime:
    """Where and how tensors run: device, autocast dtype (None = full precision), memory format."""

    device: torch.device
    amp_dtype: torch.dtype | None
    channels_last: bool
    dist: Dist = SINGLE


def setup_runtime(cfg: TrainConfig, distributed: bool = False) -> Runtime:
    """Pick the device, threads, precision and determinism settings for a run; with `distributed`, join
    torchrun's process group when there is one (one GPU per local rank)."""
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA GPU is visible; use --device auto or cpu")
    use_cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
    info = init_distributed(use_cuda) if distributed else SINGLE
    device = torch.device("cuda", info.local_rank) if use_cuda and info.enabled else \
        torch.device("cuda" if use_cuda else "cpu")
    # The cores this process may use (a container or taskset can allow fewer than the machine has), shared
    # by the processes torchrun started on this machine.
    torch.set_num_threads(cfg.threads or max(1, len(os.sched_getaffinity(0)) // info.local_world_size))
    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic = cfg.deterministic
    torch.backends.cudnn.benchmark = not cfg.deterministic
    settings = runtime_settings(cfg.amp, cfg.channels_last)
    amp_dtype = None
    if use_cuda and settings["amp"] != "off":
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    elif settings["amp"] == "on":
        amp_dtype = torch.bfloat16
    channels_last = settings["channels_last"] == "on" or (use_cuda and settings["channels_last"] == "auto")
    return Runtime(device, amp_dtype, channels_last, info)


def runtime_settings(amp: bool | str, channels_last: bool | str) -> dict:
    """amp and channels_last as auto/on/off. train.py's config says so already (on a CPU `auto` means off until its
    probe, src/train/cpu_speed.py, settles it); pretrain.py's and gen_synthetic.py's keep booleans, which mean
    what they always did: amp True = AMP on CUDA only, channels_last True = NHWC on every device."""
    return {"amp": {True: "auto", False: "off"}.get(amp, amp) if isinstance(amp, bool) else amp,
            "channels_last": ("on" if channels_last else "off") if isinstance(channels_last, bool) else channels_last}


def runtime_kind(rt: Runtime) -> dict:
    """The kind of device and precision a run trains on (recorded in its checkpoints): random draws on the
    device and AMP's arithmetic differ between kinds, so a run continues exactly only on the same kind."""
    return {"device": rt.device.type, "amp_dtype": str(rt.amp_dtype), "channels_last": rt.channels_last}


def check_runtime_kind(path: Path, state: dict, rt: Runtime) -> None:
    """Refuse to continue a checkpoint's unfinished run on another kind of device or precision. A finished run
    (nothing left to train) and a checkpoint from before the kind was recorded pass."""
    saved, now = state.get("runtime"), runtime_kind(rt)
    if saved is None or state.get("finished") or all(saved[k] == now[k] for k in now if k in saved):
        return  # keys an older checkpoint lacks are not compared
    raise UserError(f"{path}: trained with {saved}, now {now}; resume on the same kind of device (--device) and "
                    f"precision (--amp, --channels-last) for an exact continuation, or start a new --exp")


class ArrayBatches(torch.utils.data.Dataset):
    """Whole batches from an in-memory uint8 (N, H, W, C) array; indexed by a list of row numbers."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform=None):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, rows: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        rows = np.sort(np.asarray(rows))  # sorted rows read memory in order; the batch is unordered anyway
        images = self.images[rows]
        if self.transform is not None:
            images = augment_batch(self.transform, images)
        return torch.from_numpy(images), torch.from_numpy(self.labels[rows])

    def reseed(self, seed: int) -> None:
        if self.transform is not None:
            self.transform.set_random_seed(seed)


def _seed_worker(_worker_id: int, rank: int = 0) -> None:
    # Each worker's torch seed comes from the loader's seeded generator; derive the augmentation seed from it
    # (and from the DDP rank, so ranks augment differently).
    info = torch.utils.data.get_worker_info()
    seed = torch.initial_seed() % 2**31
    info.dataset.reseed(derived_seed(seed, rank) if rank else seed)


def train_loader(dataset: ArrayBatches, batch_size: int, seed: int, num_workers: int, pin_memory: bool,
                 info: Dist = SINGLE, batches: torch.utils.data.Sampler | None = None):
    """Shuffled batches for one epoch, fully determined by `seed`. Under DDP every rank draws the same
    global batches (`batch_size` is the global batch) and takes its share, with its own augmentation seed.
    `batches` replaces the shuffled one-pass sampler (consistency training's SemiSampler, already sharded)."""
    generator = torch.Generator().manual_seed(seed)
    sampler = batches
    if sampler is None:
        sampler = torch.utils.data.BatchSampler(torch.utils.data.RandomSampler(dataset, generator=generator),
                                                batch_size, drop_last=drops_last_batch(len(dataset), batch_size))
        if info.enabled:
            sampler = ShardedBatches(sampler, info)
    # The loader draws its worker base seed from `generator` before the sampler shuffles, on every rank alike,
    # so the permutation is the single-process one; augmentation seeds then differ per rank.
    dataset.reseed(derived_seed(seed, info.rank) if info.enabled else seed)
    return torch.utils.data.DataLoader(dataset, sampler=sampler, batch_size=None, num_workers=num_workers,
                                       pin_memory=pin_memory, generator=generator,
                                       worker_init_fn=functools.partial(_seed_worker, rank=info.rank))


def drops_last_batch(num_images: int, batch_size: int) -> bool:
    """A ragged last batch is dropped (noisy BatchNorm statistics), unless it is the only batch."""
    return num_images > batch_size


def steps_per_epoch(num_images: int, batch_size: int) -> int:
    return num_images // batch_size if drops_last_batch(num_images, batch_size) else 1


@dataclass
class InputNorm:
    """How a uint8 batch becomes model input: per-channel mean and std on the device, and the side the model
    is fed at (0 = the cache's size; larger upscales on the device, so a small cache can feed a model
    pretrained at 224 px)."""

    mean: torch.Tensor
    std: torch.Tensor
    size_px: int = 0


def to_input(images: torch.Tensor, norm: InputNorm, rt: Runtime, augment=None) -> torch.Tensor:
    """uint8 NHWC batch -> normalised float NCHW on the device (channels_last is the free NHWC view).

    `augment` (a function of the float NCHW batch in [0, 255]) runs before normalisation, on the pixels as stored;
    the resize to `norm.size_px` comes after it."""
    x = images.to(rt.device, non_blocking=True).permute(0, 3, 1, 2).float()
    if augment is not None:
        x = augment(x)
    if norm.size_px and tuple(x.shape[-2:]) != (norm.size_px, norm.size_px):
        shrink = norm.size_px < min(x.shape[-2:])  # antialiasing matters only when shrinking
        x = F.interpolate(x, size=(norm.size_px, norm.size_px), mode="bilinear", align_corners=False,
                          antialias=shrink)
    x = x.div_(255).sub_(norm.mean).div_(norm.std)
    return x.contiguous(memory_format=torch.channels_last if rt.channels_last else torch.contiguous_format)


def norm_tensors(mean: list[float], std: list[float], rt: Runtime, size_px: int = 0) -> InputNorm:
    shape = (1, len(mean), 1, 1)
    return InputNorm(torch.tensor(mean, device=rt.device).view(shape), torch.tensor(std, device=rt.device).view(shape),
                     size_px)


def train_one_epoch(model: nn.Module, loader, optimizer: torch.optim.Optimizer, loss_fn: nn.Module,
                    lr_factor_at_step, first_step: int, scaler: torch.amp.GradScaler, norm, rt: Runtime,
                    desc: str, quiet: bool, ema=None, augment=None, freeze_backbone: bool = False, mix=None,
                    consistency=None) -> dict:
    """One pass over `loader`; sets every param group's LR from `lr_factor_at_step(step)` before each step
    and updates the weight average `ema` (timm ModelEmaV3) after it; `augment` is the on-device pipeline,
    `mix` (mixup/cutmix: `mix_batch`) turns the normalised batch and its labels into mixed images and soft targets.
    With `consistency` (src/train/consistency.py) each batch also carries unlabelled images, whose loss joins in.
    With `freeze_backbone` only the classifier head learns: the backbone's gradients are dropped before
    each step (so the optimiser skips it, moments included) and its BatchNorm statistics are kept."""
    model.train()
    frozen = []
    if freeze_backbone:
        net = getattr(model, "module", model)  # the weights, not the DDP wrapper
        freeze_backbone_norms(net)
        frozen = head_and_backbone(net)[1]
    loss_sum = torch.zeros((), device=rt.device)  # accumulate on device: no host sync per step
    seen, step, start = 0, first_step, time.perf_counter()
    for images, labels, *unlabeled in tqdm(loader, desc=desc, leave=False, disable=quiet, unit="batch"):
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] * lr_factor_at_step(step)
        x = to_input(images, norm, rt, augment)
        y = labels.to(rt.device, non_blocking=True)
        if mix is not None:
            x, y = mix(x, y)
        with torch.autocast(rt.device.type, dtype=rt.amp_dtype, enabled=rt.amp_dtype is not None):
            if consistency is None:
                loss = loss_fn(model(x), y)
            else:  # labelled, weak and strong views in one forward pass: one set of BatchNorm statistics (FixMatch)
                weak, strong, truth = unlabeled
                n, m = len(x), len(weak)
                logits = model(torch.cat([x, to_input(weak, norm, rt, consistency.weak_view()),
                                          to_input(strong, norm, rt)]))
                loss = loss_fn(logits[:n], y) + consistency.loss(logits[n:n + m], logits[n + m:],
                                                                 truth.to(rt.device, non_blocking=True))
        optimizer_step(loss, optimizer, scaler, frozen)
        if ema is not None:
            ema.update(getattr(model, "module", model), step=step + 1)  # the weights, not the DDP wrapper
        loss_sum += loss.detach() * len(y)
        seen += len(y)
        step += 1
    train_loss = float(loss_sum) / max(seen, 1)  # waits for the device, so the clock below is honest
    seconds = time.perf_counter() - start
    return {"train_loss": train_loss, "train_seconds": seconds,
            "images_per_s": seen / max(seconds, 1e-9), "steps": step - first_step}


def mix_batch(mixup, num_classes: int, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """timm's Mixup (mixup or cutmix, drawn per batch; it pairs each image with the batch reversed) on a batch
    and its class indices -> mixed images and soft targets. timm needs an even batch: an odd one-off last
    image stays unmixed, with a one-hot target."""
    even = len(x) - len(x) % 2
    if even == 0:
        return x, F.one_hot(y, num_classes).float()
    mixed, targets = mixup(x[:even], y[:even])
    if even == len(x):
        return mixed, targets
    return torch.cat([mixed, x[even:]]), torch.cat([targets, F.one_hot(y[even:], num_classes).to(targets.dtype)])


def optimizer_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                   frozen: list[nn.Parameter] | tuple = ()) -> None:
    """Backward through the (fp16-scaled) loss and step; `frozen` parameters get no gradient, so the
    optimiser skips them entirely (no update, no moments, no weight decay)."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    for p in frozen:
        p.grad = None
    scaler.step(optimizer)
    scaler.update()


def epoch_row(what: str, epoch: int, lr: float, loss_sum: torch.Tensor, seen: int, start: float) -> dict:
    """The log row of one epoch of a generator or pretraining loop; a non-finite loss is a UserError."""
    loss = float(loss_sum) / max(seen, 1)  # waits for the device, so the clock below is honest
    seconds = time.perf_counter() - start
    if not math.isfinite(loss):
        raise UserError(f"{what} epoch {epoch}: loss is {loss}; lower --lr")
    return {"epoch": epoch, "lr": lr, "loss": loss, "seconds": seconds, "images_per_s": seen / max(seconds, 1e-9)}


@torch.no_grad()
def predict_probs(model: nn.Module, images: np.ndarray, batch_size: int, norm, rt: Runtime,
                  desc: str = "predict", quiet: bool = True, view=None) -> np.ndarray:
    """Softmax probabilities (N, classes) as float32 for a uint8 (N, H, W, C) array, in order.

    `view` (a TTA function of the uint8 NHWC batch on the device) is applied before normalisation."""
    model.eval()
    out = []
    for start in tqdm(range(0, len(images), batch_size), desc=desc, leave=False, disable=quiet, unit="batch"):
        batch = torch.from_numpy(images[start:start + batch_size]).to(rt.device, non_blocking=True)
        x = to_input(view(batch) if view else batch, norm, rt)
        with torch.autocast(rt.device.type, dtype=rt.amp_dtype, enabled=rt.amp_dtype is not None):
            logits = model(x)
        out.append(torch.softmax(logits.float(), dim=1).cpu())
    return torch.cat(out).numpy()


def build_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """AdamW or SGD; no weight decay on biases and norm layers (decaying them only hurts); the backbone's
    peak LR is lr * backbone_lr_mult, the classifier head's is lr."""
    if cfg.backbone_lr_mult == 1:  # one LR: the two groups (in model order) checkpoints had before the split
        parts = [("all", list(model.parameters()), cfg.lr)]
    else:
        head, backbone = head_and_backbone(model)
        parts = [("backbone", backbone, cfg.lr * cfg.backbone_lr_mult), ("head", head, cfg.lr)]
    groups = []
    for part, params, lr in parts:
        trainable = [p for p in params if p.requires_grad]
        groups += [{"params": [p for p in trainable if p.ndim > 1], "weight_decay": cfg.weight_decay,
                    "initial_lr": lr, "part": part},
                   {"params": [p for p in trainable if p.ndim <= 1], "weight_decay": 0.0, "initial_lr": lr,
                    "part": part}]
    groups = [g for g in groups if g["params"]]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}")
