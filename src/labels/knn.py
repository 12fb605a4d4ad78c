"""Embeddings from a trained fold model and kNN auto-labelling of unlabelled images: an image is labelled
when its nearest labelled neighbours agree (and the classifier agrees with them); the rest go to a review
queue ranked by uncertainty, with known-label control items mixed in to check the reviewers."""
from __future__ import annotations

import dataclasses
import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from src.core.atomic import save_figure, write_csv
from src.core.errors import UserError
from src.data.contact_sheet import contact_sheet
from src.data.images import decode_image, write_image
from src.labels.labelstudio import LOCAL_FILES_PREFIX, export_tasks
from src.train.engine import Runtime, to_input

CHUNK = 1024


@torch.no_grad()
def embed(model: torch.nn.Module, images: np.ndarray, batch_size: int, norm, rt: Runtime) -> tuple[np.ndarray,
                                                                                                      np.ndarray]:
    """(penultimate-layer features, L2-normalised; softmax probabilities) for uint8 NHWC images. Any timm model
    (and smallcnn) exposes the features as forward_head(..., pre_logits=True)."""
    model.eval()
    feats, probs = [], []
    for start in range(0, len(images), batch_size):
        x = to_input(torch.from_numpy(images[start:start + batch_size]).to(rt.device), norm, rt)
        with torch.autocast(rt.device.type, dtype=rt.amp_dtype, enabled=rt.amp_dtype is not None):
            pre = model.forward_head(model.forward_features(x), pre_logits=True)
            logits = model.get_classifier()(pre)
        feats.append(torch.nn.functional.normalize(pre.float().flatten(1), dim=1).cpu())
        probs.append(torch.softmax(logits.float(), dim=1).cpu())
    return torch.cat(feats).numpy(), torch.cat(probs).numpy()


def knn_votes(ref: np.ndarray, ref_labels: np.ndarray, query: np.ndarray, k: int, num_classes: int,
              exclude_self: bool = False) -> np.ndarray:
    """(N, classes) counts of each class among every query's k most similar (cosine) reference rows."""
    votes = np.zeros((len(query), num_classes), np.int64)
    for start in range(0, len(query), CHUNK):
        sims = query[start:start + CHUNK] @ ref.T
        if exclude_self:  # the reference set queried against itself: a row is not its own neighbour
            rows = np.arange(start, min(start + CHUNK, len(query)))
            sims[rows - start, rows] = -np.inf
        nearest = np.argpartition(-sims, kth=min(k, sims.shape[1] - 1) - 1, axis=1)[:, :k]
        for j in range(nearest.shape[1]):
            np.add.at(votes, (np.arange(start, start + len(nearest)), ref_labels[nearest[:, j]]), 1)
    return votes


@dataclass
class AutoLabelRule:
    k: int = 10
    min_agreement: float = 1.0  # share of the k neighbours that must vote for the label
    min_confidence: float = 0.0  # the classifier's probability for that label must reach this too


def auto_label(votes: np.ndarray, probs: np.ndarray, rule: AutoLabelRule) -> tuple[np.ndarray, np.ndarray]:
    """(accepted mask, label per row): the neighbours' majority label, accepted when at least min_agreement of
    the k neighbours vote for it and the classifier's top class is the same with at least min_confidence."""
    label = votes.argmax(1)
    agreement = votes.max(1) / votes.sum(1)
    classifier_agrees = probs.argmax(1) == label
    confident = probs[np.arange(len(label)), label] >= rule.min_confidence
    return (agreement >= rule.min_agreement) & classifier_agrees & confident, label


def uncertainty(probs: np.ndarray, votes: np.ndarray) -> pd.DataFrame:
    """Per row: entropy of the classifier's probabilities, its top-2 margin, and neighbour disagreement."""
    p = np.clip(probs, 1e-12, 1)
    top2 = np.sort(probs, axis=1)[:, -2:]
    return pd.DataFrame({"entropy": -(p * np.log(p)).sum(1), "margin": top2[:, 1] - top2[:, 0],
                         "disagreement": 1 - votes.max(1) / votes.sum(1)})


RANK_BY = {"entropy": False, "margin": True, "disagreement": False}  # ascending? (low margin = uncertain)


def review_queue(ids: list[str], uncertain: pd.DataFrame, suggested: list[str], rank_by: str,
                 control_ids: list[str], control_labels: list[str], control_suggested: list[str],
                 control_share: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(queue, controls). The queue lists the most uncertain images first, with known-label control items
    inserted at random positions. Reviewers see the same for both: an opaque item id (`id`, q<key>-00001), the
    classifier's suggestion and, elsewhere, an image re-encoded under that id; the real `image_id`, the
    control flag and the controls' labels stay in files reviewers do not get."""
    order = uncertain.sort_values(rank_by, ascending=RANK_BY[rank_by], kind="stable").index.to_numpy()
    items = pd.DataFrame({"image_id": [ids[i] for i in order], "suggested": [suggested[i] for i in order],
                          rank_by: uncertain[rank_by].to_numpy()[order], "control": False})
    rng = np.random.default_rng(seed)
    n_controls = min(len(control_ids), int(np.ceil(control_share * len(items)))) if len(items) else 0
    pick = rng.choice(len(control_ids), size=n_controls, replace=False) if n_controls else np.array([], int)
    controls = pd.DataFrame({"id": [control_ids[i] for i in pick], "true_label": [control_labels[i] for i in pick]})
    for i in pick:
        position = int(rng.integers(0, len(items) + 1))
        line = pd.DataFrame({"image_id": [control_ids[i]], "suggested": [control_suggested[i]], rank_by: [np.nan],
                             "control": [True]})
        items = pd.concat([items.iloc[:position], line, items.iloc[position:]], ignore_index=True)
    item = np.arange(1, len(items) + 1)
    # The key ties answers to this queue: reviews of an earlier queue (other images in other places) are
    # refused by import_reviews.py instead of landing on whatever image now has their item number.
    key = hashlib.sha256("\n".join(items["image_id"]).encode()).hexdigest()[:6]
    queue = items.assign(item=item, id=[f"q{key}-{n:05d}" for n in item], label="", reviewer="")
    return queue, controls


def write_review_files(out: Path, queue: pd.DataFrame, rank_by: str, image_of, sheet_items: int) -> None:
    """review_queue.csv (what reviewers fill in: item, id, suggested, label, reviewer; nothing marks a control
    row), review_images/<id>.png (every item re-encoded the same way, so neither file names nor formats nor
    folders tell a control from a real item), review_queue.png (the first items as a contact sheet) and the
    hidden columns in queue_key.csv. image_of(image id) gives an item's cached pixels for the sheet."""
    public = queue[["item", "id", "suggested", "label", "reviewer"]]
    write_csv(out / "review_queue.csv", public)
    write_csv(out / "queue_key.csv", queue[["item", "id", "image_id", "control", "suggested", rank_by, "path",
                                            "review_image"]])
    folder = out / "review_images"
    shutil.rmtree(folder, ignore_errors=True)  # an earlier queue's images would carry other items' ids
    folder.mkdir(parents=True)
    for token, path in zip(queue["id"], queue["path"]):
        write_image(folder / f"{token}.png", decode_image(Path(path)))
    head = queue.head(sheet_items)
    contact_sheet(out / "review_queue.png", [image_of(i) for i in head["image_id"]],
                  [f"#{r.item} {r.id}\n{r.suggested}?" for r in head.itertuples()],
                  "review queue: most uncertain first (write the label in review_queue.csv)", columns=8)


def embedding_map(path: Path, emb: np.ndarray, labels: list[str], title: str, seed: int) -> None:
    """2-D PCA of the embeddings, coloured by label ('?' = unlabelled, grey)."""
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA

    xy = PCA(n_components=2, random_state=seed).fit_transform(emb)
    fig, ax = plt.subplots(figsize=(7, 6))
    names = sorted({lab for lab in labels if lab != "?"}, key=lambda s: (len(s), s))
    unlabelled = np.array([lab == "?" for lab in labels])
    if unlabelled.any():
        ax.scatter(xy[unlabelled, 0], xy[unlabelled, 1], s=3, color="0.8", label="unlabelled")
    for k, name in enumerate(names):
        rows = np.array([lab == name for lab in labels])
        ax.scatter(xy[rows, 0], xy[rows, 1], s=6, color=plt.cm.tab20(k % 20), label=name)
    ax.legend(fontsize=7, markerscale=2, ncol=2)
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    save_figure(path, fig)
    plt.close(fig)


def truth_accuracy(ids: list[str], predicted: list[str], truth_csv: Path) -> float:
    """Share of `predicted` equal to the hidden truth (a CSV of image,label; ids may carry a file extension)."""
    from src.data.contract import read_csv_checked

    truth = read_csv_checked(truth_csv, ["image", "label"]).astype(str)
    known = dict(zip(truth["image"], truth["label"]))
    got = [known.get(i, known.get(Path(i).stem)) for i in ids]
    missing = [i for i, g in zip(ids, got) if g is None]
    if missing:
        raise UserError(f"{truth_csv}: no true label for {missing[0]!r} (and {len(missing) - 1} more)")
    return float(np.mean([g == p for g, p in zip(got, predicted)])) if ids else float("nan")


def control_pool(ref_probs: np.ndarray, ref_votes: np.ndarray, labels: np.ndarray, ids: list[str],
                 candidates: np.ndarray, classes: list[str], rank_by: str) -> tuple[list[str], list[str], list[str]]:
    """(ids, true labels, suggestions) of the labelled rows controls are drawn from: the fold's validation
    rows (the model never trained on them, so its suggestion there is as fallible as on real items), the more
    uncertain half of them, like the queue's own items. A reviewer who copies suggestions fails controls too."""
    unc = uncertainty(ref_probs[candidates], ref_votes[candidates])
    order = unc.sort_values(rank_by, ascending=RANK_BY[rank_by], kind="stable").index.to_numpy()
    rows = candidates[order[:max(1, (len(order) + 1) // 2)]] if len(order) else candidates
    return ([ids[i] for i in rows], [classes[j] for j in labels[rows]],
            [classes[j] for j in ref_probs[rows].argmax(1)])


def run_auto_label(exp_dir: Path, fold: int, images_dir: str, out: Path, rule: AutoLabelRule, rank_by: str,
                   control_share: float, sheet_items: int, device: str, seed: int, quiet: bool,
                   truth_csv: str = "", ls_root: str = "/", ls_url_prefix: str = LOCAL_FILES_PREFIX) -> dict:
    """Embed the labelled training rows and the images in `images_dir` (default: the experiment's
    <data_dir>/unlabeled) with fold `fold`'s model, auto-label by kNN, queue the rest for review; writes
    auto_labels.csv, review_queue.csv (+ .png, review_images/), queue_key.csv, controls.csv,
    embedding_map.png and knn_check.csv into `out`. Returns counts for the printout."""
    from src.core.rundir import write_json
    from src.data.contract import read_train_table
    from src.data.folds import read_folds
    from src.data.holdout import split_holdout
    from src.data.images import IMAGE_EXTS
    from src.infer.predictor import Predictor

    p = Predictor.load(exp_dir, device=device, tta="none", folds=[fold])
    cfg, model = p.cfg, p.folds[0]
    table = read_train_table(cfg.data_dir, cfg.train_csv, cfg.image_dir, cfg.id_col, cfg.label_col)
    # The holdout's labels stay out of the neighbours: auto-labels become training rows.
    table, fold_of = split_holdout(table, read_folds(p.folds_csv, table, cfg.id_col, cfg.label_col))
    images_dir = Path(images_dir or Path(cfg.data_dir) / "unlabeled")
    files = sorted(f for f in images_dir.rglob("*") if f.suffix.lower() in IMAGE_EXTS) if images_dir.is_dir() else []
    if not files:
        raise UserError(f"{images_dir}: no images to label ({', '.join(IMAGE_EXTS)}); pass --images-dir")
    ref_images, query_images = p.cached(table.paths, quiet), p.cached(files, quiet)
    batch = cfg.batch_size * 4
    ref, ref_probs = embed(model.model, ref_images, batch, model.norm, p.rt)
    query, probs = embed(model.model, query_images, batch, model.norm, p.rt)
    k = len(p.classes)
    # How good the rule is, measured where the truth is known: each labelled row against the others.
    # With few labels per class a row has fewer than k same-class others, so the check uses at most that many.
    check_k = max(1, min(rule.k, int(np.bincount(table.labels).min()) - 1))
    ref_votes = knn_votes(ref, table.labels, ref, check_k, k, exclude_self=True)
    ref_ok, ref_label = auto_label(ref_votes, ref_probs, dataclasses.replace(rule, k=check_k))
    votes = knn_votes(ref, table.labels, query, rule.k, k)
    accepted, label = auto_label(votes, probs, rule)
    ids = [str(f.relative_to(images_dir)) for f in files]
    unc = uncertainty(probs, votes)
    auto = pd.DataFrame({"id": ids, "path": [str(f) for f in files], "label": [p.classes[j] for j in label],
                         "agreement": 1 - unc["disagreement"], "classifier_prob": probs[np.arange(len(ids)), label]})
    write_csv(out / "auto_labels.csv", auto[accepted])
    rest = np.flatnonzero(~accepted)
    train_ids = [str(i) for i in table.ids]
    queue, controls = review_queue([ids[i] for i in rest], unc.iloc[rest].reset_index(drop=True),
                                   [p.classes[j] for j in probs[rest].argmax(1)], rank_by,
                                   *control_pool(ref_probs, ref_votes, table.labels, train_ids,
                                                 np.flatnonzero(fold_of == fold), table.classes, rank_by),
                                   control_share, seed)
    source = {**{i: str(f) for i, f in zip(ids, files)}, **{i: str(f) for i, f in zip(train_ids, table.paths)}}
    queue["path"] = queue["image_id"].map(source)
    queue["review_image"] = [str(out / "review_images" / f"{token}.png") for token in queue["id"]]
    row_of = {**{i: (query_images, r) for r, i in enumerate(ids)},
              **{i: (ref_images, r) for r, i in enumerate(train_ids)}}
    write_review_files(out, queue, rank_by, lambda image_id: row_of[image_id][0][row_of[image_id][1]], sheet_items)
    export_tasks(queue.assign(path=queue["review_image"]), p.classes, out, Path(ls_root), ls_url_prefix)
    write_csv(out / "controls.csv", controls)
    write_json(out / "queue.json", {"exp": str(exp_dir), "fold": fold, "data_dir": cfg.data_dir,
                                    "train_csv": cfg.train_csv, "image_dir": cfg.image_dir, "id_col": cfg.id_col,
                                    "label_col": cfg.label_col, "classes": p.classes, "images_dir": str(images_dir),
                                    "rule": vars(rule), "rank_by": rank_by})
    check = {"labelled rows": len(train_ids), f"auto-labelled (leave-one-out, k={check_k})": int(ref_ok.sum()),
             "their accuracy": float((ref_label[ref_ok] == table.labels[ref_ok]).mean()) if ref_ok.any() else np.nan}
    write_csv(out / "knn_check.csv", pd.DataFrame([check]))
    embedding_map(out / "embedding_map.png", np.concatenate([ref, query]),
                  [table.classes[j] for j in table.labels] + ["?"] * len(ids),
                  f"{exp_dir.name} fold {fold}: penultimate-layer embeddings (PCA)", seed)
    counts = {"images": len(ids), "auto_labelled": int(accepted.sum()), "queued": int((~accepted).sum()),
              "controls": len(controls), **check}
    if truth_csv:  # the demo's unlabeled_solution.csv: how right the rule and the queue's suggestions are
        counts.update(truth_counts([p.classes[j] for j in label], [p.classes[j] for j in probs.argmax(1)],
                                   accepted, ids, Path(truth_csv)))
    write_csv(out / "summary.csv", pd.DataFrame([counts]))
    return counts


def truth_counts(auto_labels: list[str], classifier_labels: list[str], accepted: np.ndarray, ids: list[str],
                 truth_csv: Path) -> dict:
    """Where the demo keeps the truth: how right the auto-labels are, and the classifier's suggestions on the
    queued images."""
    chosen, rest = np.flatnonzero(accepted), np.flatnonzero(~accepted)
    return {"auto-label accuracy (truth)": truth_accuracy([ids[i] for i in chosen], [auto_labels[i] for i in chosen],
                                                          truth_csv),
            "queued: classifier accuracy (truth)": truth_accuracy([ids[i] for i in rest],
                                                                  [classifier_labels[i] for i in rest], truth_csv)}
