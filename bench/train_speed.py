"""Training and inference throughput of our engine against a minimal hand-written PyTorch loop, and the CPU
precision / memory-format grid that train.py's probe (src/train/cpu_speed.py) chooses from.

Engine vs bare loop: same model (the default config's), same 3,200 demo digits, batch 64 and the same threads for
both arms, measured in one run with the arms interleaved (machines are noisy); the median over rounds is reported,
with the CPU.
Grid: fp32 / bf16 autocast x NCHW / channels_last (NHWC) training steps (forward, loss, backward, AdamW) for
smallcnn, smallresnet and resnet18 on random 64 px RGB batches of 32, interleaved, median over rounds, as a ratio
to fp32 NCHW; and what `amp: auto` / `channels_last: auto` pick on this host (bf16 is offered there only with AMX
or AVX-512 BF16; a choice must beat fp32 NCHW by 10 %).

    python bench/train_speed.py [--rounds 3] [--epochs 2] [--out bench/train_speed.md]
    python bench/train_speed.py --quick   # 256 digits, 1 round of 1 epoch, a 16 px grid: checks the bench runs
"""
import dataclasses
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from src.core.atomic import write_text
from src.core.cli import build_parser, run_main
from src.core.repro import cpu_name
from src.core.tables import markdown_table
from src.data.demo import load_mnist5k
from src.data.images import ImageSpec, channel_stats
from src.train.config import TrainConfig
from src.train.cpu_speed import Candidate, choose, native_bf16, time_steps
from src.train.engine import norm_tensors, predict_probs, setup_runtime
from src.train.fold_trainer import DataInfo, FoldData, FoldTrainer
from src.train.models import build_model

N_TRAIN = 3200
N_TRAIN_QUICK = 256


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bare_train(cfg: TrainConfig, x: torch.Tensor, y: torch.Tensor, epochs: int) -> float:
    """The baseline: tensors already normalised in memory, no augmentation, plain AdamW + cross-entropy."""
    torch.manual_seed(0)
    model = build_model(cfg, 1, 10).to(x.device, memory_format=torch.channels_last).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    seen, start = 0, time.perf_counter()
    for _ in range(epochs):
        perm = torch.randperm(len(x))
        for i in range(0, len(x) - cfg.batch_size + 1, cfg.batch_size):
            idx = perm[i:i + cfg.batch_size]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            seen += len(idx)
    sync(x.device)
    return seen / (time.perf_counter() - start)


def engine_train(cfg: TrainConfig, images: np.ndarray, labels: np.ndarray, epochs: int, tmp: Path) -> float:
    """Our FoldTrainer's training epochs (loader, augmentation, schedule, EMA, loss), validation excluded."""
    mean, std = channel_stats(images)
    data = FoldData(images, labels, images[:64], labels[:64], [str(i) for i in range(64)],
                    [str(i) for i in range(len(labels))], {})
    info = DataInfo([str(c) for c in range(10)], ImageSpec(28, 28, 1), mean, std, {})
    trainer = FoldTrainer(cfg, 0, tmp, data, info, setup_runtime(cfg))
    seconds, seen = 0.0, 0
    for _ in range(epochs):
        row = trainer.run_epoch(quiet=True)
        seconds += row["train_seconds"]
        seen += row["images_per_s"] * row["train_seconds"]
        trainer.epoch += 1
    return seen / seconds


def bare_predict(model: torch.nn.Module, x: torch.Tensor, batch_size: int) -> float:
    start = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            torch.softmax(model(x[i:i + batch_size]), dim=1)
    sync(x.device)
    return len(x) / (time.perf_counter() - start)


def engine_predict(cfg: TrainConfig, model: torch.nn.Module, images: np.ndarray, batch_size: int) -> float:
    rt = setup_runtime(cfg)
    mean, std = channel_stats(images)
    start = time.perf_counter()
    predict_probs(model, images, batch_size, norm_tensors(mean, std, rt), rt)  # returns numpy: synced
    return len(images) / (time.perf_counter() - start)


def main() -> None:
    parser = build_parser(__doc__)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved repetitions (median reported)")
    parser.add_argument("--epochs", type=int, default=2, help="training epochs per measurement")
    parser.add_argument("--quick", action="store_true",
                        help=f"{N_TRAIN_QUICK} digits, 1 round of 1 epoch: checks that the bench runs (no measurement)")
    parser.add_argument("--out", default="bench/train_speed.md", help="Markdown table written here")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="where every arm runs")
    parser.add_argument("--grid-models", default="smallcnn,smallresnet,resnet18",
                        help="models of the precision / memory-format grid (CPU only; empty = no grid)")
    parser.add_argument("--grid-size-px", type=int, default=64, help="the grid's square RGB input")
    parser.add_argument("--grid-steps", type=int, default=5, help="timed training steps per grid cell and round")
    args = parser.parse_args()
    n_train = N_TRAIN_QUICK if args.quick else N_TRAIN
    if args.quick:
        args.rounds, args.epochs = 1, 1
    # The batch of the recorded measurements (docs/results.md); fp32 NHWC, as the bare loop (the grid covers the rest).
    cfg = TrainConfig(device=args.device, batch_size=64, amp="off", channels_last="on")
    rt = setup_runtime(cfg)
    digits, targets = load_mnist5k()
    images, labels = digits[:n_train, :, :, None], targets[:n_train]
    mean, std = channel_stats(images)
    x = ((torch.from_numpy(images).float() / 255 - mean[0]) / std[0]).permute(0, 3, 1, 2).to(rt.device)
    y = torch.from_numpy(labels).to(rt.device)
    with tempfile.TemporaryDirectory(prefix="kit-bench-") as tmp:  # the trainers' run folders, never kept
        results = measure_training(cfg, x, y, images, labels, args.epochs, args.rounds, Path(tmp))
    rows = speed_rows(results, "bare loop (tensors in memory, no augmentation)")
    model = build_model(cfg, 1, 10).to(rt.device, memory_format=torch.channels_last).eval()
    rows += speed_rows(measure_inference(cfg, model, x, images, 3 * args.rounds), "bare inference")
    table = markdown_table(pd.DataFrame(rows), digits=3)
    if args.grid_models and rt.device.type == "cpu":
        size_px, batch, steps = (16, 4, 1) if args.quick else (args.grid_size_px, 32, args.grid_steps)
        grid = precision_grid(args.grid_models.split(","), size_px, batch, steps, args.rounds)
        table += (f"\n\n## CPU precision x memory format\n\nTraining images/s, {size_px} px RGB, batch {batch}, "
                  f"{steps} steps x {args.rounds} interleaved rounds (median); native bf16 on this CPU: "
                  f"{native_bf16()}; `auto` picks the fastest that bf16 support allows, if 10 % faster than fp32 "
                  f"NCHW.\n\n" + markdown_table(grid, digits=2))
    header = (f"# Training and inference speed\n\nMachine: {cpu_name()} ({platform.machine()}), "
              f"{torch.get_num_threads()} torch threads, torch {torch.__version__}, device {rt.device}. "
              f"Model {cfg.model}, batch {cfg.batch_size}, {n_train} MNIST digits (28 px), {args.epochs} epochs x "
              f"{args.rounds} interleaved rounds (inference: {3 * args.rounds} rounds)"
              f"{'; --quick: not a measurement' if args.quick else ''}.\n\n")
    write_text(args.out, header + table + "\n")
    print("\n" + header + table)


def measure_training(cfg: TrainConfig, x: torch.Tensor, y: torch.Tensor, images: np.ndarray, labels: np.ndarray,
                     epochs: int, rounds: int, tmp: Path) -> dict[str, list[float]]:
    """Training images/s of every arm, the arms interleaved within each round."""
    arms = {"bare loop (tensors in memory, no augmentation)": lambda: bare_train(cfg, x, y, epochs),
            "engine, augment none": lambda: engine_train(dataclasses.replace(cfg, augment="none"), images, labels,
                                                         epochs, tmp),
            "engine, augment light (default)": lambda: engine_train(cfg, images, labels, epochs, tmp),
            "engine, augment light, --channels-last off": lambda: engine_train(
                dataclasses.replace(cfg, channels_last="off"), images, labels, epochs, tmp),
            "engine, augment heavy (albumentations per image)": lambda: engine_train(
                dataclasses.replace(cfg, augment="heavy"), images, labels, epochs, tmp)}
    results = {name: [] for name in arms}
    for r in range(rounds):
        for name, arm in arms.items():
            results[name].append(arm())
            print(f"round {r}: {name}: {results[name][-1]:.0f} img/s", flush=True)
    return results


def measure_inference(cfg: TrainConfig, model: torch.nn.Module, x: torch.Tensor, images: np.ndarray,
                      rounds: int) -> dict[str, list[float]]:
    """Inference images/s, bare loop against predict_probs; an inference pass is short, so more rounds."""
    infer = {"bare inference": [], "engine inference (predict_probs)": []}
    bare_predict(model, x, cfg.batch_size * 4)  # warm-up: first calls pay for allocations
    for _ in range(rounds):
        infer["bare inference"].append(bare_predict(model, x, cfg.batch_size * 4))
        infer["engine inference (predict_probs)"].append(engine_predict(cfg, model, images, cfg.batch_size * 4))
    return infer


def precision_grid(models: list[str], size_px: int, batch: int, steps: int, rounds: int) -> pd.DataFrame:
    """Training images/s of every model in fp32 / bf16 x NCHW / NHWC, the cells interleaved within each round."""
    cells = [Candidate(bf16, nhwc) for bf16 in (False, True) for nhwc in (False, True)]
    rows = []
    for name in models:
        torch.manual_seed(0)
        model = build_model(TrainConfig(model=name), 3, 10)
        x, y = torch.randn(batch, 3, size_px, size_px), torch.randint(0, 10, (batch,))
        speeds = {c: [] for c in cells}
        for _ in range(rounds):
            for cell in cells:
                time_steps(model, x, y, cell, 1)  # warm-up: the first step of a format pays for its kernels
                speeds[cell].append(time_steps(model, x, y, cell, steps))
        medians = {c: statistics.median(v) for c, v in speeds.items()}
        allowed = {c: v for c, v in medians.items() if native_bf16() or not c.bf16}
        rows.append({"model": name, **{c.name: round(v, 1) for c, v in medians.items()},
                     **{f"{c.name} ratio": round(v / medians[cells[0]], 2) for c, v in medians.items() if c != cells[0]},
                     "auto picks": choose(allowed).name})
    return pd.DataFrame(rows)


def speed_rows(group: dict[str, list[float]], base: str) -> list[dict]:
    """One table row per arm: median images/s, every round, and the ratio to the baseline arm."""
    base_speed = statistics.median(group[base])
    return [{"arm": name, "images_per_s (median)": round(statistics.median(speeds)),
             "all rounds": " / ".join(f"{s:.0f}" for s in speeds),
             "ratio to bare": round(statistics.median(speeds) / base_speed, 3)} for name, speeds in group.items()]


if __name__ == "__main__":
    run_main(main)
