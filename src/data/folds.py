"""Cross-validation folds: stratified, optionally grouped, with exact duplicates kept together."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from src.core.atomic import write_csv
from src.core.errors import UserError
from src.data.cache import default_cache_dir, scan_images
from src.data.contract import LabelTable, file_sha256, read_csv_checked, read_train_table
from src.data.holdout import HOLDOUT, HOLDOUT_LABEL, assign_holdout, check_fraction, check_holdout_classes


def check_class_counts(labels: np.ndarray, classes: list[str], n_folds: int, source: str) -> None:
    """Every class needs at least one image per fold, or some validation split misses it."""
    counts = np.bincount(labels, minlength=len(classes))
    for k, count in enumerate(counts):
        if count < n_folds:
            raise UserError(f"{source}: class {classes[k]!r} has {count} image(s), fewer than {n_folds} folds; "
                            f"add images, merge the class or use fewer folds")


def connected_groups(*keys: list) -> np.ndarray:
    """Group ids such that rows sharing any key (e.g. a group column or an image hash) share a group."""
    n = len(keys[0])
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for key in keys:
        first_seen: dict = {}
        for i, value in enumerate(key):
            j = first_seen.setdefault(value, i)
            parent[find(i)] = find(j)
    roots = [find(i) for i in range(n)]
    _, group_ids = np.unique(roots, return_inverse=True)
    return group_ids


def assign_folds(labels: np.ndarray, n_folds: int, seed: int, groups: np.ndarray | None = None) -> np.ndarray:
    """Fold index per row; StratifiedGroupKFold when some rows must stay together."""
    fold = np.full(len(labels), -1, dtype=np.int64)
    if groups is None or len(np.unique(groups)) == len(groups):
        splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        splits = splitter.split(np.zeros(len(labels)), labels)
    else:
        splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        splits = splitter.split(np.zeros(len(labels)), labels, groups)
    for k, (_, val_idx) in enumerate(splits):
        fold[val_idx] = k
    return fold


def folds_frame(table: LabelTable, fold: np.ndarray, id_col: str, label_col: str) -> pd.DataFrame:
    """The fold file's rows: id, label, fold (`holdout` for the rows no fold may use)."""
    return pd.DataFrame({id_col: table.ids, label_col: [table.classes[i] for i in table.labels],
                         "fold": [HOLDOUT_LABEL if k == HOLDOUT else int(k) for k in fold]})


def parse_fold_column(values: pd.Series, path: Path) -> np.ndarray:
    """Fold numbers, HOLDOUT for `holdout`; the folds must be 0..K-1 with K >= 2 and none empty."""
    fold = np.empty(len(values), dtype=np.int64)
    for i, value in enumerate(values):
        text = str(value).strip()
        if text == HOLDOUT_LABEL:
            fold[i] = HOLDOUT
        elif text.isdecimal():
            fold[i] = int(text)
        else:
            raise UserError(f"{path}: column 'fold' must hold fold numbers or '{HOLDOUT_LABEL}'; found {text!r}")
    present = np.unique(fold[fold != HOLDOUT])
    if len(present) < 2 or not np.array_equal(present, np.arange(len(present))):
        raise UserError(f"{path}: folds must be numbered 0..K-1 with K >= 2 and none empty; found {present.tolist()}")
    return fold


def read_folds(path: str | Path, table: LabelTable, id_col: str, label_col: str) -> np.ndarray:
    """Fold index per row of `table` (HOLDOUT for holdout rows: src/data/holdout.split_holdout takes them out);
    the fold file must list exactly its ids with the same labels."""
    path = Path(path)
    frame = read_csv_checked(path, [id_col, label_col, "fold"])
    if frame[id_col].duplicated().any():
        dup = frame[id_col][frame[id_col].duplicated()].iloc[0]
        raise UserError(f"{path}: id {dup!r} appears twice")
    by_id = frame.set_index(id_col)
    missing = [i for i in table.ids if i not in by_id.index]
    extra = sorted(set(by_id.index) - set(table.ids))
    if missing or extra:
        what = f"{len(missing)} train id(s) missing (e.g. {missing[0]!r})" if missing else \
            f"{len(extra)} id(s) not in {table.source.name} (e.g. {extra[0]!r})"
        raise UserError(f"{path}: does not match {table.source}: {what}; re-run make_folds.py")
    rows = by_id.loc[table.ids]
    given = [table.classes[i] for i in table.labels]
    mismatch = np.flatnonzero(rows[label_col].to_numpy() != np.array(given, dtype=object))
    if mismatch.size:
        i = int(mismatch[0])
        raise UserError(f"{path}: id {table.ids[i]!r} has label {rows[label_col].iloc[i]!r} there but "
                        f"{given[i]!r} in {table.source.name}; re-run make_folds.py")
    return parse_fold_column(rows["fold"], path)


def data_key(table: LabelTable) -> str:
    """A short content key of a competition's labelled rows (ids and labels): two data sets in folders of the
    same name (both called `data`, say) get different fold files, even when their ids coincide."""
    rows = sorted(f"{i}\t{table.classes[k]}" for i, k in zip(table.ids, table.labels))
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()[:8]


def fold_file_path(folds_dir: str | Path, data_dir: str | Path, table: LabelTable, n_folds: int, seed: int,
                   holdout: float = 0.0) -> Path:
    """folds/<data folder name>-<key of its rows>_k<K>_s<seed>.csv, with _h<percent> for a holdout split: a
    different split, never a silent replacement of the file other runs trained on."""
    suffix = f"_h{100 * holdout:g}" if holdout else ""
    return Path(folds_dir) / f"{Path(data_dir).resolve().name}-{data_key(table)}_k{n_folds}_s{seed}{suffix}.csv"


def fold_file_candidates(folds_dir: str | Path, data_dir: str | Path, table: LabelTable) -> list[Path]:
    """The fold files in `folds_dir` made for this data set: keyed by its rows, else (files from before the
    key) by its folder name alone."""
    name = Path(data_dir).resolve().name
    return sorted(Path(folds_dir).glob(f"{name}-{data_key(table)}_k*_s*.csv")) or \
        sorted(Path(folds_dir).glob(f"{name}_k*_s*.csv"))


def default_folds_path(folds_dir: str | Path, data_dir: str | Path, table: LabelTable) -> Path:
    """The single fold file made for this data set (its folder name and rows), or a UserError saying what to do.
    A file from before the key was added (<name>_k*_s*.csv) is used when it is the only one; read_folds then
    checks that it lists exactly these ids."""
    name = Path(data_dir).resolve().name
    found = fold_file_candidates(folds_dir, data_dir, table)
    if len(found) == 1:
        return found[0]
    if not found:
        raise UserError(f"no fold file for {data_dir} in {folds_dir}/; run: python make_folds.py --data-dir {data_dir}")
    raise UserError(f"several fold files for {name}: {[str(p) for p in found]}; choose one with --folds-csv")


def locate_fold_file(recorded: str | Path, sha256: str | None, folds_dir: str | Path = "folds") -> Path:
    """The fold file a run recorded or, when it was renamed or moved since (fold files gained an id key in
    their names), the file beside it or in `folds_dir` with the recorded content hash. Left as recorded when
    none matches, so read_folds names the missing file."""
    path = Path(recorded)
    if path.is_file() or not sha256:
        return path
    for folder in dict.fromkeys([path.parent, Path(folds_dir)]):
        for candidate in sorted(folder.glob("*.csv")) if folder.is_dir() else []:
            if file_sha256(candidate) == sha256:
                return candidate
    return path


def check_fold_target(out: Path, table: LabelTable, id_col: str, label_col: str, overwrite: bool,
                      holdout_ids: set[str] = frozenset()) -> None:
    """Refuse to replace a fold file made from another train.csv (other ids or labels) unless asked: another
    competition's folds, which its runs still need. Nor one whose holdout rows differ from the new split's: runs
    on it may have trained on rows the new holdout holds. Folds of the same rows and holdout are replaced
    (another --group-col, say): runs trained on the old ones notice through the fold file's hash in their records."""
    if overwrite or not out.is_file():
        return
    try:
        old = pd.read_csv(out, dtype=str, keep_default_na=False)
        same = sorted(zip(old[id_col], old[label_col])) == sorted(
            zip(table.ids, (table.classes[i] for i in table.labels)))
        old_holdout = set(old.loc[old["fold"].str.strip() == HOLDOUT_LABEL, id_col])
    except (KeyError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
        same, old_holdout = False, set()
    if not same:
        raise UserError(f"{out} exists and was made from another train.csv (other ids or labels); pass "
                        f"--overwrite to replace it, or --out for another file")
    if old_holdout != set(holdout_ids):
        raise UserError(f"{out} exists with other holdout rows ({len(old_holdout)} there, {len(holdout_ids)} now): runs "
                        f"on it may have trained on rows the new holdout holds; pass --overwrite to replace it "
                        f"anyway (their holdout score is then refused), or --out for another file")


FOLD_ENV_VARS = ("KIT_FOLD", "SLURM_ARRAY_TASK_ID")


def fold_from_env(given: str | None, environ=os.environ) -> tuple[str, str]:
    """(fold argument, where it came from): --fold, else $KIT_FOLD, else $SLURM_ARRAY_TASK_ID (so
    `sbatch --array=0-4` trains one fold per task), else fold 0."""
    if given is not None:
        return given, "--fold"
    for name in FOLD_ENV_VARS:
        if environ.get(name, "").strip():
            return environ[name].strip(), f"${name}"
    return "0", "default"


def parse_fold_arg(text: str, n_folds: int, source: str = "--fold") -> list[int]:
    """'0', '0,2,4' or 'all' -> fold indices, each checked against the fold file."""
    if text == "all":
        return list(range(n_folds))
    try:
        folds = list(dict.fromkeys(int(part) for part in text.split(",")))  # '0,0' trains fold 0 once
    except ValueError:
        raise UserError(f"{source} {text!r}: use a number, a comma list like 0,1,2, or 'all'") from None
    for k in folds:
        if not 0 <= k < n_folds:
            raise UserError(f"{source} {k} is out of range: the fold file has folds 0..{n_folds - 1}")
    return folds


def make_fold_file(data_dir: str, train_csv: str, image_dir: str, id_col: str, label_col: str, group_col: str,
                   n_folds: int, seed: int, out: Path | None, quiet: bool = True, overwrite: bool = False,
                   folds_dir: str | Path = "folds", cache_dir: str = "", holdout: float = 0.0) -> pd.DataFrame:
    """Validate the data, set aside a stratified (grouped) holdout share when asked, assign folds to the rest and
    write them atomically (to `out`, else the data set's own name in `folds_dir`); prints per-fold class counts."""
    if n_folds < 2:
        raise UserError(f"--n-folds {n_folds}: need at least 2 folds")
    if holdout:
        check_fraction(holdout)
    table = read_train_table(data_dir, train_csv, image_dir, id_col, label_col)
    check_class_counts(table.labels, table.classes, n_folds, str(table.source))
    out = Path(out) if out else fold_file_path(folds_dir, data_dir, table, n_folds, seed, holdout)
    groups, n_dups = fold_groups(table, data_dir, group_col, cache_dir, quiet)
    held = np.zeros(len(table.ids), dtype=bool)
    if holdout:
        held = assign_holdout(table.labels, groups, holdout, seed)
        check_holdout_classes(table.labels, held, table.classes, holdout, str(table.source))
        check_class_counts(table.labels[~held], table.classes, n_folds, f"{table.source} without its holdout rows")
    check_fold_target(out, table, id_col, label_col, overwrite, {table.ids[i] for i in np.flatnonzero(held)})
    if len(np.unique(groups[~held])) < n_folds:
        raise UserError(f"only {len(np.unique(groups[~held]))} groups (after merging duplicates) for {n_folds} folds; "
                        f"use fewer folds")
    fold = np.full(len(table.ids), HOLDOUT, dtype=np.int64)
    fold[~held] = assign_folds(table.labels[~held], n_folds, seed, groups[~held])
    frame = folds_frame(table, fold, id_col, label_col)
    write_csv(out, frame)
    cv = frame[~held]
    counts = pd.crosstab(cv["fold"], cv[label_col]).reindex(columns=table.classes, fill_value=0)
    missing = [(int(k), c) for k, row in counts.iterrows() for c, n in row.items() if n == 0]
    if missing:
        print(f"warning: {len(missing)} (fold, class) pairs have no validation image, e.g. fold {missing[0][0]} "
              f"has no {missing[0][1]!r} (groups force it); per-class metrics there are undefined")
    if holdout:
        counts.loc[HOLDOUT_LABEL] = frame[held][label_col].value_counts().reindex(table.classes, fill_value=0)
    held_text = (f", {int(held.sum())} holdout rows ({held.mean():.1%}: no fold trains, selects or tunes on them; "
                 f"infer.py scores them)") if holdout else ""
    print(f"wrote {out}: {len(frame)} rows{held_text}, {n_folds} folds, {len(table.classes)} classes, "
          f"{n_dups} exact duplicate image(s) kept with their originals\n{counts.to_string()}")
    others = [p for p in fold_file_candidates(folds_dir, data_dir, table) if p.resolve() != out.resolve()]
    if others:  # train.py cannot pick one on its own any more
        print(f"this data set has other fold files too ({', '.join(map(str, others))}): pass --folds-csv {out} to "
              f"train.py, tune.py and the other scripts")
    return frame


def fold_groups(table: LabelTable, data_dir: str, group_col: str, cache_dir: str, quiet: bool
                ) -> tuple[np.ndarray, int]:
    """(group id per row, number of exact duplicates): rows that share an image (pixel hash) or a --group-col
    value share a group, so they land in one fold (or all in the holdout)."""
    # Pixel hashes from the cache folder's scan (decoded in parallel once, never all held in memory).
    hashes = [f.pixel_hash for f in scan_images(table.paths, Path(cache_dir or default_cache_dir(data_dir)), quiet)]
    keys = [hashes]
    if group_col:
        if not table.source.is_file():
            raise UserError(f"--group-col needs a train.csv; {table.source} is an ImageFolder layout")
        values = read_csv_checked(table.source, [group_col])[group_col]
        # A row with no group value is a group of its own, not one big group of all blanks.
        keys.append([v if v.strip() else f"\0row{i}" for i, v in enumerate(values)])
    groups = connected_groups(*keys)
    return groups, len(hashes) - len(set(hashes))
