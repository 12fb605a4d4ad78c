"""gen_synthetic.py's typed config: what determines a generator run and its samples."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

from src.core.config import INF, check_fields, clip_warmup
from src.core.errors import UserError
from src.train.config import HELP, DataFields

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
        clip_warmup(self)
        for name in ("exp", "filter_exp"):
            value = getattr(self, name)
            if (name == "exp" or value) and (not value or "/" in value or value.startswith(".")):
                raise UserError(f"config: {name}={value!r} must be a plain folder name")
        return self
