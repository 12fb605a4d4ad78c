"""Label Studio interchange for the review queue: import tasks (JSON) plus a labelling config with our class
names, and reading a Label Studio JSON export back as reviews (id, label, reviewer) for the majority vote."""
from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote
from xml.sax.saxutils import quoteattr

import pandas as pd

from src.core.atomic import write_text
from src.core.errors import UserError

# Label Studio serves local files under this URL when started with LOCAL_FILES_SERVING_ENABLED=true and
# LOCAL_FILES_DOCUMENT_ROOT=<root>; the path after ?d= is relative to that root.
LOCAL_FILES_PREFIX = "/data/local-files/?d="


def labelling_config(classes: list[str]) -> str:
    """Single-choice image classification with our class names (paste into the project's Labeling Interface)."""
    choices = "\n".join(f"    <Choice value={quoteattr(c)}/>" for c in classes)
    return ("<View>\n  <Image name=\"image\" value=\"$image\"/>\n"
            f"  <Choices name=\"label\" toName=\"image\" choice=\"single\" showInline=\"true\">\n{choices}\n"
            "  </Choices>\n</View>\n")


def export_tasks(queue: pd.DataFrame, classes: list[str], out: Path, root: Path,
                 url_prefix: str = LOCAL_FILES_PREFIX) -> None:
    """labelstudio_tasks.json (one task per queue item, in queue order; `data.kit_id` carries our id) and
    labelstudio_config.xml. Image URLs are `url_prefix` + the path relative to `root`."""
    tasks = []
    for r in queue.itertuples():
        path = Path(r.path).resolve()
        try:
            relative = path.relative_to(root.resolve())
        except ValueError:
            raise UserError(f"{path} is outside the Label Studio document root {root}; pass --ls-root to a folder "
                            f"above the data") from None
        tasks.append({"data": {"image": url_prefix + quote(relative.as_posix()), "kit_id": r.id,
                               "kit_item": int(r.item)}})
    write_text(out / "labelstudio_tasks.json", json.dumps(tasks, indent=1) + "\n")
    write_text(out / "labelstudio_config.xml", labelling_config(classes))


def _reviewer(annotation: dict) -> str:
    """completed_by is a user id in older exports and a user object (id, email) in newer ones."""
    who = annotation.get("completed_by", "")
    if isinstance(who, dict):
        who = who.get("email") or who.get("id", "")
    return f"ls-{who}" if who != "" else "ls-unknown"


def read_labelstudio_export(path: Path) -> pd.DataFrame:
    """(id, label, reviewer) from a Label Studio JSON export: one row per non-cancelled annotation whose
    result holds a single choice; tasks nobody labelled give no row."""
    try:
        tasks = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"{path}: not a Label Studio JSON export ({err})") from None
    if not isinstance(tasks, list):
        raise UserError(f"{path}: a Label Studio JSON export is a list of tasks; export as 'JSON', not 'JSON-MIN'")
    rows = []
    for n, task in enumerate(tasks, start=1):
        image_id = (task.get("data") or {}).get("kit_id")
        if image_id is None:
            raise UserError(f"{path} task {n}: no data.kit_id; import the tasks auto_label.py wrote "
                            f"(labelstudio_tasks.json) so answers can be matched to images")
        for annotation in task.get("annotations") or []:
            if annotation.get("was_cancelled"):
                continue
            choices = [c for r in annotation.get("result") or [] if r.get("type") == "choices"
                       for c in (r.get("value") or {}).get("choices", [])]
            if len(choices) > 1:
                raise UserError(f"{path} task {n}: {len(choices)} choices in one annotation; use single choice")
            if choices:
                rows.append({"id": str(image_id), "label": str(choices[0]), "reviewer": _reviewer(annotation)})
    return pd.DataFrame(rows, columns=["id", "label", "reviewer"])
