"""Active-learning simulation on a demo folder with hidden labels: from N labels per class, repeatedly "ask"
for the K most uncertain unlabelled images (answered from the hidden truth) or for K random ones, retrain,
and score on the test set. Shows whether uncertainty sampling is worth it on a kind of data."""
from __future__ import annotations

import contextlib
import dataclasses
import io
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from src.core.errors import UserError
from src.data.contract import read_csv_checked, read_train_table, resolve_image_path
from src.data.images import channel_stats, decode_all, infer_spec, to_array
from src.labels.knn import uncertainty
from src.train.config import TrainConfig
from src.train.engine import predict_probs, setup_runtime
from src.train.fold_trainer import DataInfo, FoldData, FoldTrainer

STRATEGIES = ("uncertainty", "random")


@dataclasses.dataclass
class Pool:
    """The demo's images as arrays: labelled start, unlabelled pool with its hidden labels, and the test set."""

    start_images: np.ndarray
    start_labels: np.ndarray
    pool_images: np.ndarray
    pool_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    classes: list[str]
    spec: object
    fingerprint: dict


def load_pool(data_dir: Path, cfg: TrainConfig, quiet: bool) -> Pool:
    """train.csv (the labelled start), unlabeled/ with unlabeled_solution.csv and test/ with solution.csv."""
    table = read_train_table(data_dir, cfg.train_csv, cfg.image_dir, cfg.id_col, cfg.label_col)
    index = {c: i for i, c in enumerate(table.classes)}
    parts = {}
    for name, folder in (("unlabeled_solution.csv", "unlabeled"), ("solution.csv", "test")):
        truth = read_csv_checked(data_dir / name, ["image", "label"]).astype(str)
        unknown = sorted(set(truth["label"]) - set(index))
        if unknown:
            raise UserError(f"{data_dir / name}: label {unknown[0]!r} is not a class of {table.source}")
        paths = [resolve_image_path(i, data_dir / folder, f"{data_dir / name} line {n + 2}")
                 for n, i in enumerate(truth["image"])]
        parts[folder] = (paths, truth["label"].map(index).to_numpy())
    decoded = decode_all(table.paths + parts["unlabeled"][0] + parts["test"][0], quiet)
    spec = infer_spec(decoded, cfg.image_size_px)
    images = to_array(decoded, spec, cfg.resize_interp)
    n_start, n_pool = len(table.paths), len(parts["unlabeled"][0])
    return Pool(images[:n_start], table.labels, images[n_start:n_start + n_pool], parts["unlabeled"][1],
                images[n_start + n_pool:], parts["test"][1], table.classes, spec, {"active_learning": str(data_dir)})


MONITOR_ROWS = 16  # a few test rows fill the per-epoch log; the score is the whole test set at the end


def train_and_score(cfg: TrainConfig, pool: Pool, chosen: np.ndarray, round_seed: int, train_images: int
                    ) -> tuple[float, np.ndarray]:
    """Train one model on the start labels + the chosen pool rows for about `train_images` image presentations
    (epochs scale with the set, so every round gets the same compute); (test accuracy of the final weights,
    pool probabilities). The test set never picks an epoch."""
    images = np.concatenate([pool.start_images, pool.pool_images[chosen]])
    labels = np.concatenate([pool.start_labels, pool.pool_labels[chosen]])
    mean, std = channel_stats(images)
    epochs = int(np.clip(np.ceil(train_images / len(labels)), 5, 500))
    run_cfg = dataclasses.replace(cfg, seed=round_seed, tensorboard=False, epochs=epochs, patience_epochs=0,
                                  lr_warmup_epochs=min(cfg.lr_warmup_epochs, 0.1 * epochs)).validate()
    data = FoldData(images, labels, pool.test_images[:MONITOR_ROWS], pool.test_labels[:MONITOR_ROWS],
                    [str(i) for i in range(MONITOR_ROWS)], [str(i) for i in range(len(labels))], {})
    rt = setup_runtime(run_cfg)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = FoldTrainer(run_cfg, 0, Path(tmp), data, DataInfo(pool.classes, pool.spec, mean, std,
                                                                    pool.fingerprint), rt)
        with contextlib.redirect_stdout(io.StringIO()):  # one line per round is printed instead
            trainer.fit(quiet=True)
        batch = cfg.batch_size * 4
        test = predict_probs(trainer.eval_model, pool.test_images, batch, trainer.norm, rt)
        probs = predict_probs(trainer.eval_model, pool.pool_images, batch, trainer.norm, rt)
    return float((test.argmax(1) == pool.test_labels).mean()), probs


def simulate(cfg: TrainConfig, pool: Pool, strategy: str, batch: int, rounds: int, rank_by: str, seed: int,
             train_images: int, quiet: bool, start: tuple[float, np.ndarray] | None = None) -> pd.DataFrame:
    """One curve: rows (strategy, round, labels, test accuracy). Round 0 is the labelled start (`start`: its
    result, shared by the strategies); each round asks for `batch` more labels, by uncertainty of the current
    model or at random."""
    rng = np.random.default_rng(seed)
    chosen = np.array([], dtype=np.int64)
    rows = []
    for r in range(rounds + 1):
        accuracy, probs = start if r == 0 and start else train_and_score(cfg, pool, chosen, seed + r, train_images)
        labels = len(pool.start_labels) + len(chosen)
        rows.append({"strategy": strategy, "round": r, "labels": labels, "test_accuracy": accuracy})
        if not quiet:
            print(f"{strategy:>11} round {r}: {labels} labels, test accuracy {accuracy:.4f}", flush=True)
        remaining = np.setdiff1d(np.arange(len(pool.pool_labels)), chosen)
        if r == rounds or not len(remaining):
            break
        if strategy == "random":
            ask = rng.choice(remaining, size=min(batch, len(remaining)), replace=False)
        else:
            votes = np.ones((len(remaining), probs.shape[1]), np.int64)  # no neighbours here: disagreement unused
            scores = uncertainty(probs[remaining], votes)[rank_by].to_numpy()
            order = np.argsort(scores if rank_by == "margin" else -scores, kind="stable")
            ask = remaining[order[:batch]]
        chosen = np.concatenate([chosen, ask])
    return pd.DataFrame(rows)


def labels_to_reach(curve: pd.DataFrame, target: float) -> float:
    """The fewest labels at which the curve reached `target` (NaN when it never did)."""
    hit = curve[curve["test_accuracy"] >= target]
    return float(hit["labels"].min()) if len(hit) else float("nan")


def plot_curves(path: Path, curves: pd.DataFrame, target: float, title: str) -> None:
    import matplotlib.pyplot as plt

    from src.core.atomic import save_figure
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for k, (strategy, part) in enumerate(curves.groupby("strategy", sort=False)):
        mean = part.groupby("labels")["test_accuracy"].agg(["mean", "min", "max"])
        ax.plot(mean.index, mean["mean"], marker="o", ms=3, color=f"C{k}", label=strategy)
        ax.fill_between(mean.index, mean["min"], mean["max"], color=f"C{k}", alpha=0.15)
    ax.axhline(target, color="0.5", lw=1, ls="--", label=f"target {target:.0%}")
    ax.set_xlabel("labelled images")
    ax.set_ylabel("test accuracy")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(path, fig)
    plt.close(fig)


def run_active_learning(data_dir: Path, config_path: str, batch: int, rounds: int, train_images: int, rank_by: str,
                        target: float, seeds: list[int], out: Path, quiet: bool) -> Path:
    """Both strategies for every seed; writes <out>.csv (every round), <out>.png (curves) and <out>.md."""
    from src.core.atomic import write_csv, write_text
    from src.core.config import config_from_dict, load_config_file
    from src.core.tables import markdown_table

    cfg = config_from_dict(load_config_file(config_path) if config_path else {}, TrainConfig,
                           source=config_path or "defaults")
    pool = load_pool(data_dir, cfg, quiet)
    parts = []
    for seed in seeds:
        start = train_and_score(cfg, pool, np.array([], dtype=np.int64), seed, train_images)
        parts += [simulate(cfg, pool, strategy, batch, rounds, rank_by, seed, train_images, quiet, start)
                  .assign(seed=seed) for strategy in STRATEGIES]
    curves = pd.concat(parts, ignore_index=True)
    write_csv(out.with_suffix(".csv"), curves)
    plot_curves(out.with_suffix(".png"), curves, target,
                f"{data_dir.name}: {batch} labels per round, {rank_by} vs random")
    reach = pd.DataFrame([{"strategy": s, "seed": seed,
                           f"labels to reach {target:.0%}": (lambda n: "not reached" if np.isnan(n) else str(int(n)))(
                               labels_to_reach(part, target)),
                           "final labels": int(part["labels"].max()),
                           "final test accuracy": float(part["test_accuracy"].iloc[-1])}
                          for (s, seed), part in curves.groupby(["strategy", "seed"], sort=False)])
    wide = curves.pivot_table(index="labels", columns="strategy", values="test_accuracy", aggfunc="mean")
    lines = [f"# Active learning: {data_dir.name}", "",
             f"Start: {len(pool.start_labels)} labels; pool: {len(pool.pool_labels)} unlabelled images with hidden "
             f"labels; each round asks for {batch} (most uncertain by {rank_by}, or random), retrains with "
             f"~{train_images} image presentations (config {config_path or 'defaults'}) and scores the "
             f"{len(pool.test_labels)} test images. Seeds {seeds}.", "",
             markdown_table(reach), "", "Test accuracy by number of labels (mean over seeds):", "",
             markdown_table(wide.reset_index()), "", f"![curves]({out.with_suffix('.png').name})", ""]
    write_text(out.with_suffix(".md"), "\n".join(lines))
    return out.with_suffix(".md")
