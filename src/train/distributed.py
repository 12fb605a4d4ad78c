"""Data-parallel training under torchrun: the process group, each rank's share of a batch or of the
validation rows, and the collectives that keep every rank's decisions identical.

Without torchrun (WORLD_SIZE unset or 1) every function here is a cheap no-op, so the single-process
path runs exactly the code it ran before DDP existed.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from src.core.errors import UserError


@dataclass(frozen=True)
class Dist:
    """This process's place in the job; world_size 1 = plain single-process training."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = Dist()


def dist_from_env(environ=os.environ) -> Dist:
    """The rank layout torchrun (or srun with the same variables) puts in the environment."""
    try:
        world = int(environ.get("WORLD_SIZE", "1"))
        return Dist(int(environ.get("RANK", "0")), world, int(environ.get("LOCAL_RANK", "0")),
                    int(environ.get("LOCAL_WORLD_SIZE", str(world))))
    except ValueError:
        raise UserError("WORLD_SIZE / RANK / LOCAL_RANK must be integers; start with torchrun") from None


def init_distributed(use_cuda: bool) -> Dist:
    """Join the process group: nccl on GPUs (one per local rank), gloo on CPU. Idempotent."""
    info = dist_from_env()
    if not info.enabled or dist.is_initialized():
        return info
    if use_cuda:
        if info.local_rank >= torch.cuda.device_count():
            raise UserError(f"local rank {info.local_rank} has no GPU ({torch.cuda.device_count()} visible); "
                            f"use --nproc-per-node {torch.cuda.device_count()} or fewer")
        torch.cuda.set_device(info.local_rank)
    dist.init_process_group("nccl" if use_cuda else "gloo")
    return info


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: Dist) -> None:
    if info.enabled:
        dist.barrier()


def check_shares(n_train: int, n_val: int, batch_size: int, info: Dist, where: str) -> None:
    """--batch-size is the global batch (so the LR schedule matches one process): it must split evenly, and
    every step must be a full batch (a lone ragged batch would split unevenly and weight ranks wrongly)."""
    if not info.enabled:
        return
    if batch_size % info.world_size:
        raise UserError(f"--batch-size {batch_size} does not split over {info.world_size} processes; "
                        f"use a multiple of {info.world_size}")
    if n_train <= batch_size:
        raise UserError(f"{where}: {n_train} training rows fit in one batch of {batch_size}; DDP needs full "
                        f"batches: lower --batch-size or train with one process")
    if n_val < info.world_size:
        raise UserError(f"{where}: {n_val} validation rows for {info.world_size} processes; use fewer processes")


def rank_share(rows, info: Dist):
    """This rank's contiguous part of `rows` (parts differ in length by at most one)."""
    if not info.enabled:
        return rows
    bounds = np.linspace(0, len(rows), info.world_size + 1).round().astype(int)
    return rows[bounds[info.rank]:bounds[info.rank + 1]]


class ShardedBatches(torch.utils.data.Sampler):
    """Each rank's share of the batches one process would draw (same permutation, same batch edges, per-epoch
    seed), so N processes take the same optimiser steps over the same global batches as one process."""

    def __init__(self, batches: torch.utils.data.BatchSampler, info: Dist):
        self.batches, self.info = batches, info

    def __iter__(self):
        for batch in self.batches:
            yield rank_share(batch, self.info)

    def __len__(self) -> int:
        return len(self.batches)


def all_gather_rows(local: np.ndarray, info: Dist) -> np.ndarray:
    """Concatenate every rank's rows in rank order (the inverse of rank_share)."""
    if not info.enabled:
        return local
    parts = [None] * info.world_size
    dist.all_gather_object(parts, local)
    return np.concatenate(parts)


def gather_objects(value, info: Dist) -> list:
    """Every rank's `value`, in rank order, on every rank."""
    if not info.enabled:
        return [value]
    parts = [None] * info.world_size
    dist.all_gather_object(parts, value)
    return parts


def broadcast_object(value, info: Dist):
    """Rank 0's `value` on every rank: one decision (early stop, best epoch) for the whole job."""
    if not info.enabled:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


@torch.no_grad()
def broadcast_module(module: torch.nn.Module, info: Dist) -> None:
    """Copy rank 0's parameters and buffers (e.g. BatchNorm running stats, which each rank updates from its
    own half-batches) to every rank, so all ranks validate and save one model."""
    if not info.enabled:
        return
    for tensor in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(tensor.data, src=0)


def wrap_model(model: torch.nn.Module, info: Dist, device: torch.device) -> torch.nn.Module:
    """DistributedDataParallel around `model` under torchrun, else `model`; the unwrapped model keeps the
    weights that are saved."""
    if not info.enabled:
        return model
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
