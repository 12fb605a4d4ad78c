"""pretrain.py's typed config: what determines a self-supervised pretraining run and its quality probe."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from src.core.config import INF, check_fields, clip_warmup
from src.core.errors import UserError
from src.train.config import HELP

# Keys that only change the quality check after pretraining: a resume does not compare them.
PROBE_KEYS = ("train_csv", "id_col", "label_col", "folds_csv", "probe_k", "probe_temperature")

PRETRAIN_HELP = {
    "data_dir": "competition folder; every image under its train, unlabeled and test folders is used",
    "train_csv": "labels file, read only by the quality check after pretraining",
    "image_dir": "folder of training images inside data_dir",
    "id_col": HELP["id_col"] + " (quality check only)",
    "label_col": HELP["label_col"] + " (quality check only)",
    "folds_csv": HELP["folds_csv"] + " (quality check only)",
    "unlabeled_dir": "folder of unlabelled images inside data_dir (skipped when absent)",
    "test_dir": "folder of test images inside data_dir",
    "include_test": "also pretrain on the test images (a transductive choice, recorded in the config and manifest)",
    "exp": "pretraining experiment; outputs go to <out_dir>/<exp>/",
    "out_dir": "where pretraining folders are created",
    "model": "timm model name or smallcnn: the backbone train.py --model will use",
    "image_size_px": "resize images to this square size; 0 = the data's size, longer side capped at 128 px (use the value "
                     "train.py will use)",
    "resize_interp": HELP["resize_interp"],
    "method": "simclr (NT-Xent over the batch's other images) or simsiam (no negatives: predictor + stop-gradient)",
    "epochs": "passes over all images (two views each)",
    "batch_size": "images per step (2x as many views); SimCLR's negatives come from the batch, so larger helps",
    "lr": "peak AdamW learning rate, reached after warmup, then cosine to lr_min_ratio",
    "lr_warmup_epochs": "linear warmup length in epochs",
    "lr_min_ratio": "final LR as a fraction of the peak",
    "weight_decay": "AdamW weight decay",
    "temperature": "NT-Xent temperature (SimCLR only): lower = harder negatives",
    "proj_dim": "projector output size (the space the loss works in)",
    "hidden_dim": "projector hidden size",
    "crop_scale_min": "smallest random crop, as a share of the image area",
    "rotate_deg": "random rotation up to this many degrees",
    "jitter": "brightness and contrast jitter (fraction)",
    "noise_prob": "share of views that get Gaussian noise",
    "flips": "random flips of the views (off by default: they change digits and text)",
    "probe_k": "neighbours in the kNN quality check",
    "probe_temperature": "kNN vote weight exp(similarity / T)",
    "seed": "seed for weights, batch order and views",
    "device": HELP["device"],
    "amp": "mixed precision on CUDA (bf16 where supported, else fp16 + GradScaler); a CPU trains in fp32",
    "channels_last": "channels_last (NHWC) memory format",
    "deterministic": HELP["deterministic"],
    "threads": "torch CPU threads; 0 = all cores",
}


@dataclass
class PretrainConfig:
    """Everything that determines a pretraining run; saved in config.json, last.pt and backbone.pt."""

    CHOICES: ClassVar[dict] = {"method": ("simclr", "simsiam"), "flips": ("none", "h", "v", "hv"),
                               "resize_interp": ("area", "linear", "cubic", "lanczos"),
                               "device": ("auto", "cpu", "cuda")}
    RANGES: ClassVar[dict] = {
        "image_size_px": (0, INF, "[)"), "epochs": (1, INF, "[)"), "batch_size": (2, INF, "[)"), "lr": (0, 1, "()"),
        "lr_warmup_epochs": (0, INF, "[)"), "lr_min_ratio": (0, 1, "[]"), "weight_decay": (0, INF, "[)"),
        "temperature": (0, INF, "()"), "proj_dim": (1, INF, "[)"), "hidden_dim": (4, INF, "[)"),
        "crop_scale_min": (0, 1, "(]"), "rotate_deg": (0, 180, "[]"), "jitter": (0, 1, "[)"),
        "noise_prob": (0, 1, "[]"), "probe_k": (1, INF, "[)"), "probe_temperature": (0, INF, "()"),
        "threads": (0, INF, "[)")}
    HELP: ClassVar[dict] = PRETRAIN_HELP

    data_dir: str = "data/mnist5k"
    train_csv: str = "train.csv"
    image_dir: str = "train"
    id_col: str = "image"
    label_col: str = "label"
    folds_csv: str = ""
    unlabeled_dir: str = "unlabeled"
    test_dir: str = "test"
    include_test: bool = True
    exp: str = "ssl"
    out_dir: str = "pretrained"
    model: str = "smallcnn"
    image_size_px: int = 0
    resize_interp: str = "cubic"
    method: str = "simclr"
    epochs: int = 40
    batch_size: int = 256
    lr: float = 2e-3
    lr_warmup_epochs: float = 1.0
    lr_min_ratio: float = 0.0
    weight_decay: float = 1e-4
    temperature: float = 0.2
    proj_dim: int = 128
    hidden_dim: int = 512
    crop_scale_min: float = 0.3
    rotate_deg: float = 15.0
    jitter: float = 0.3
    noise_prob: float = 0.3
    flips: str = "none"
    probe_k: int = 20
    probe_temperature: float = 0.07
    seed: int = 42
    device: str = "auto"
    amp: bool = True
    channels_last: bool = True
    deterministic: bool = True
    threads: int = 0

    def validate(self) -> "PretrainConfig":
        check_fields(self)
        clip_warmup(self)
        if not self.exp or "/" in self.exp or self.exp.startswith("."):
            raise UserError(f"config: exp={self.exp!r} must be a plain folder name")
        # Here, not at the top: the script parses its arguments before the heavy imports.
        import timm

        import src.train.models  # noqa: F401  (registers smallcnn with timm)

        if not timm.is_model(self.model):
            raise UserError(f"config: model {self.model!r} is not a timm model name (or smallcnn)")
        return self


def pretrain_dir(cfg: PretrainConfig) -> Path:
    return Path(cfg.out_dir) / cfg.exp
