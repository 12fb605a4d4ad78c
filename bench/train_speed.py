"""Training and inference throughput of our engine against a minimal hand-written PyTorch loop.

Same model (the default config's), same 3,200 demo digits, batch 64 and the same threads for both arms, measured in
one run with the arms interleaved (machines are noisy); the median over rounds is reported, with the CPU.

    python bench/train_speed.py [--rounds 3] [--epochs 2] [--out bench/train_speed.md]
    python bench/train_speed.py --quick   # 256 digits, 1 round of 1 epoch: checks the bench runs (tests do this)
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
    args = parser.parse_args()
    n_train = N_TRAIN_QUICK if args.quick else N_TRAIN
    if args.quick:
        args.rounds, args.epochs = 1, 1
    cfg = TrainConfig(device=args.device, batch_size=64)  # the batch of the recorded measurements (docs/results.md)
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
            "engine, augment light, --no-channels-last": lambda: engine_train(
                dataclasses.replace(cfg, channels_last=False), images, labels, epochs, tmp),
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


def speed_rows(group: dict[str, list[float]], base: str) -> list[dict]:
    """One table row per arm: median images/s, every round, and the ratio to the baseline arm."""
    base_speed = statistics.median(group[base])
    return [{"arm": name, "images_per_s (median)": round(statistics.median(speeds)),
             "all rounds": " / ".join(f"{s:.0f}" for s in speeds),
             "ratio to bare": round(statistics.median(speeds) / base_speed, 3)} for name, speeds in group.items()]


if __name__ == "__main__":
    run_main(main)
