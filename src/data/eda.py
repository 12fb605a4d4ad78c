"""Know the data before training: class balance, image statistics of train vs test (with a drift warning),
a sample grid per class, exact and near-duplicate images within train and across train/test, and the files
that cannot be read."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from tqdm import tqdm

from src.core.atomic import save_figure, write_csv, write_text
from src.core.errors import UserError
from src.core.tables import markdown_table
from src.data.contact_sheet import contact_sheet
from src.data.contract import LabelTable
from src.data.images import IMAGE_EXTS, decode_image, pixel_hash

STAT_COLUMNS = ("height_px", "width_px", "channels", "mean", "std", "file_kb")
# A standardised mean difference above this between train and test is worth a look (Cohen's "small" effect
# is 0.2; image statistics of one competition's splits usually differ far less).
DRIFT_SMD = 0.25


THUMB_PX = 32


def thumbnail(image: np.ndarray) -> np.ndarray:
    """Gray 32x32, mean removed, unit length (float16): the dot product of two is their similarity."""
    gray = image[..., 0] if image.shape[2] == 1 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    x = cv2.resize(gray, (THUMB_PX, THUMB_PX), interpolation=cv2.INTER_AREA).astype(np.float32).ravel()
    x -= x.mean()
    return (x / max(float(np.linalg.norm(x)), 1e-6)).astype(np.float16)


def dhash(image: np.ndarray) -> int:
    """64-bit difference hash: brightness gradients of a 9x8 thumbnail, robust to resizing and small edits."""
    gray = image[..., 0] if image.shape[2] == 1 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    small = cv2.resize(gray, (9, 8), interpolation=cv2.INTER_AREA).astype(np.int16)
    bits = (small[:, 1:] > small[:, :-1]).flatten()
    return int(np.packbits(bits).view(">u8")[0])


@dataclass
class Scan:
    """One row per file (split, id, label, stats, hashes; error for unreadable ones) and the thumbnails
    of the readable ones, by row number."""

    table: pd.DataFrame
    thumbs: dict[int, np.ndarray]
    hashes: dict[int, int]  # kept apart from the table: a NaN row would turn the column into float64

    def image(self, row: int) -> np.ndarray:
        """Decoded again when shown: only a few dozen are, so the scan keeps no pixels in memory."""
        return decode_image(Path(self.table.at[row, "path"]))


COLUMNS = ["split", "id", "label", "path", "error", *STAT_COLUMNS, "pixels"]


def scan_files(split: str, ids: list[str], paths: list[Path], labels: list[str], quiet: bool) -> Scan:
    """Decode every file once; an unreadable file becomes a row with its error instead of stopping the scan."""
    rows, thumbs, hashes = [], {}, {}
    for i, (image_id, path, label) in enumerate(tqdm(list(zip(ids, paths, labels)), desc=f"scan {split}",
                                                     unit="img", disable=quiet, leave=False)):
        row = {"split": split, "id": image_id, "label": label, "path": str(path), "error": ""}
        try:
            image = decode_image(path)
        except UserError as err:
            rows.append({**row, "error": str(err)})
            continue
        thumbs[i] = thumbnail(image)
        hashes[i] = dhash(image)
        rows.append({**row, "height_px": image.shape[0], "width_px": image.shape[1], "channels": image.shape[2],
                     "mean": float(image.mean()), "std": float(image.std()),
                     "file_kb": path.stat().st_size / 1024, "pixels": pixel_hash(image)})
    return Scan(pd.DataFrame(rows, columns=COLUMNS), thumbs, hashes)


def test_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTS and not p.name.startswith("."))


def class_balance(labels: pd.Series, classes: list[str]) -> pd.DataFrame:
    counts = labels.value_counts().reindex(classes, fill_value=0)
    return pd.DataFrame({"class": classes, "images": counts.to_numpy(),
                         "share": counts.to_numpy() / max(len(labels), 1)})


def drift_table(train: pd.DataFrame, test: pd.DataFrame) -> pd.DataFrame:
    """Per statistic: train and test mean ± std and the standardised mean difference; flags drift."""
    rows = []
    for column in STAT_COLUMNS:
        a, b = train[column].dropna().astype(float), test[column].dropna().astype(float)
        pooled = np.sqrt((a.var(ddof=0) + b.var(ddof=0)) / 2)
        smd = abs(a.mean() - b.mean()) / pooled if pooled > 0 else (0.0 if a.mean() == b.mean() else np.inf)
        rows.append({"statistic": column, "train": f"{a.mean():.2f} ± {a.std(ddof=0):.2f}",
                     "test": f"{b.mean():.2f} ± {b.std(ddof=0):.2f}", "std. mean difference": smd,
                     "drift": "WARNING" if smd > DRIFT_SMD else ""})
    return pd.DataFrame(rows)


def hamming_pairs(a: np.ndarray, b: np.ndarray, max_bits: int, same: bool, chunk: int = 512) -> np.ndarray:
    """(i, j, bits) for every pair of 64-bit hashes within `max_bits` of each other; within one set
    (`same`) each unordered pair once."""
    out = []
    for start in range(0, len(a), chunk):
        block = a[start:start + chunk, None] ^ b[None, :]
        bits = np.bitwise_count(block)
        i, j = np.nonzero(bits <= max_bits)
        i = i + start
        keep = j > i if same else np.ones(len(i), bool)
        out.append(np.stack([i[keep], j[keep], bits[i[keep] - start, j[keep]]], axis=1))
    return np.concatenate(out) if out else np.zeros((0, 3), np.int64)


def duplicate_pairs(train: Scan, test: Scan, hash_bits: int, min_similarity: float) -> pd.DataFrame:
    """Exact (same decoded pixels) and near-duplicate pairs within train and across train/test, with whether
    the two train labels disagree. Candidates are pairs whose difference hashes are at most `hash_bits`
    apart (exact copies have equal hashes); a candidate is a near duplicate when the similarity of the two
    32x32 thumbnails (cosine, mean removed) is at least `min_similarity`."""
    parts = []
    tr = train.table[train.table["error"] == ""]
    te = test.table[test.table["error"] == ""] if len(test.table) else test.table
    for where, a, b, sb, same in (("train-train", tr, tr, train, True), ("train-test", tr, te, test, False)):
        if not len(a) or not len(b):
            continue
        ha = np.array([train.hashes[x] for x in a.index], dtype=np.uint64)
        hb = ha if same else np.array([sb.hashes[y] for y in b.index], dtype=np.uint64)
        i, j, bits = hamming_pairs(ha, hb, hash_bits, same).T
        ra, rb = a.index.to_numpy()[i], b.index.to_numpy()[j]
        ta = np.stack([train.thumbs[x] for x in a.index]).astype(np.float32)
        tb = ta if same else np.stack([sb.thumbs[y] for y in b.index]).astype(np.float32)
        similarity = np.concatenate([np.einsum("nd,nd->n", ta[i[k:k + 20000]], tb[j[k:k + 20000]])
                                     for k in range(0, len(i), 20000)] or [np.zeros(0, np.float32)])
        exact = a["pixels"].to_numpy()[i] == b["pixels"].to_numpy()[j]
        keep = exact | (similarity >= min_similarity)
        label_b = b["label"].to_numpy()[j] if same else np.full(len(j), "", object)
        parts.append(pd.DataFrame({
            "where": where, "kind": np.where(exact, "exact", "near"), "id_a": a["id"].to_numpy()[i],
            "id_b": b["id"].to_numpy()[j], "similarity": similarity.round(4), "hash_bits_apart": bits,
            "label_a": a["label"].to_numpy()[i], "label_b": label_b,
            "labels_disagree": (a["label"].to_numpy()[i] != label_b) if same else np.zeros(len(j), bool),
            "row_a": ra, "row_b": rb})[keep])
    columns = ["where", "kind", "id_a", "id_b", "similarity", "hash_bits_apart", "label_a", "label_b",
               "labels_disagree", "row_a", "row_b"]
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)
    return frame.sort_values(["kind", "similarity", "where"], ascending=[True, False, True],
                             kind="stable").reset_index(drop=True)


def plot_balance(path: Path, balance: pd.DataFrame) -> None:
    fig, ax = plt.subplots(figsize=(min(2 + 0.4 * len(balance), 16), 3.5))
    ax.bar(balance["class"].astype(str), balance["images"], color="C0")
    ax.set_ylabel("training images")
    ratio = balance["images"].max() / max(balance["images"].min(), 1)
    ax.set_title(f"class balance (largest / smallest = {ratio:.2f})", fontsize=10)
    ax.tick_params(axis="x", labelrotation=90 if len(balance) > 12 else 0)
    fig.tight_layout()
    save_figure(path, fig)
    plt.close(fig)


def plot_stats(path: Path, train: pd.DataFrame, test: pd.DataFrame) -> None:
    """Histograms of mean and std intensity, and image sizes, for train and test."""
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    for ax, column in zip(axes[:2], ("mean", "std")):
        for frame, name, colour in ((train, "train", "C0"), (test, "test", "C1")):
            values = frame[column].dropna()
            if len(values):
                ax.hist(values, bins=40, alpha=0.5, density=True, color=colour, label=f"{name} ({len(values)})")
        ax.set_xlabel(f"per-image pixel {column} (0-255)")
        ax.legend(fontsize=8)
    for frame, name, colour in ((train, "train", "C0"), (test, "test", "C1")):
        axes[2].scatter(frame["width_px"], frame["height_px"], s=8, alpha=0.4, color=colour, label=name)
    axes[2].set_xlabel("width px")
    axes[2].set_ylabel("height px")
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    save_figure(path, fig)
    plt.close(fig)


MAX_GRID_CLASSES = 60  # a taller figure exceeds what matplotlib can save


def sample_grid(path: Path, scan: Scan, classes: list[str], per_class: int, seed: int) -> None:
    """`per_class` random readable images of each class, one row per class (the first 60 classes)."""
    rng = np.random.default_rng(seed)
    images, captions = [], []
    readable = scan.table[scan.table["error"] == ""]
    for name in classes[:MAX_GRID_CLASSES]:
        rows = readable.index[readable["label"] == name].to_numpy()
        chosen = rng.permutation(rows)[:per_class]
        thumbs = [scan.image(r) for r in chosen]
        thumbs += [None] * (per_class - len(thumbs))
        images += thumbs
        captions += [f"{name}" if t is not None else "" for t in thumbs]
    shown = "" if len(classes) <= MAX_GRID_CLASSES else f" (first {MAX_GRID_CLASSES} of {len(classes)} classes)"
    contact_sheet(path, images, captions, f"random training images, one row per class{shown}", columns=per_class)


def duplicates_sheet(path: Path, pairs: pd.DataFrame, train: Scan, test: Scan, top_n: int = 16) -> None:
    """The most important pairs side by side: train pairs with different labels first, then train/test copies."""
    order = pairs.assign(priority=np.select([pairs["labels_disagree"], pairs["where"] == "train-test"], [0, 1], 2))
    order = order.sort_values(["priority", "similarity"], ascending=[True, False], kind="stable").head(top_n)
    images, captions = [], []
    for r in order.itertuples():
        other = train if r.where == "train-train" else test
        images += [train.image(r.row_a), other.image(r.row_b)]
        captions += [f"{r.id_a} [{r.label_a}]", f"{r.id_b}" + (f" [{r.label_b}]" if r.label_b else " (test)")
                     + f"\n{r.kind}, similarity {r.similarity:.3f}"]
    contact_sheet(path, images, captions, "duplicate pairs (left | right), label conflicts first", columns=8)


def size_table(train: pd.DataFrame, test: pd.DataFrame, top: int = 5) -> pd.DataFrame:
    """The most common (height x width x channels) shapes per split."""
    rows = []
    for name, frame in (("train", train), ("test", test)):
        ok = frame[frame["error"] == ""]
        shapes = (ok["height_px"].astype(int).astype(str) + "x" + ok["width_px"].astype(int).astype(str) + "x"
                  + ok["channels"].astype(int).astype(str)).value_counts()
        for shape, count in shapes.head(top).items():
            rows.append({"split": name, "shape (HxWxC)": shape, "images": int(count),
                         "share": count / max(len(ok), 1)})
        if len(shapes) > top:
            rows.append({"split": name, "shape (HxWxC)": f"({len(shapes) - top} other shapes)",
                         "images": int(shapes.iloc[top:].sum()), "share": shapes.iloc[top:].sum() / len(ok)})
    return pd.DataFrame(rows)


def run_eda(table: LabelTable, test_dir: Path, name: str, out_dir: Path, hash_bits: int, min_similarity: float,
            per_class: int, seed: int, quiet: bool) -> Path:
    """Scan train (and test when there is one) and write reports/eda_<name>.md plus its PNGs and CSVs."""
    train = scan_files("train", table.ids, table.paths, [table.classes[k] for k in table.labels], quiet)
    paths = test_files(test_dir)
    test = scan_files("test", [str(p.relative_to(test_dir)) for p in paths], paths, [""] * len(paths), quiet)
    folder = out_dir / f"eda_{name}"
    balance = class_balance(train.table["label"], table.classes)
    plot_balance(folder / "class_balance.png", balance)
    plot_stats(folder / "image_stats.png", train.table, test.table)
    sample_grid(folder / "samples.png", train, table.classes, per_class, seed)
    pairs = duplicate_pairs(train, test, hash_bits, min_similarity)
    write_csv(folder / "duplicates.csv", pairs.drop(columns=["row_a", "row_b"]))
    if len(pairs):
        duplicates_sheet(folder / "duplicates.png", pairs, train, test)
    else:
        (folder / "duplicates.png").unlink(missing_ok=True)  # from an earlier run
    files = pd.concat([train.table, test.table], ignore_index=True).drop(columns=["pixels"])
    write_csv(folder / "files.csv", files)
    readable = [(t["error"] == "").any() for t in (train.table, test.table)]
    drift = drift_table(train.table, test.table) if all(readable) else pd.DataFrame()
    path = out_dir / f"eda_{name}.md"
    write_text(path, eda_markdown(name, table, train.table, test.table, balance, drift, pairs, min_similarity, folder))
    return path


def eda_markdown(name: str, table: LabelTable, train: pd.DataFrame, test: pd.DataFrame, balance: pd.DataFrame,
                 drift: pd.DataFrame, pairs: pd.DataFrame, min_similarity: float, folder: Path) -> str:
    bad = pd.concat([train, test])
    bad = bad[bad["error"] != ""]
    ratio = balance["images"].max() / max(balance["images"].min(), 1)
    rel = folder.name
    lines = [f"# EDA: {name}", "",
             f"Train: {len(train)} images in {len(table.classes)} classes from {table.source}; test: {len(test)} "
             f"images; unreadable: {len(bad)}.", "",
             "## Class balance", "",
             f"Largest / smallest class: {ratio:.2f}" + (" (imbalanced: consider --class-weights balanced and a "
                                                           "macro metric)" if ratio > 3 else "") + ".", "",
             markdown_table(balance), "", f"![class balance]({rel}/class_balance.png)", "",
             "## Image statistics, train vs test", "", markdown_table(size_table(train, test)), ""]
    if len(drift):
        warned = drift[drift["drift"] != ""]["statistic"].tolist()
        lines += [markdown_table(drift), "",
                  (f"**Drift warning:** {', '.join(warned)} differ between train and test by more than "
                   f"{DRIFT_SMD} pooled standard deviations; check preprocessing, sources or resolution before "
                   "trusting the validation score." if warned else
                   f"No drift: every statistic is within {DRIFT_SMD} pooled standard deviations."), ""]
    else:
        lines += ["No readable test images (or no train images), so no drift check.", ""]
    lines += [f"![image statistics]({rel}/image_stats.png)", "", "## Samples per class", "",
              f"![samples]({rel}/samples.png)", "", "## Duplicates", ""]
    counts = pairs.groupby(["where", "kind"]).size() if len(pairs) else pd.Series(dtype=int)
    conflicts = pairs[pairs["labels_disagree"]] if len(pairs) else pairs
    summary = [f"{where} {kind}: {n} pairs" for (where, kind), n in counts.items()] or ["none found"]
    lines += [f"Exact = same decoded pixels; near = 32x32 thumbnails with similarity (cosine) at least "
              f"{min_similarity}. "
              + "; ".join(summary) + ".", ""]
    if len(conflicts):
        lines += [f"**{len(conflicts)} train pairs are (near) copies with different labels** — label errors or "
                  "ambiguous images; see duplicates.csv.", ""]
    if len(pairs) and (pairs["where"] == "train-test").any():
        lines += ["Train/test copies: those test labels are effectively known from train, and the leaderboard "
                  "rewards memorising them; check whether the competition allows using them.", ""]
    if len(pairs) and ((pairs["where"] == "train-train") & (pairs["kind"] == "near")).any():
        lines += ["Near copies inside train can land in different folds and inflate the OOF score: make_folds.py "
                  "keeps only exact copies together, so put near copies in one group (make_folds.py --group-col).",
                  ""]
    if len(pairs):
        show = pairs.drop(columns=["row_a", "row_b"]).head(20)
        lines += [markdown_table(show), "", f"![duplicates]({rel}/duplicates.png)", ""]
    lines += ["## Unreadable files", ""]
    lines += ([markdown_table(bad[["split", "id", "error"]].head(50))] if len(bad) else ["None."]) + [""]
    lines += [f"All per-file statistics: `{rel}/files.csv`; all pairs: `{rel}/duplicates.csv`.", ""]
    return "\n".join(lines)
