"""Consistency training on unlabelled images (FixMatch, Sohn et al. 2020), inside train.py's own loop.

Each optimiser step takes a labelled batch and `consistency_ratio` times as many unlabelled images, each in two
views: weak (the `light` warp on the device: shift, scale, rotation, flips as trained) and strong (per-image
albumentations: randaugment, heavy or photo). All three go through the model in one forward pass, so BatchNorm
sees them together as in FixMatch. Where the weak view's prediction reaches `consistency_threshold`, its class
becomes the target of the strong view; the cross-entropy over the unlabelled images (unconfident ones count as
zero) joins the labelled loss with weight `consistency_weight`.

An epoch lasts until both streams were seen: the longer one is one pass in a seeded permutation, the shorter
one cycles through fresh permutations. Both are functions of (seed, fold, epoch), so a resumed run draws exactly
what an uninterrupted one draws.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F

from src.core.errors import UserError
from src.core.repro import derived_seed
from src.data.augment import augment_batch
from src.train.config import TrainConfig
from src.train.distributed import SINGLE, Dist, rank_share
from src.train.engine import ArrayBatches

MIN_PER_RANK = 2  # BatchNorm cannot normalise a batch of one 1x1 feature map


def unlabeled_batch_size(batch_size: int, ratio: float) -> int:
    return max(1, round(batch_size * ratio))


def check_unlabeled_batch(batch_size: int, ratio: float, info: Dist) -> None:
    """The unlabelled part of each step must split evenly over the processes (or images would weigh differently
    than in one process), with at least MIN_PER_RANK images each."""
    unlabeled_batch = unlabeled_batch_size(batch_size, ratio)
    if unlabeled_batch % info.world_size or unlabeled_batch < MIN_PER_RANK * info.world_size:
        raise UserError(f"--consistency-ratio {ratio:g} x --batch-size {batch_size} gives {unlabeled_batch} unlabelled "
                        f"images per step; it needs a multiple of {info.world_size} process(es), at least "
                        f"{MIN_PER_RANK * info.world_size}")


def semi_steps(n_labelled: int, n_unlabeled: int, batch_size: int, ratio: float) -> int:
    """Optimiser steps in one epoch: enough for one pass over each stream (full batches only)."""
    return max(1, n_labelled // batch_size, n_unlabeled // unlabeled_batch_size(batch_size, ratio))


def cycled(n: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` row numbers from successive permutations of range(n)."""
    return np.concatenate([rng.permutation(n) for _ in range(math.ceil(count / n))])[:count]


class SemiSampler(torch.utils.data.Sampler):
    """One epoch of (labelled rows, unlabelled rows) pairs, fully determined by `seed`; under DDP each rank takes
    its share of both parts of every global batch."""

    def __init__(self, n_labelled: int, n_unlabeled: int, batch_size: int, ratio: float, seed: int,
                 info: Dist = SINGLE):
        self.n_labelled, self.n_unlabeled, self.batch_size = n_labelled, n_unlabeled, batch_size
        self.unlabeled_batch = unlabeled_batch_size(batch_size, ratio)
        self.steps = semi_steps(n_labelled, n_unlabeled, batch_size, ratio)
        self.seed, self.info = seed, info

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        size, unlabeled_size = self.batch_size, self.unlabeled_batch
        labelled = cycled(self.n_labelled, self.steps * size, np.random.default_rng([self.seed, 0]))
        unlabeled = cycled(self.n_unlabeled, self.steps * unlabeled_size, np.random.default_rng([self.seed, 1]))
        for step in range(self.steps):
            rows = labelled[step * size:(step + 1) * size]
            unlabeled_rows = unlabeled[step * unlabeled_size:(step + 1) * unlabeled_size]
            yield rank_share(rows, self.info), rank_share(unlabeled_rows, self.info)


class SemiBatches(torch.utils.data.Dataset):
    """A labelled batch (ArrayBatches) with its unlabelled images: as they are (the weak view is made on the device)
    and strongly augmented, plus their true class where known (-1 otherwise; for logging only)."""

    def __init__(self, labelled: ArrayBatches, unlabeled, truth: np.ndarray, strong):
        self.labelled, self.unlabeled, self.truth, self.strong = labelled, unlabeled, truth, strong

    def __getitem__(self, rows: tuple) -> tuple[torch.Tensor, ...]:
        images, labels = self.labelled[rows[0]]
        unlabeled_rows = np.sort(np.asarray(rows[1]))  # read in order; the batch is unordered anyway
        weak = self.unlabeled[unlabeled_rows]
        strong = augment_batch(self.strong, weak)
        return (images, labels, torch.from_numpy(weak), torch.from_numpy(strong),
                torch.from_numpy(self.truth[unlabeled_rows]))

    def reseed(self, seed: int) -> None:
        self.labelled.reseed(seed)
        self.strong.set_random_seed(derived_seed(seed, 1))


class Consistency:
    """The unlabelled part of each step's loss, and the epoch's counts (on the device: no host sync per step)."""

    def __init__(self, weight: float, threshold: float, weak_augment, device: torch.device):
        self.weight, self.threshold, self.weak_augment, self.device = weight, threshold, weak_augment, device
        self.start_epoch(None)

    def start_epoch(self, generator: torch.Generator | None) -> None:
        self.generator = generator
        self.counts = torch.zeros(4, device=self.device)  # confident, known among them, right, loss sum
        self.images = 0

    def weak_view(self):
        """The on-device augmentation of the weak view (a function of the float NCHW batch), or None."""
        return None if self.weak_augment is None else functools.partial(self.weak_augment, generator=self.generator)

    def loss(self, weak_logits: torch.Tensor, strong_logits: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
        """The weighted mean over the unlabelled images of the strong view's cross-entropy toward the weak view's
        class where the weak view is confident enough (zero elsewhere)."""
        probs = torch.softmax(weak_logits.detach().float(), dim=1)
        confidence, target = probs.max(dim=1)
        mask = (confidence >= self.threshold).float()
        loss = (F.cross_entropy(strong_logits.float(), target, reduction="none") * mask).mean()
        known = mask * (truth >= 0).float()
        self.counts += torch.stack([mask.sum(), known.sum(), (known * (target == truth).float()).sum(),
                                    loss.detach() * len(mask)])
        self.images += len(mask)
        return self.weight * loss


def epoch_stats(images: int, counts) -> dict:
    """From an epoch's unlabelled image count and Consistency.counts (both summed over ranks): the share of
    confident images (mask rate), their targets' accuracy where the truth is known (NaN otherwise) and the mean
    unlabelled loss."""
    confident, known, right, loss_sum = (float(c) for c in counts)
    return {"mask_rate": confident / max(images, 1), "pseudo_accuracy": right / known if known else float("nan"),
            "unlabeled_loss": loss_sum / max(images, 1)}


def threshold_note(cfg: TrainConfig, n_classes: int) -> str:
    """A note when label smoothing trains confidences toward 1 - e + e/K, below the threshold ('' otherwise)."""
    ceiling = 1 - cfg.label_smoothing + cfg.label_smoothing / n_classes
    if "label_smoothing" not in (cfg.loss, cfg.loss2) or cfg.consistency_threshold < ceiling:
        return ""
    return (f"note: consistency_threshold {cfg.consistency_threshold:g} is above the {ceiling:.3f} a label_smoothing "
            f"{cfg.label_smoothing:g} loss trains confidences toward, so few unlabelled images will pass it; use "
            f"--loss ce or a lower threshold")
