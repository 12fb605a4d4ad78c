"""train.py's typed config: every field is a flag, a config-file key and part of config.json."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from src.core.config import INF, check_fields, clip_warmup
from src.core.errors import UserError
from src.train.hub import is_hub

CHOICES = {
    "augment": ("none", "light", "heavy", "photo", "randaugment"),
    "consistency_augment": ("heavy", "photo", "randaugment"),
    "flips": ("none", "h", "v", "hv", "auto"),
    "augment_fill": ("zeros", "reflection"),
    "resize_interp": ("area", "linear", "cubic", "lanczos"),
    "normalize": ("auto", "data", "pretrained"),
    "optimizer": ("adamw", "sgd"),
    "scheduler": ("cosine", "onecycle", "step", "plateau", "constant"),
    "loss": ("ce", "label_smoothing", "focal"),
    "loss2": ("", "ce", "label_smoothing", "focal"),
    "class_weights": ("none", "balanced"),
    "monitor": ("accuracy", "macro_f1", "log_loss", "roc_auc", "eer"),
    "monitor_mode": ("auto", "max", "min"),
    "device": ("auto", "cpu", "cuda"),
    "amp": ("auto", "on", "off"),
    "channels_last": ("auto", "on", "off"),
}

# Allowed values: (low, high, brackets); "[)" means low <= value < high.
RANGES = {"epochs": (1, INF, "[)"), "batch_size": (1, INF, "[)"), "lr": (0, INF, "()"), "ema_decay": (0, 1, "[)"),
          "image_size_px": (0, INF, "[)"), "input_size_px": (0, INF, "[)"), "weight_decay": (0, INF, "[)"),
          "momentum": (0, 1, "[)"),
          "lr_warmup_epochs": (0, INF, "[)"), "lr_min_ratio": (0, 1, "[]"), "lr_step_epochs": (1, INF, "[)"),
          "lr_step_gamma": (0, 1, "()"), "plateau_patience_epochs": (0, INF, "[)"), "plateau_factor": (0, 1, "()"),
          "drop_rate": (0, 1, "[)"), "drop_path_rate": (0, 1, "[)"), "mixup_alpha": (0, INF, "[)"),
          "cutmix_alpha": (0, INF, "[)"), "mixup_off_epoch": (0, INF, "[)"), "label_smoothing": (0, 1, "[)"), "focal_gamma": (0, INF, "[)"),
          "loss_switch_epoch": (0, INF, "[)"), "patience_epochs": (0, INF, "[)"), "min_delta": (0, INF, "[)"),
          "num_workers": (-1, INF, "[)"), "threads": (0, INF, "[)"), "synthetic_ratio": (0, INF, "[)"),
          "synthetic_per_class": (-1, INF, "[)"), "backbone_lr_mult": (0, INF, "[)"), "freeze_epochs": (0, INF, "[)"),
          "train_fraction": (0, 1, "(]"), "consistency_weight": (0, INF, "[)"),
          "consistency_threshold": (0, 1, "()"), "consistency_ratio": (0, INF, "()")}

HELP = {
    "exp": "experiment name; outputs go to <runs_dir>/<exp>/fold<k>/",
    "data_dir": "competition folder holding train.csv and train/ (or an ImageFolder train/<class>/)",
    "train_csv": "labels file inside data_dir",
    "image_dir": "image folder inside data_dir",
    "id_col": "train.csv column with the image id or file name",
    "label_col": "train.csv column with the label",
    "folds_csv": "fold file (id,label,fold); empty = the one make_folds.py wrote for this data, "
                 "folds/<data folder name>-<id key>_k*_s*.csv",
    "runs_dir": "where run directories are created",
    "cache_dir": "decoded-image cache folder, shared by every fold, process and script on this data; empty = "
                 "<data folder's parent>/.image_cache (or ~/.cache/imgkit when that is read-only)",
    "model": "timm model name, or ours for 24-64 px images: smallcnn (VGG-style), smallresnet, smallresnet_m, "
             "smallresnet_l (residual, 0.3/0.7/2.8 M parameters)",
    "pretrained": "'timm' = timm's default pretrained weights for --model (e.g. resnet18.a1_in1k), 'hf-hub:org/name' "
                  "= a Hugging Face hub model (its own architecture), both through timm's loader and the HF cache "
                  "(HF_HOME, HF_HUB_OFFLINE); or a local weight file (.pt/.pth/.safetensors, pretrain.py's "
                  "backbone.pt)",
    "backbone_lr_mult": "the backbone's LR as a multiple of --lr (the classifier head always gets --lr); below 1 "
                        "keeps pretrained features from being overwritten early",
    "freeze_epochs": "train only the classifier head for this many epochs first (backbone weights and BatchNorm "
                     "statistics frozen); needs pretrained",
    "image_size_px": "resize images to this square size when decoding (the cache); 0 = the data's size with its "
                     "longer side capped at 128 px, or the pretrained input size with hub weights",
    "input_size_px": "feed the model at this square size, resized on the device (a 64 px cache can train a 224 px "
                     "model); 0 = the cached size, or the pretrained input size with hub weights",
    "normalize": "input mean/std: the training images' own (data), the pretrained weights' (pretrained), or auto "
                 "(pretrained with hub weights, else data)",
    "resize_interp": "interpolation used when resizing (cubic/lanczos for upscaling)",
    "drop_rate": "dropout before the classifier",
    "ema_decay": "keep an exponential moving average of the weights (e.g. 0.99) and validate/save it; 0 = off",
    "augment": "training augmentation: light = random shift ±10 %, scale 0.9–1.1 per axis, rotation ±10° "
               "(batched, on the device); heavy = stronger affine with shear, plus blur/noise and cutout "
               "(albumentations); photo = random-resized crop (25-100 % of the area), horizontal flip, one "
               "TrivialAugment op per image and random erasing (albumentations, for photos); randaugment = two random "
               "TrivialAugment ops and a cutout per image (FixMatch's strong view)",
    "drop_path_rate": "stochastic depth: chance of dropping a residual branch (deepest block; timm models that "
                      "support it and smallresnet*); 0 = off",
    "mixup_alpha": "mixup: blend pairs of training images and their labels with a Beta(alpha, alpha) weight "
                   "(timm's Mixup; 0.2-0.4 typical); 0 = off",
    "cutmix_alpha": "cutmix: paste a Beta(alpha, alpha)-sized box of another image, labels mixed by area (1.0 "
                    "typical); with mixup too, each batch uses one of the two; 0 = off",
    "mixup_off_epoch": "epoch (0-based) from which mixup/cutmix stop, so the last epochs train on clean images; "
                       "0 = never stop",
    "augment_fill": "what the light warp brings in from outside the image: zeros (black) or reflection (its own "
                    "border mirrored; +2.3 pp on trashnet's CV rows but -0.6 pp on its holdout, so not the default)",
    "flips": "random flips added to the pipeline: h (left-right), v, hv, none, or auto = h for colour images and "
             "none for grey ones (mirrors break digits and text)",
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
    "amp": "mixed precision: on CUDA bf16 where supported, else fp16 + GradScaler; on a CPU bf16 autocast. auto = "
           "on with CUDA; on a CPU on only where a short probe measures it faster (src/train/cpu_speed.py); the "
           "choice is recorded in config.json (cpu_speed, runtime)",
    "channels_last": "channels_last (NHWC) memory format; auto = on with CUDA, on a CPU where the probe measures "
                     "it faster",
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
    "train_fraction": "share of each fold's real training rows used: a per-class, seeded subsample (learning "
                      "curves; tune.py's cheap fidelities); validation rows are always all used",
    "pseudo": "pseudo_label.py folder (or one fold's folder) of pseudo-labelled unlabelled/test images; they "
              "join the fold's training split only",
    "consistency_weight": "semi-supervised consistency training (FixMatch): weight of the unlabelled loss; each step "
                          "also takes unlabelled images, predicts a weak view (the light warp) and trains a strong "
                          "view toward its confident predictions; 0 = off",
    "consistency_threshold": "confidence a weak view's prediction needs to become a target for the strong view",
    "consistency_ratio": "unlabelled images per labelled image in each step (FixMatch's mu); an epoch then lasts "
                         "until both the labelled rows and the unlabelled images were each seen once",
    "consistency_augment": "the strong view's augmentation: heavy, photo, or randaugment (two random TrivialAugment "
                           "ops and a cutout, as FixMatch)",
    "unlabeled_dir": "folder of unlabelled images inside data_dir for consistency training",
    "unlabeled_test": "also learn from the test images (test/) without their labels: transductive, recorded in "
                      "config.json; only where the competition's rules allow it",
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
    LOGGING_ONLY: ClassVar[tuple] = ("tensorboard", "cache_dir")  # change what is logged or where, not what is learned
    exp: str = "baseline"
    runs_dir: str = "runs"
    cache_dir: str = ""
    model: str = "smallcnn"
    pretrained: str = ""
    backbone_lr_mult: float = 1.0
    freeze_epochs: int = 0
    image_size_px: int = 0
    input_size_px: int = 0
    normalize: str = "auto"
    resize_interp: str = "cubic"
    drop_rate: float = 0.1
    drop_path_rate: float = 0.0
    ema_decay: float = 0.99
    augment: str = "light"
    augment_fill: str = "zeros"
    flips: str = "none"
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    mixup_off_epoch: int = 0
    epochs: int = 30
    train_fraction: float = 1.0
    batch_size: int = 32
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
    amp: str = "auto"
    channels_last: str = "auto"
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
    consistency_weight: float = 0.0
    consistency_threshold: float = 0.95
    consistency_ratio: float = 1.0
    consistency_augment: str = "randaugment"
    unlabeled_dir: str = "unlabeled"
    unlabeled_test: bool = False

    @classmethod
    def upgrade(cls, values: dict) -> dict:
        """Keys as older versions wrote them: amp and channels_last were booleans (amp meant CUDA only)."""
        legacy = {"amp": {True: "auto", False: "off"}, "channels_last": {True: "auto", False: "off"}}
        values = {k: legacy[k].get(v, v) if k in legacy and isinstance(v, bool) else v for k, v in values.items()}
        return values

    @property
    def mixes(self) -> bool:
        """Whether training mixes images and labels (mixup and/or cutmix)."""
        return bool(self.mixup_alpha or self.cutmix_alpha)

    def validate(self) -> "TrainConfig":
        """Check ranges, choices and combinations (UserError naming the field); clip a warmup as long as the run
        (with a note)."""
        check_fields(self)
        if self.loss2 and not 0 < self.loss_switch_epoch < self.epochs:
            raise UserError(f"config: with loss2 set, loss_switch_epoch must be in 1..{self.epochs - 1} "
                            f"(got {self.loss_switch_epoch})")
        clip_warmup(self)
        if self.pseudo_soft and (not self.pseudo or "focal" in (self.loss, self.loss2)):
            raise UserError("config: pseudo_soft needs pseudo (a pseudo_label.py folder) and loss ce or "
                            "label_smoothing (focal loss takes class indices only)")
        if self.pretrained.startswith("hf-hub:"):  # the hub entry names its own architecture
            if self.model not in ("smallcnn", self.pretrained):
                raise UserError(f"config: pretrained={self.pretrained} brings its own architecture; drop model="
                                f"{self.model} (or set model to the same hf-hub: name)")
            self.model = self.pretrained
        if self.normalize == "pretrained" and not is_hub(self.pretrained):
            raise UserError("config: normalize=pretrained needs hub weights (pretrained=timm or hf-hub:...)")
        if self.freeze_epochs and not self.pretrained:
            raise UserError("config: freeze_epochs needs pretrained (freezing a random backbone teaches nothing)")
        if self.freeze_epochs >= self.epochs:
            raise UserError(f"config: freeze_epochs ({self.freeze_epochs}) must be < epochs ({self.epochs})")
        if self.mixes and "focal" in (self.loss, self.loss2):
            raise UserError("config: mixup/cutmix train on mixed (soft) labels; focal loss takes class indices "
                            "only, so use loss ce or label_smoothing")
        if self.consistency_weight and self.mixes:
            raise UserError("config: consistency training needs mixup_alpha and cutmix_alpha 0 (a mixed image has no "
                            "single class for the unlabelled loss to agree with)")
        if self.unlabeled_test and not self.consistency_weight:
            raise UserError("config: unlabeled_test is set but consistency_weight is 0 (nothing learns from them)")
        if self.mixes and self.pseudo_soft:
            raise UserError("config: mixup/cutmix mix class indices; pseudo_soft targets are already distributions, "
                            "so use one or the other")
        if self.mixup_off_epoch and not self.mixes:
            raise UserError("config: mixup_off_epoch is set but mixup_alpha and cutmix_alpha are 0")
        if self.mixup_off_epoch >= self.epochs:
            raise UserError(f"config: mixup_off_epoch ({self.mixup_off_epoch}) must be below epochs ({self.epochs}), or "
                            f"mixup never stops; lower it (or set 0 to mix to the end)")
        if self.synthetic_only and not self.synthetic:
            raise UserError("config: synthetic_only needs synthetic (a gen_synthetic.py sample folder)")
        if not self.exp or "/" in self.exp or self.exp.startswith("."):
            raise UserError(f"config: exp={self.exp!r} must be a plain folder name")
        return self


