"""Consistency training on unlabelled images (FixMatch, Sohn et al. 2020), inside train.py's own loop.

Each optimiser step takes a labelled batch and `consistency_ratio` times as many unlabelled images. The model
predicts a weak view of each unlabelled image (flips and a shift, on the device, no gradient); where its
confidence reaches `consistency_threshold`, that class becomes the target of a strong view of the same image
(per-image albumentations: randaugment, heavy or photo), and the cross-entropy over the batch (unconfident images
count as zero) joins the labelled loss with weight `consistency_weight`.

An epoch lasts until both streams were seen: the longer one is one pass in a seeded permutation, the shorter
one cycles through fresh permutations. Both are functions of (seed, fold, epoch), so a resumed run draws exactly
what an uninterrupted one draws.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from src.core.repro import derived_seed
from src.data.augment import augment_batch
from src.train.distributed import SINGLE, Dist, rank_share
from src.train.engine import ArrayBatches


def unlabeled_batch_size(batch_size: int, ratio: float) -> int:
    return max(1, round(batch_size * ratio))


def semi_steps(n_labelled: int, n_unlabeled: int, batch_size: int, ratio: float) -> int:
    """Optimiser steps in one epoch: enough for one pass over each stream (full batches only)."""
    u_batch = unlabeled_batch_size(batch_size, ratio)
    return max(1, n_labelled // batch_size, n_unlabeled // u_batch)


def cycled(n: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` row numbers from successive permutations of range(n)."""
    return np.concatenate([rng.permutation(n) for _ in range(math.ceil(count / n))])[:count]


class SemiSampler(torch.utils.data.Sampler):
    """One epoch of (labelled rows, unlabelled rows) pairs, fully determined by `seed`; under DDP each rank takes
    its share of both parts of every global batch."""

    def __init__(self, n_labelled: int, n_unlabeled: int, batch_size: int, ratio: float, seed: int,
                 info: Dist = SINGLE):
        self.n_labelled, self.n_unlabeled, self.batch_size = n_labelled, n_unlabeled, batch_size
        self.u_batch = unlabeled_batch_size(batch_size, ratio)
        self.steps = semi_steps(n_labelled, n_unlabeled, batch_size, ratio)
        self.seed, self.info = seed, info

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        labelled = cycled(self.n_labelled, self.steps * self.batch_size, np.random.default_rng([self.seed, 0]))
        unlabeled = cycled(self.n_unlabeled, self.steps * self.u_batch, np.random.default_rng([self.seed, 1]))
        for step in range(self.steps):
            rows = labelled[step * self.batch_size:(step + 1) * self.batch_size]
            u_rows = unlabeled[step * self.u_batch:(step + 1) * self.u_batch]
            yield rank_share(rows, self.info), rank_share(u_rows, self.info)


class SemiBatches(torch.utils.data.Dataset):
    """A labelled batch (ArrayBatches) with its unlabelled images: as they are (the weak view is made on the device)
    and strongly augmented, plus their true class where known (-1 otherwise; for logging only)."""

    def __init__(self, labelled: ArrayBatches, unlabeled, truth: np.ndarray, strong):
        self.labelled, self.unlabeled, self.truth, self.strong = labelled, unlabeled, truth, strong

    def __len__(self) -> int:
        return len(self.labelled)

    def __getitem__(self, rows: tuple) -> tuple[torch.Tensor, ...]:
        images, labels = self.labelled[rows[0]]
        u_rows = np.sort(np.asarray(rows[1]))  # read in order; the batch is unordered anyway
        weak = self.unlabeled[u_rows]
        strong = augment_batch(self.strong, weak)
        return images, labels, torch.from_numpy(weak), torch.from_numpy(strong), torch.from_numpy(self.truth[u_rows])

    def reseed(self, seed: int) -> None:
        self.labelled.reseed(seed)
        self.strong.set_random_seed(derived_seed(seed, 1))


class Consistency:
    """The unlabelled loss of each step and the epoch's counts (kept on the device: no host sync per step)."""

    def __init__(self, weight: float, threshold: float, weak_augment, device: torch.device):
        self.weight, self.threshold, self.weak_augment, self.device = weight, threshold, weak_augment, device
        self.start_epoch(None)

    def start_epoch(self, generator: torch.Generator | None) -> None:
        self.generator = generator
        self.counts = torch.zeros(5, device=self.device)  # images, confident, known among them, right, loss sum

    def targets(self, model, weak: torch.Tensor, truth: torch.Tensor, to_input) -> tuple[torch.Tensor, torch.Tensor]:
        """(class, 0/1 mask) per unlabelled image from its weak view: the prediction where confident enough.
        `to_input(uint8 batch, augment)` makes model input."""
        augment = None
        if self.weak_augment is not None:
            augment = lambda x: self.weak_augment(x, generator=self.generator)  # noqa: E731
        with torch.no_grad():
            probs = torch.softmax(model(to_input(weak, augment)).float(), dim=1)
        confidence, target = probs.max(dim=1)
        mask = (confidence >= self.threshold).float()
        truth = truth.to(self.device)
        known = mask * (truth >= 0).float()
        self.counts[:4] += torch.stack([mask.new_tensor(len(mask)), mask.sum(), known.sum(),
                                        (known * (target == truth).float()).sum()])
        return target, mask

    def loss(self, strong_logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The weighted mean over the unlabelled images of the strong view's cross-entropy toward its target (zero
        where the weak view was not confident)."""
        loss = (F.cross_entropy(strong_logits.float(), target, reduction="none") * mask).mean()
        self.counts[4] += loss.detach() * len(mask)
        return self.weight * loss


def epoch_stats(counts) -> dict:
    """From an epoch's Consistency.counts (summed over ranks): the share of confident unlabelled images (mask rate),
    their targets' accuracy where the truth is known (NaN otherwise) and the mean unlabelled loss."""
    images, confident, known, right, loss_sum = (float(c) for c in counts)
    return {"mask_rate": confident / max(images, 1), "pseudo_accuracy": right / known if known else float("nan"),
            "unlabeled_loss": loss_sum / max(images, 1)}
