"""A plain notebook CNN on the kit's folds: the reference point every kit claim is a ratio against.

What a Kaggler writes in one notebook: every image decoded with OpenCV into one uint8 array in memory, a small
VGG-style CNN (two conv-BN-ReLU per block, 32-64-128 channels, max-pooling, global average pool, dropout,
linear), AdamW + OneCycleLR, cross-entropy, random shift (reflect-pad + random crop) and horizontal flip,
20 epochs of batch 64, the final weights scored on each fold's validation rows (no TTA, no EMA, no
checkpoint picking). It trains on the SAME fold file as train.py, so its OOF rows pair with the kit's row for
row (same ids, same folds) and both can be run side by side on one machine. When the fold file has a holdout
(make_folds.py --holdout) no fold trains on it; the average of the fold models' final predictions is scored there,
as the kit's fold ensemble is by infer.py.

Only the data listing (src.data.contract / src.data.folds / src.data.holdout: same rows, same order, same folds,
same holdout; the sample submission's ids) and the report plumbing (the kit's metric definitions, so numbers compare like for like; tables; atomic writes; one-line
errors) come from the kit. The training below is notebook code and uses torch/torchvision/numpy/cv2 alone.

    python bench/notebook_baseline.py --data-dir data/mnist5k --no-flip --out bench/notebook_mnist5k.md
    python bench/notebook_baseline.py --data-dir data/mnist5k --folds 0 --no-flip     # one fold, printed only
    python bench/notebook_baseline.py --data-dir DIR --quick    # 1 epoch, <=200 training images, 2 folds: runs?

--out report.md also writes report.csv (the same table), report_oof.csv (id, label, fold, pred,
prob_<class>...: the format of the kit's oof.csv), with a holdout report_holdout.csv (the same columns, fold
'holdout': the fold models' mean), and with --test report_test.csv (sample_submission.csv's id column and
prob_<class>...: the fold models' mean on the test images, as the kit's <name>_test_probs.csv).
"""
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cv2
import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.transforms import v2
from tqdm import tqdm

from src.core.atomic import check_writable, write_csv, write_text
from src.core.cli import add_table_flags, build_parser, quiet_default, run_main
from src.core.errors import UserError
from src.core.metrics import accuracy, eer, logloss
from src.core.repro import cpu_name
from src.core.tables import markdown_table
from src.data.contract import read_train_table, resolve_image_path
from src.data.folds import default_folds_path, parse_fold_arg, read_folds
from src.data.holdout import split_holdout
from src.infer.submission import read_sample

QUICK_TRAIN_IMAGES = 200
HOLDOUT_ROW = "holdout (mean of the fold models)"
DEFAULT_SIZE_PX = 64  # when the images do not all share one size


def parse_args():
    parser = build_parser(__doc__)
    parser.add_argument("--data-dir", default="data/mnist5k", help="competition folder (train.csv + train/)")
    add_table_flags(parser)
    parser.add_argument("--folds-csv", default="",
                        help="fold file (default: the one train.py uses, folds/<data folder>-<key>_k*_s*.csv)")
    parser.add_argument("--folds", default="all", help="'all' or a comma list such as 0,1")
    parser.add_argument("--epochs", type=int, default=20, help="training epochs per fold")
    parser.add_argument("--batch-size", type=int, default=64, help="training batch size")
    parser.add_argument("--lr", type=float, default=3e-3, help="OneCycleLR's peak learning rate")
    parser.add_argument("--image-size-px", type=int, default=0,
                        help=f"resize every image to this square size (default: keep the data's size when all "
                             f"images share one, else {DEFAULT_SIZE_PX})")
    parser.add_argument("--no-flip", action="store_true", help="no horizontal flips (digits, text)")
    parser.add_argument("--seed", type=int, default=42, help="seed (fold k trains with seed + k)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="where to train")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    parser.add_argument("--out", default="", help="write the report here (Markdown), plus .csv and _oof.csv "
                        "beside it (default: print only)")
    parser.add_argument("--test", action="store_true",
                        help="also predict the test images (the ids of sample_submission.csv in test/) with the mean "
                             "of the fold models")
    parser.add_argument("--quick", action="store_true",
                        help=f"1 epoch, at most {QUICK_TRAIN_IMAGES} training images per fold, the first 2 folds: "
                             f"checks that it runs (no measurement)")
    parser.add_argument("--quiet", action="store_true", default=quiet_default(), help="no progress bars")
    return parser.parse_args()


def load_split(args):
    """The kit's listing of the labelled images and the fold of each row (the same fold file as train.py): the
    cross-validation rows, with the holdout rows (if any) as `table.holdout`."""
    if not Path(args.data_dir).is_dir():
        raise UserError(f"{args.data_dir}: competition folder not found (it needs {args.train_csv} and "
                        f"{args.image_dir}/)")
    table = read_train_table(args.data_dir, args.train_csv, args.image_dir, args.id_col, args.label_col)
    folds_path = Path(args.folds_csv) if args.folds_csv else default_folds_path("folds", args.data_dir, table)
    if not folds_path.is_file():
        raise UserError(f"{folds_path}: fold file not found; run: python make_folds.py --data-dir {args.data_dir} "
                        f"--out {folds_path}")
    table, fold_of = split_holdout(table, read_folds(folds_path, table, args.id_col, args.label_col))
    return table, fold_of, folds_path


def test_listing(data_dir: Path) -> tuple[pd.Series, list[Path]]:
    """(sample_submission.csv's id column, the image of each id in test/), through the kit's own id lookup."""
    sample = read_sample(data_dir / "sample_submission.csv")
    ids = sample.iloc[:, 0]
    where = f"{data_dir / 'sample_submission.csv'}"
    return ids, [resolve_image_path(i, data_dir / "test", f"{where} line {n + 2}") for n, i in enumerate(ids)]


def read_image(path: Path) -> np.ndarray:
    """(H, W, 1) grey or (H, W, 3) RGB uint8, as cv2 decodes it."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise UserError(f"{path}: OpenCV cannot decode this image")
    if image.dtype == np.uint16:
        image = (image // 257).astype(np.uint8)
    if image.ndim == 2:
        return image[:, :, None]
    return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB if image.shape[2] == 4 else cv2.COLOR_BGR2RGB)


def decode_images(paths: list[Path], image_size_px: int, quiet: bool) -> np.ndarray:
    """Every image into one (N, H, W, C) uint8 array: grey stays grey unless some image has colour."""
    images = [read_image(p) for p in tqdm(paths, desc="decode", disable=quiet)]
    channels = max(im.shape[2] for im in images)
    sizes = {im.shape[:2] for im in images}
    if image_size_px:
        size_hw = (image_size_px, image_size_px)
    else:
        size_hw = sizes.pop() if len(sizes) == 1 else (DEFAULT_SIZE_PX, DEFAULT_SIZE_PX)
    out = np.empty((len(images), *size_hw, channels), np.uint8)
    for i, image in enumerate(images):
        if image.shape[:2] != size_hw:
            image = cv2.resize(image, size_hw[::-1], interpolation=cv2.INTER_AREA).reshape(*size_hw, -1)
        out[i] = image if image.shape[2] == channels else np.repeat(image, channels, axis=2)
    return out


def channel_stats(images: np.ndarray, chunk: int = 1024) -> tuple[list[float], list[float]]:
    """Per-channel mean and std in [0, 1] of the training images (in chunks: no float copy of the whole set)."""
    total, total_sq, n = 0.0, 0.0, 0
    for i in range(0, len(images), chunk):
        x = images[i:i + chunk].astype(np.float64) / 255
        total, total_sq, n = total + x.sum((0, 1, 2)), total_sq + (x ** 2).sum((0, 1, 2)), n + x[..., 0].size
    mean = total / n
    return mean.tolist(), np.sqrt(np.maximum(total_sq / n - mean ** 2, 1e-12)).tolist()


class ImageDataset(torch.utils.data.Dataset):
    def __init__(self, images: np.ndarray, labels: np.ndarray, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.transform(torch.from_numpy(self.images[i]).permute(2, 0, 1)), int(self.labels[i])


def train_transform(size_hw: tuple[int, int], flip: bool, mean: list[float], std: list[float]):
    """Random shift by up to ~10 % of the side (reflect-pad, random crop), optional flip, then normalise."""
    pad = max(1, round(0.1 * max(size_hw)))
    steps = [v2.RandomCrop(size_hw, padding=pad, padding_mode="reflect")]
    steps += [v2.RandomHorizontalFlip()] if flip else []
    return v2.Compose(steps + [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])


def conv_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(),
                         nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(),
                         nn.MaxPool2d(2))


def build_model(in_channels: int, n_classes: int) -> nn.Sequential:
    return nn.Sequential(conv_block(in_channels, 32), conv_block(32, 64), conv_block(64, 128),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.3), nn.Linear(128, n_classes))


def train_fold(model: nn.Module, loader, epochs: int, lr: float, device: torch.device, desc: str,
               quiet: bool) -> tuple[float, int]:
    """AdamW + OneCycleLR + cross-entropy for `epochs`; (training seconds, images seen)."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-2)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, epochs=epochs, steps_per_epoch=len(loader))
    model.train()
    seen, start = 0, time.perf_counter()
    for epoch in range(epochs):
        bar = tqdm(loader, desc=f"{desc} epoch {epoch + 1}/{epochs}", leave=False, disable=quiet)
        for x, y in bar:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            seen += len(y)
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, seen


@torch.inference_mode()
def predict(model: nn.Module, images: np.ndarray, mean: list[float], std: list[float], device: torch.device,
            batch_size: int = 256) -> np.ndarray:
    model.eval()
    mean_t = torch.tensor(mean, device=device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, device=device).view(1, -1, 1, 1)
    probs = []
    for i in range(0, len(images), batch_size):
        x = torch.from_numpy(images[i:i + batch_size]).to(device).permute(0, 3, 1, 2).float() / 255
        probs.append(torch.softmax(model((x - mean_t) / std_t), dim=1).float().cpu().numpy())
    return np.concatenate(probs)


def run_fold(k: int, images: np.ndarray, labels: np.ndarray, fold_of: np.ndarray, n_classes: int, args,
             device: torch.device, held: np.ndarray | None = None, test: np.ndarray | None = None) -> tuple:
    """Train on every row outside fold k, predict fold k (and the holdout images `held`, the test images `test`);
    (table row, validation row indices, their probabilities, the holdout's and the test's probabilities or None)."""
    torch.manual_seed(args.seed + k)
    np.random.seed(args.seed + k)
    train_idx, val_idx = np.flatnonzero(fold_of != k), np.flatnonzero(fold_of == k)
    if args.quick and len(train_idx) > QUICK_TRAIN_IMAGES:
        train_idx = np.sort(np.random.choice(train_idx, QUICK_TRAIN_IMAGES, replace=False))
    mean, std = channel_stats(images[train_idx])
    transform = train_transform(images.shape[1:3], not args.no_flip, mean, std)
    loader = torch.utils.data.DataLoader(
        ImageDataset(images[train_idx], labels[train_idx], transform), batch_size=args.batch_size, shuffle=True,
        num_workers=args.workers, persistent_workers=args.workers > 0, pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(args.seed + k))
    model = build_model(images.shape[3], n_classes).to(device)
    seconds, seen = train_fold(model, loader, args.epochs, args.lr, device, f"fold {k}", args.quiet)
    probs = predict(model, images[val_idx], mean, std, device)
    row = {"fold": str(k), "n_train": len(train_idx), "n_val": len(val_idx),
           **scores(labels[val_idx], probs), "train_s": seconds, "images_per_s": seen / seconds}
    return row, val_idx, probs, *(None if x is None else predict(model, x, mean, std, device) for x in (held, test))


def scores(y: np.ndarray, probs: np.ndarray) -> dict:
    """Accuracy, EER (binary tasks; NaN otherwise, shown blank) and log loss, defined as the kit defines them."""
    return {"accuracy": accuracy(y, probs), "eer": eer(y, probs) if probs.shape[1] == 2 else float("nan"),
            "log_loss": logloss(y, probs)}


def summary_table(rows: list[dict], y: np.ndarray, probs: np.ndarray,
                  holdout: tuple[np.ndarray, np.ndarray] | None = None) -> pd.DataFrame:
    """Per-fold rows, then mean and std (ddof=1) over folds and the pooled OOF rows, as the kit's OOF summary;
    then the holdout's row (the fold models' mean) when there is one."""
    table = pd.DataFrame(rows)
    cols = ["accuracy", "eer", "log_loss", "train_s", "images_per_s"]
    n_val = int(table["n_val"].sum())
    extra = [{"fold": "mean", "n_train": "", "n_val": n_val, **table[cols].mean().to_dict()},
             {"fold": "std", "n_train": "", "n_val": n_val, **table[cols].std(ddof=1).to_dict()},
             {"fold": "all (pooled OOF)", "n_train": "", "n_val": len(y), **scores(y, probs),
              "train_s": table["train_s"].sum(), "images_per_s": float("nan")}]
    if holdout is not None:
        extra.append({"fold": HOLDOUT_ROW, "n_train": "", "n_val": len(holdout[0]), **scores(*holdout),
                      "train_s": float("nan"), "images_per_s": float("nan")})
    return pd.concat([table, pd.DataFrame(extra)], ignore_index=True)


def report(table: pd.DataFrame, args, folds_path: Path, images: np.ndarray, device: torch.device,
           wall_s: float) -> str:
    mean, std = table.set_index("fold").loc[["mean", "std"], "accuracy"]
    pooled = table.set_index("fold").loc["all (pooled OOF)", "accuracy"]
    held = table.set_index("fold")["accuracy"].get(HOLDOUT_ROW)
    held_text = f"Holdout accuracy (mean of the fold models) **{held:.4f}**; " if held is not None else ""
    return (f"# Notebook baseline: {Path(args.data_dir).resolve().name}\n\n"
            f"Small VGG-style CNN, AdamW + OneCycleLR (peak lr {args.lr:g}), cross-entropy, shift"
            f"{'' if args.no_flip else ' + flip'} augmentation, {args.epochs} epochs of batch {args.batch_size}, "
            f"{images.shape[1]}x{images.shape[2]} px x {images.shape[3]} channel(s), seed {args.seed}, "
            f"final weights; folds from `{folds_path}`{'; --quick: not a measurement' if args.quick else ''}.\n\n"
            f"{held_text}Pooled OOF accuracy **{pooled:.4f}**; "
            f"{f'mean ± std over folds {mean:.4f} ± {std:.4f}' if np.isfinite(std) else 'one fold (no std)'}. "
            f"Wall time {wall_s:.0f} s. Machine: {cpu_name()} ({platform.machine()}), "
            f"{torch.get_num_threads()} torch threads, torch {torch.__version__}, device {device}.\n\n"
            f"{markdown_table(readable(table))}\n")


def readable(table: pd.DataFrame) -> pd.DataFrame:
    """Seconds to 0.1 s and speeds to whole images/s in the Markdown table (the CSV keeps every digit)."""
    def fmt(digits):
        return lambda v: "" if pd.isna(v) else f"{v:.{digits}f}"
    return table.assign(train_s=table["train_s"].map(fmt(1)), images_per_s=table["images_per_s"].map(fmt(0)))


def oof_frame(ids: list[str], y: np.ndarray, fold_of: np.ndarray, probs: np.ndarray, classes: list[str]):
    frame = pd.DataFrame({"id": ids, "label": [classes[i] for i in y], "fold": fold_of,
                          "pred": [classes[i] for i in probs.argmax(1)]})
    return pd.concat([frame, pd.DataFrame(probs, columns=[f"prob_{c}" for c in classes])], axis=1)


def main() -> None:
    args = parse_args()
    start = time.perf_counter()
    table, fold_of, folds_path = load_split(args)
    folds = parse_fold_arg(args.folds, int(fold_of.max()) + 1, "--folds")
    if args.quick:
        folds, args.epochs = folds[:2], 1
    out = Path(args.out) if args.out else None
    if out:
        check_writable(out.parent, "the report")
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    torch.use_deterministic_algorithms(True, warn_only=True)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is visible to torch; use --device cpu")
    device = torch.device("cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu")
    held = table.holdout
    test_ids, test_paths = test_listing(Path(args.data_dir)) if args.test else ([], [])
    images = decode_images(table.paths + (held.paths if held else []) + test_paths, args.image_size_px, args.quiet)
    images, extra = images[:len(table.ids)], images[len(table.ids):]  # one size for all: decoded together
    held_images = extra[:len(held.ids)] if held else None
    test_images = extra[len(extra) - len(test_paths):] if test_paths else None
    rows, val_rows, val_probs, held_probs, test_probs = [], [], [], [], []
    for k in folds:
        row, val_idx, probs, on_held, on_test = run_fold(k, images, table.labels, fold_of, len(table.classes), args,
                                                         device, held_images, test_images)
        print(f"fold {k}: accuracy {row['accuracy']:.4f}, log loss {row['log_loss']:.4f}, "
              f"{row['train_s']:.1f} s training, {row['images_per_s']:.0f} img/s", flush=True)
        rows.append(row)
        val_rows.append(val_idx)
        val_probs.append(probs)
        held_probs.append(on_held)
        test_probs.append(on_test)
    val_idx, probs = np.concatenate(val_rows), np.concatenate(val_probs)
    holdout = (held.labels, np.mean(held_probs, axis=0)) if held else None
    summary = summary_table(rows, table.labels[val_idx], probs, holdout)
    text = report(summary, args, folds_path, images, device, time.perf_counter() - start)
    print("\n" + text)
    if out:
        write_text(out.with_suffix(".md"), text)
        write_csv(out.with_suffix(".csv"), summary)
        write_csv(out.with_name(f"{out.stem}_oof.csv"), oof_frame(
            [table.ids[i] for i in val_idx], table.labels[val_idx], fold_of[val_idx], probs, table.classes))
        if held:
            write_csv(out.with_name(f"{out.stem}_holdout.csv"), oof_frame(
                held.ids, held.labels, np.array(["holdout"] * len(held.ids)), holdout[1], table.classes))
        if test_paths:
            write_csv(out.with_name(f"{out.stem}_test.csv"), pd.concat([
                pd.DataFrame({test_ids.name: test_ids}),
                pd.DataFrame(np.mean(test_probs, axis=0), columns=[f"prob_{c}" for c in table.classes])], axis=1))


if __name__ == "__main__":
    run_main(main)
