"""An ablation spec (YAML): the arms, the baseline, seeds, folds and label regimes, read strictly (an unknown key
is an error)."""
from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

from src.compare.paired import CI_METHODS
from src.core.config import load_config_file
from src.core.errors import UserError

ARM_KEYS = ("train", "tta")



SPEC_KEYS = ("name", "arms", "baseline", "seeds", "folds", "labels_per_class", "data_dir", "train", "regime_train",
             "regime_seeds", "regime_folds", "tta", "metric", "ci", "runs_dir", "report_dir")



METRICS = ("accuracy", "macro_f1")



@dataclass
class Arm:
    name: str
    train: str = ""  # extra train.py flags
    tta: str = ""  # '' = the spec's tta



@dataclass
class AblationSpec:
    """An ablation file (YAML/JSON); see configs/ablations/ for examples."""

    name: str
    arms: list[Arm]
    baseline: str = ""  # default: the first arm
    seeds: list[int] = field(default_factory=lambda: [42])
    folds: str = "all"
    labels_per_class: list[str] = field(default_factory=list)  # demo regimes, e.g. ["10", "50", "all"]
    data_dir: str = "data/mnist5k"
    train: str = ""  # flags for every run
    regime_train: dict[str, str] = field(default_factory=dict)  # extra flags per labels-per-class value
    # Fewer seeds or folds for an expensive regime (e.g. all labels); the others use seeds / folds.
    regime_seeds: dict[str, list[int]] = field(default_factory=dict)
    regime_folds: dict[str, str] = field(default_factory=dict)
    tta: str = "none"
    metric: str = "accuracy"
    ci: str = "t"
    runs_dir: str = "runs"
    report_dir: str = "reports"

    def validate(self) -> "AblationSpec":
        where = f"ablation {self.name!r}"
        if not self.name or "/" in self.name or self.name.startswith("."):
            raise UserError(f"{where}: name must be a plain folder name")
        names = [a.name for a in self.arms]
        if len(names) < 2 or len(set(names)) != len(names):
            raise UserError(f"{where}: needs at least two arms with distinct names (got {names})")
        bad = [n for n in names if not n.replace("-", "").replace("_", "").replace(".", "").isalnum()]
        if bad:
            raise UserError(f"{where}: arm name {bad[0]!r} may only use letters, digits, '-', '_' and '.'")
        self.baseline = self.baseline or names[0]
        if self.baseline not in names:
            raise UserError(f"{where}: baseline {self.baseline!r} is not an arm ({names})")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise UserError(f"{where}: seeds must be a non-empty list of distinct integers")
        for value in self.labels_per_class:
            if value != "all" and not (value.isdigit() and int(value) > 0):
                raise UserError(f"{where}: labels_per_class {value!r}: use positive integers or 'all'")
        for key in ("regime_train", "regime_seeds", "regime_folds"):
            for value in getattr(self, key):  # may name regimes left out by --labels-per-class
                if value != "all" and not (value.isdigit() and int(value) > 0):
                    raise UserError(f"{where}: {key} key {value!r}: use a labels-per-class number or 'all'")
        for value, seeds in self.regime_seeds.items():
            if not seeds or len(set(seeds)) != len(seeds):
                raise UserError(f"{where}: regime_seeds {value!r} must be a non-empty list of distinct integers")
        if self.metric not in METRICS:
            raise UserError(f"{where}: metric {self.metric!r}: choose from {METRICS}")
        if self.ci not in CI_METHODS:
            raise UserError(f"{where}: ci {self.ci!r}: choose from {CI_METHODS}")
        for arm in self.arms:
            for flag in ("--exp", "--seed", "--fold", "--runs-dir", "--data-dir"):
                if flag in shlex.split(arm.train + " " + self.train):
                    raise UserError(f"{where}: arm {arm.name!r} sets {flag}; the runner sets it for every run")
        return self

    def arm(self, name: str) -> Arm:
        return next(a for a in self.arms if a.name == name)



def _as_list(value, key: str, source: str) -> list[str]:
    if isinstance(value, (int, str)):
        value = str(value).split(",")
    if not isinstance(value, list):
        raise UserError(f"{source}: {key} must be a list or a comma-separated string")
    return [str(v).strip() for v in value]



def parse_seeds(text: str, where: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",")]
    except ValueError:
        raise UserError(f"{where} {text!r}: use integers like 42,43") from None



def spec_from_dict(values: dict, source: str) -> AblationSpec:
    """Strict: unknown keys (also inside an arm) are errors, like train.py's config."""
    unknown = sorted(set(values) - set(SPEC_KEYS))
    if unknown:
        raise UserError(f"{source}: unknown key {unknown[0]!r} (allowed: {', '.join(SPEC_KEYS)})")
    if not isinstance(values.get("arms"), dict):
        raise UserError(f"{source}: 'arms' must map arm names to {{train: flags, tta: views}}")
    arms = []
    for name, body in values["arms"].items():
        body = body or {}
        if not isinstance(body, dict) or set(body) - set(ARM_KEYS):
            raise UserError(f"{source}: arm {name!r} may only have the keys {ARM_KEYS}")
        arms.append(Arm(str(name), str(body.get("train") or ""), str(body.get("tta") or "")))
    kwargs = {k: v for k, v in values.items() if k != "arms"}
    if "seeds" in kwargs:
        kwargs["seeds"] = parse_seeds(",".join(_as_list(kwargs["seeds"], "seeds", source)), f"{source}: seeds")
    if "labels_per_class" in kwargs:
        kwargs["labels_per_class"] = _as_list(kwargs["labels_per_class"], "labels_per_class", source)
    if "folds" in kwargs:
        kwargs["folds"] = ",".join(_as_list(kwargs["folds"], "folds", source))
    kwargs["regime_train"] = {str(k): str(v or "") for k, v in (kwargs.get("regime_train") or {}).items()}
    kwargs["regime_seeds"] = {str(k): parse_seeds(",".join(_as_list(v, "regime_seeds", source)),
                                                  f"{source}: regime_seeds {k}")
                              for k, v in (kwargs.get("regime_seeds") or {}).items()}
    kwargs["regime_folds"] = {str(k): ",".join(_as_list(v, "regime_folds", source))
                              for k, v in (kwargs.get("regime_folds") or {}).items()}
    for key in ("name", "baseline", "data_dir", "train", "tta", "metric", "ci", "runs_dir", "report_dir"):
        if key in kwargs:
            kwargs[key] = str(kwargs[key] or "")
    return AblationSpec(arms=arms, **{"name": Path(source).stem, **kwargs})



def load_spec(path: str | Path) -> AblationSpec:
    return spec_from_dict(load_config_file(path), str(path))
