"""What a person looks at after training: the OOF confusion matrix, per-class metrics, and a contact sheet
of the most confidently wrong OOF images."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from src.core.atomic import save_figure, write_csv, write_text
from src.core.tables import markdown_table
from src.data.contact_sheet import contact_sheet


def per_class_table(y: np.ndarray, probs: np.ndarray, classes: list[str]) -> pd.DataFrame:
    """Per class: support, precision, recall, F1, and the class it is most often mistaken for."""
    pred = probs.argmax(1)
    labels = np.arange(len(classes))
    precision, recall, f1, support = precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    cm = confusion_matrix(y, pred, labels=labels)
    off = cm - np.diag(np.diag(cm))
    confused = [f"{classes[off[i].argmax()]} ({off[i].max()})" if off[i].max() else "" for i in labels]
    return pd.DataFrame({"class": classes, "support": support, "precision": precision, "recall": recall,
                         "f1": f1, "most often predicted as": confused})


def confusion_figure(y: np.ndarray, pred: np.ndarray, classes: list[str], title: str):
    """Counts in the cells, colour by row share (recall), so rare classes are as readable as common ones."""
    cm = confusion_matrix(y, pred, labels=np.arange(len(classes)))
    share = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    side = min(2.0 + 0.45 * len(classes), 16)
    fig, ax = plt.subplots(figsize=(side + 1, side))
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    if len(classes) <= 30:
        for i, j in np.ndindex(cm.shape):
            if cm[i, j]:
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if share[i, j] > 0.6 else "black")
    ticks = np.arange(len(classes))
    ax.set_xticks(ticks, classes, rotation=90 if len(classes) > 10 else 0, fontsize=8)
    ax.set_yticks(ticks, classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of the true class")
    fig.tight_layout()
    return fig


def most_confident_wrong(ids: list[str], y: np.ndarray, probs: np.ndarray, classes: list[str],
                         top_n: int) -> pd.DataFrame:
    """The `top_n` wrong OOF predictions with the highest predicted probability (label errors or hard cases)."""
    pred = probs.argmax(1)
    wrong = np.flatnonzero(pred != y)
    order = wrong[np.argsort(-probs[wrong, pred[wrong]], kind="stable")][:top_n]
    return pd.DataFrame({"row": order, "id": [ids[i] for i in order], "label": [classes[y[i]] for i in order],
                         "pred": [classes[pred[i]] for i in order], "confidence": probs[order, pred[order]],
                         "prob_of_label": probs[order, y[order]]})


def write_diagnostics(out: Path, ids: list[str], y: np.ndarray, probs: np.ndarray, classes: list[str],
                      images: np.ndarray, top_n: int = 32) -> None:
    """confusion.png, per_class.csv/.md and wrong.png (+ wrong.csv) in `out`, from pooled OOF predictions
    and the matching uint8 images."""
    fig = confusion_figure(y, probs.argmax(1), classes, f"{out.name}: OOF confusion ({len(y)} rows)")
    save_figure(out / "confusion.png", fig)
    plt.close(fig)
    table = per_class_table(y, probs, classes)
    write_csv(out / "per_class.csv", table)
    write_text(out / "per_class.md", f"# Per-class OOF metrics: {out.name}\n\n{markdown_table(table)}\n")
    wrong = most_confident_wrong(ids, y, probs, classes, top_n)
    write_csv(out / "wrong.csv", wrong.drop(columns="row"))
    captions = [f"{r.id}\n{r.label}→{r.pred} {r.confidence:.2f}" for r in wrong.itertuples()]
    contact_sheet(out / "wrong.png", images[wrong["row"].to_numpy()], captions,
                  f"{out.name}: most confidently wrong OOF predictions (true→predicted, confidence)")
