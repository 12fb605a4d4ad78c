"""The typed run configuration: defaults < config file (JSON/YAML) < command-line flags.

Every field becomes a `--kebab-case` flag. Unknown keys in a config file are errors, so a typo can
never silently fall back to a default.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import yaml

from src.errors import UserError

CHOICES = {
    "augment": ("none", "light", "heavy"),
    "flips": ("none", "h", "v", "hv"),
    "resize_interp": ("area", "linear", "cubic", "lanczos"),
    "optimizer": ("adamw", "sgd"),
    "scheduler": ("cosine", "onecycle", "step", "plateau", "constant"),
    "loss": ("ce", "label_smoothing", "focal"),
    "loss2": ("", "ce", "label_smoothing", "focal"),
    "class_weights": ("none", "balanced"),
    "monitor": ("accuracy", "macro_f1", "log_loss", "roc_auc", "eer"),
    "monitor_mode": ("auto", "max", "min"),
    "device": ("auto", "cpu", "cuda"),
}

INF = float("inf")
# Allowed values: (low, high, brackets); "[)" means low <= value < high.
RANGES = {"epochs": (1, INF, "[)"), "batch_size": (1, INF, "[)"), "lr": (0, INF, "()"), "ema_decay": (0, 1, "[)"),
          "image_size_px": (0, INF, "[)"), "weight_decay": (0, INF, "[)"), "momentum": (0, 1, "[)"),
          "lr_warmup_epochs": (0, INF, "[)"), "lr_min_ratio": (0, 1, "[]"), "lr_step_epochs": (1, INF, "[)"),
          "lr_step_gamma": (0, 1, "()"), "plateau_patience_epochs": (0, INF, "[)"), "plateau_factor": (0, 1, "()"),
          "drop_rate": (0, 1, "[)"), "label_smoothing": (0, 1, "[)"), "focal_gamma": (0, INF, "[)"),
          "loss_switch_epoch": (0, INF, "[)"), "patience_epochs": (0, INF, "[)"), "min_delta": (0, INF, "[)"),
          "num_workers": (-1, INF, "[)"), "threads": (0, INF, "[)"), "synthetic_ratio": (0, INF, "[)"),
          "synthetic_per_class": (-1, INF, "[)"), "backbone_lr_mult": (0, INF, "[)"), "freeze_epochs": (0, INF, "[)")}

HELP = {
    "exp": "experiment name; outputs go to <runs_dir>/<exp>/fold<k>/",
    "data_dir": "competition folder holding train.csv and train/ (or an ImageFolder train/<class>/)",
    "train_csv": "labels file inside data_dir",
    "image_dir": "image folder inside data_dir",
    "id_col": "train.csv column with the image id or file name",
    "label_col": "train.csv column with the label",
    "folds_csv": "fold file (id,label,fold); empty = the single folds/<data name>_k*_s*.csv",
    "runs_dir": "where run directories are created",
    "model": "timm model name, or smallcnn (ours, for 24-32 px images)",
    "pretrained": "local weight file (.pt/.pth/.safetensors, or pretrain.py's backbone.pt); never downloaded",
    "backbone_lr_mult": "the backbone's LR as a multiple of --lr (the classifier head always gets --lr); below 1 "
                        "keeps pretrained features from being overwritten early",
    "freeze_epochs": "train only the classifier head for this many epochs first (backbone weights and BatchNorm "
                     "statistics frozen); needs pretrained",
    "image_size_px": "resize images to this square size; 0 = keep the data's size",
    "resize_interp": "interpolation used when resizing (cubic/lanczos for upscaling)",
    "drop_rate": "dropout before the classifier",
    "ema_decay": "keep an exponential moving average of the weights (e.g. 0.99) and validate/save it; 0 = off",
    "augment": "training augmentation: light = random shift ±10 %, scale 0.9–1.1 per axis, rotation ±10° "
               "(batched, on the device); heavy = stronger affine with shear, plus blur/noise and cutout "
               "(albumentations)",
    "flips": "random flips added to the pipeline (off by default: they break digits and text)",
    "epochs": "maximum number of epochs",
    "batch_size": "images per optimiser step (under torchrun: over all processes, split evenly)",
    "optimizer": "optimiser",
    "lr": "peak learning rate",
    "weight_decay": "decoupled weight decay (AdamW) or L2 (SGD)",
    "momentum": "SGD momentum",
    "scheduler": "LR curve after warmup, stepped every optimiser step",
    "lr_warmup_epochs": "linear warmup length in epochs (fractions allowed)",
    "lr_min_ratio": "final LR as a fraction of the peak (cosine, onecycle)",
    "lr_step_epochs": "step scheduler: epochs between LR drops",
    "lr_step_gamma": "step scheduler: LR multiplier at each drop",
    "plateau_patience_epochs": "plateau scheduler: epochs without improvement before a drop",
    "plateau_factor": "plateau scheduler: LR multiplier at each drop",
    "loss": "training loss",
    "label_smoothing": "smoothing used by the label_smoothing loss",
    "focal_gamma": "focusing parameter of the focal loss",
    "loss2": "loss used from loss_switch_epoch on (empty = never switch)",
    "loss_switch_epoch": "epoch (0-based) at which loss2 replaces loss",
    "class_weights": "weight the loss by inverse class frequency (balanced)",
    "monitor": "validation metric for best.pt and early stopping (log_loss is the validation loss)",
    "monitor_mode": "whether the monitored metric should go up or down (auto = by metric)",
    "patience_epochs": "early stopping patience; 0 = never stop early",
    "min_delta": "smallest change of the monitored metric that counts as improvement",
    "seed": "seed for weights, shuffling, augmentation and dropout",
    "device": "auto picks CUDA when available",
    "amp": "mixed precision on CUDA (bf16 where supported, else fp16 + GradScaler)",
    "channels_last": "channels_last memory format (measured faster on CPU too)",
    "deterministic": "bit-exact repeatable runs; off lets cuDNN pick the fastest (non-deterministic) kernels",
    "num_workers": "DataLoader workers; -1 = 0 on CPU (augmentation is cheap there), 4 on CUDA",
    "threads": "torch CPU threads; 0 = all cores (shared by the processes torchrun starts on one machine)",
    "tensorboard": "write TensorBoard event files to <run>/tb (when the tensorboard package is installed)",
    "sync_batchnorm": "under torchrun on GPUs: BatchNorm statistics over the whole global batch (SyncBatchNorm)",
    "synthetic": "gen_synthetic.py sample folder (synthetic/<exp>, or one fold's folder); its rows join the "
                 "fold's training split only, and a folder made for another fold is refused",
    "synthetic_ratio": "synthetic rows per real training row, per class",
    "synthetic_per_class": "fixed synthetic rows per class instead of the ratio (0 = use the ratio, -1 = all)",
    "synthetic_only": "train on the synthetic rows alone (Classification Accuracy Score); validation stays real",
    "synthetic_unfiltered": "also use samples the classifier filter rejected",
    "pseudo": "pseudo_label.py folder (or one fold's folder) of pseudo-labelled unlabelled/test images; they "
              "join the fold's training split only",
    "pseudo_soft": "train on the pseudo-labels' full probability vectors (soft labels, from pseudo.csv's prob_ "
                   "columns) instead of their top class; needs loss ce or label_smoothing",
}


@dataclass
class DataFields:
    """Where the labelled data and its fold file are: shared by every config that reads a competition."""

    data_dir: str = "data/mnist5k"
    train_csv: str = "train.csv"
    image_dir: str = "train"
    id_col: str = "image"
    label_col: str = "label"
    folds_csv: str = ""


@dataclass
class TrainConfig(DataFields):
    """Everything that determines a training run; saved as config.json and inside checkpoints."""

    CHOICES: ClassVar[dict] = CHOICES
    RANGES: ClassVar[dict] = RANGES
    HELP: ClassVar[dict] = HELP
    exp: str = "baseline"
    runs_dir: str = "runs"
    model: str = "smallcnn"
    pretrained: str = ""
    backbone_lr_mult: float = 1.0
    freeze_epochs: int = 0
    image_size_px: int = 0
    resize_interp: str = "cubic"
    drop_rate: float = 0.1
    ema_decay: float = 0.99
    augment: str = "light"
    flips: str = "none"
    epochs: int = 15
    batch_size: int = 64
    optimizer: str = "adamw"
    lr: float = 2e-3
    weight_decay: float = 0.05
    momentum: float = 0.9
    scheduler: str = "onecycle"
    lr_warmup_epochs: float = 1.0
    lr_min_ratio: float = 0.01
    lr_step_epochs: int = 5
    lr_step_gamma: float = 0.1
    plateau_patience_epochs: int = 2
    plateau_factor: float = 0.5
    loss: str = "label_smoothing"
    label_smoothing: float = 0.1
    focal_gamma: float = 2.0
    loss2: str = ""
    loss_switch_epoch: int = 0
    class_weights: str = "none"
    monitor: str = "accuracy"
    monitor_mode: str = "auto"
    patience_epochs: int = 0
    min_delta: float = 0.0
    seed: int = 42
    device: str = "auto"
    amp: bool = True
    channels_last: bool = True
    deterministic: bool = True
    num_workers: int = -1
    threads: int = 0
    sync_batchnorm: bool = False
    tensorboard: bool = True
    synthetic: str = ""
    synthetic_ratio: float = 0.25
    synthetic_per_class: int = 0
    synthetic_only: bool = False
    synthetic_unfiltered: bool = False
    pseudo: str = ""
    pseudo_soft: bool = False

    def validate(self) -> "TrainConfig":
        """Check ranges and choices; raises UserError naming the field."""
        check_fields(self)
        if self.loss2 and not 0 < self.loss_switch_epoch < self.epochs:
            raise UserError(f"config: with loss2 set, loss_switch_epoch must be in 1..{self.epochs - 1} "
                            f"(got {self.loss_switch_epoch})")
        if self.lr_warmup_epochs >= self.epochs:
            raise UserError(f"config: lr_warmup_epochs ({self.lr_warmup_epochs}) must be < epochs ({self.epochs})")
        if self.pseudo_soft and (not self.pseudo or "focal" in (self.loss, self.loss2)):
            raise UserError("config: pseudo_soft needs pseudo (a pseudo_label.py folder) and loss ce or "
                            "label_smoothing (focal loss takes class indices only)")
        if self.freeze_epochs and not self.pretrained:
            raise UserError("config: freeze_epochs needs pretrained (freezing a random backbone teaches nothing)")
        if self.freeze_epochs >= self.epochs:
            raise UserError(f"config: freeze_epochs ({self.freeze_epochs}) must be < epochs ({self.epochs})")
        if self.synthetic_only and not self.synthetic:
            raise UserError("config: synthetic_only needs synthetic (a gen_synthetic.py sample folder)")
        if not self.exp or "/" in self.exp or self.exp.startswith("."):
            raise UserError(f"config: exp={self.exp!r} must be a plain folder name")
        return self


def check_fields(cfg) -> None:
    """Check a config dataclass's values against its CHOICES and RANGES; raises UserError naming the field."""
    for name, allowed in cfg.CHOICES.items():
        if getattr(cfg, name) not in allowed:
            raise UserError(f"config: {name}={getattr(cfg, name)!r} is not one of {list(allowed)}")
    for name, (low, high, brackets) in cfg.RANGES.items():
        value = getattr(cfg, name)
        above = value >= low if brackets[0] == "[" else value > low
        below = value <= high if brackets[1] == "]" else value < high
        if not (above and below):  # NaN fails both
            raise UserError(f"config: {name} must be in {brackets[0]}{low}, {high}{brackets[1]}, got {value}")


def _coerce(name: str, value, kind: type, source: str):
    """Convert a config-file value to the field's type or raise a UserError naming it."""
    if kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif kind is str:
        if isinstance(value, str):
            return value
    raise UserError(f"{source}: key {name!r} must be {kind.__name__}, got {value!r}")


def _field_types(cls: type) -> dict[str, type]:
    return {f.name: typing.get_type_hints(cls)[f.name] for f in dataclasses.fields(cls)}


def config_from_dict(values: dict, source: str = "config", base=None, cls: type = TrainConfig):
    """Build a config of dataclass `cls` from a mapping; unknown keys and wrong types are errors."""
    types = _field_types(cls)
    merged = dataclasses.asdict(base or cls())
    for name, value in values.items():
        if name not in types:
            hint = difflib.get_close_matches(name, list(types), n=1)
            extra = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise UserError(f"{source}: unknown key {name!r}{extra}")
        merged[name] = _coerce(name, value, types[name], source)
    return cls(**merged)


def load_config_file(path: str | Path) -> dict:
    """Read a JSON or YAML mapping of config keys."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: config file not found")
    try:
        text = path.read_text()
        values = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        raise UserError(f"{path}: cannot parse config ({str(err).splitlines()[0]})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: cannot read config ({err})") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise UserError(f"{path}: a config file must hold a mapping of key: value")
    return values


def add_config_flags(parser: argparse.ArgumentParser, cls: type = TrainConfig) -> None:
    """Add one flag per field of config dataclass `cls`; defaults are suppressed so we know what the user set."""
    types = _field_types(cls)
    group = parser.add_argument_group("run config (also settable in --config FILE)")
    group.add_argument("--config", default=None, help="JSON or YAML file with config keys")
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        kind = types[f.name]
        helptext = f"{cls.HELP.get(f.name, '')} (default: {f.default!r})"
        if kind is bool:
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction,
                               default=argparse.SUPPRESS, help=helptext)
        else:
            group.add_argument(flag, dest=f.name, type=kind, default=argparse.SUPPRESS,
                               choices=cls.CHOICES.get(f.name), help=helptext)


def config_from_args(args: argparse.Namespace, cls: type = TrainConfig):
    """Resolve defaults < --config file < explicit flags into a validated config of dataclass `cls`."""
    cfg = cls()
    if getattr(args, "config", None):
        cfg = config_from_dict(load_config_file(args.config), source=args.config, cls=cls)
    flags = {k: v for k, v in vars(args).items() if k in _field_types(cls)}
    return config_from_dict(flags, source="command line", base=cfg, cls=cls).validate()


def config_to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


LOGGING_ONLY = ("tensorboard",)  # keys that change what is logged, not what is learned


def config_differences(a: dict, b: dict, cls: type = TrainConfig) -> list[str]:
    """Keys where two saved configs would train differently. A key one of them lacks (written by older or
    newer code) counts at its default, so adding a config key does not orphan existing runs."""
    defaults = dataclasses.asdict(cls())
    return [k for k in dict.fromkeys([*a, *b])
            if k not in LOGGING_ONLY and a.get(k, defaults.get(k)) != b.get(k, defaults.get(k))]
