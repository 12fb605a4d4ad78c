"""Training losses by name, with optional class weights for imbalanced data."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from src.train.config import TrainConfig


class FocalLoss(nn.Module):
    """Focal loss (Lin et al. 2017): cross-entropy scaled by (1 - p_true)^gamma to focus on hard examples."""

    def __init__(self, gamma: float, weight: torch.Tensor | None = None):
        super().__init__()
        self.gamma = gamma
        self.register_buffer("weight", weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(logits.float(), dim=1).gather(1, target[:, None]).squeeze(1)
        loss = -((1 - log_p.exp()) ** self.gamma) * log_p
        if self.weight is None:
            return loss.mean()
        w = self.weight[target]
        return (loss * w).sum() / w.sum()


def balanced_class_weights(labels: np.ndarray, num_classes: int) -> torch.Tensor:
    """n / (k * count_c), as in scikit-learn's 'balanced' weights."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    return torch.tensor(len(labels) / (num_classes * np.maximum(counts, 1)), dtype=torch.float32)


def build_loss(name: str, cfg: TrainConfig, weight: torch.Tensor | None) -> nn.Module:
    if name == "ce":
        return nn.CrossEntropyLoss(weight=weight)
    if name == "label_smoothing":
        return nn.CrossEntropyLoss(weight=weight, label_smoothing=cfg.label_smoothing)
    if name == "focal":
        return FocalLoss(cfg.focal_gamma, weight)
    raise ValueError(f"unknown loss {name!r}")
