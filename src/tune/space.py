"""A search-space file (configs/search/*.yaml): read it strictly, check every value against TrainConfig before any
trial runs, and sample a trial's values from it.

Top-level keys are TrainConfig keys. `{low, high}` is a range (`log: true` samples the exponent, `step` a grid;
whole numbers for int keys), a list is a set of choices, `fixed:` maps keys every trial uses as they are, and
`start:` lists points (some searched keys each, the base config's values for the rest) tried right after the base
config, before the sampler proposes its own:

    lr: {low: 3.0e-4, high: 5.0e-3, log: true}
    epochs: {low: 10, high: 30, step: 5}
    model: [smallcnn, smallresnet]
    fixed: {image_size_px: 32}
    start: [{epochs: 30, model: smallresnet}]
"""
from __future__ import annotations

import contextlib
import dataclasses
import difflib
import io
import typing
from dataclasses import dataclass
from pathlib import Path

from src.core.config import config_from_dict, load_config_file
from src.core.errors import UserError
from src.data.augment import trained_flips
from src.train.config import TrainConfig

# Keys a trial may not vary: where runs and data are, what the objective measures, and the seed (a searched seed
# fits noise). tune.py sets exp and runs_dir itself.
NOT_SEARCHABLE = ("exp", "runs_dir", "cache_dir", "data_dir", "train_csv", "image_dir", "id_col", "label_col",
                  "folds_csv", "monitor", "monitor_mode", "seed")
RANGE_KEYS = ("low", "high", "log", "step")
FIELD_TYPES = {f.name: typing.get_type_hints(TrainConfig)[f.name] for f in dataclasses.fields(TrainConfig)}


@dataclass(frozen=True)
class Range:
    """low..high (both ends included); int keys get whole numbers."""

    low: float
    high: float
    log: bool = False
    step: float | None = None
    integer: bool = False


@dataclass(frozen=True)
class Choice:
    values: tuple


@dataclass
class SearchSpace:
    source: str
    params: dict[str, Range | Choice]
    fixed: dict
    starts: list[dict] = dataclasses.field(default_factory=list)  # points tried first, after the base config

    def without(self, keys) -> "SearchSpace":
        """The space with `keys` (set on the command line) taken out of the search (and out of the start points)."""
        return dataclasses.replace(self, params={k: v for k, v in self.params.items() if k not in keys},
                                   starts=[{k: v for k, v in p.items() if k not in keys} for p in self.starts])


def load_space(path: str | Path) -> SearchSpace:
    """Read and parse a search-space file (types and ranges checked; values are checked by `check_space`)."""
    return parse_space(load_config_file(path), str(path))


def parse_space(values: dict, source: str) -> SearchSpace:
    fixed = values.get("fixed") or {}
    if not isinstance(fixed, dict):
        raise UserError(f"{source}: fixed must be a mapping of TrainConfig keys to values")
    for name in fixed:
        check_key(name, source, "fixed: ")
    if "exp" in fixed:
        raise UserError(f"{source}: fixed: exp is set by tune.py (trial<number>; the tuned config gets --name)")
    params = {}
    for name, spec in values.items():
        if name in ("fixed", "start"):
            continue
        check_key(name, source)
        if name in fixed:
            raise UserError(f"{source}: {name} is both searched and under fixed:; keep one")
        if name in NOT_SEARCHABLE:
            raise UserError(f"{source}: {name} cannot be searched (it sets the data, where runs go, the objective or "
                            f"the seed); put it under fixed: or pass it as a flag")
        params[name] = parse_param(name, spec, source)
    if not params:
        raise UserError(f"{source}: no key to search; give ranges {{low, high}} or lists of choices")
    return SearchSpace(source, params, {k: as_field_type(k, v) for k, v in fixed.items()},
                       parse_starts(values.get("start") or [], params, source))


def parse_starts(starts, params: dict, source: str) -> list[dict]:
    """start: a list of mappings of searched keys to values the space contains."""
    if not isinstance(starts, list) or not all(isinstance(p, dict) and p for p in starts):
        raise UserError(f"{source}: start must be a list of mappings of searched keys to values")
    out = []
    for i, point in enumerate(starts):
        for name, value in point.items():
            if name not in params:
                raise UserError(f"{source}: start[{i}]: {name!r} is not a searched key of this file")
            if not contains(params[name], as_field_type(name, value)):
                raise UserError(f"{source}: start[{i}]: {name}={value!r} lies outside its range or choices")
        out.append({k: as_field_type(k, v) for k, v in point.items()})
    return out


def check_key(name, source: str, where: str = "") -> None:
    if name not in FIELD_TYPES:
        hint = difflib.get_close_matches(str(name), list(FIELD_TYPES), n=1)
        extra = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise UserError(f"{source}: {where}unknown key {name!r}{extra}")


def as_field_type(name: str, value):
    """PyYAML reads `1e-4` (no dot) as a string: a numeric string for a numeric key becomes its number, and a
    whole number for a float key a float. Anything else passes through for config_from_dict to judge."""
    kind = FIELD_TYPES[name]
    if kind in (int, float) and isinstance(value, str):
        with contextlib.suppress(ValueError):
            number = float(value)
            return int(number) if kind is int and number.is_integer() else number
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def parse_param(name: str, spec, source: str) -> Range | Choice:
    where = f"{source}: {name}"
    if isinstance(spec, list):
        if not spec:
            raise UserError(f"{where}: the list of choices is empty")
        values = tuple(as_field_type(name, v) for v in spec)
        if len(set(map(repr, values))) != len(values):
            raise UserError(f"{where}: a choice is listed twice ({list(values)})")
        return Choice(values)
    if not isinstance(spec, dict):
        raise UserError(f"{where}: give a range {{low: ..., high: ...}} or a list of choices, got {spec!r} "
                        f"(a value every trial uses goes under fixed:)")
    return parse_range(name, spec, where)


def parse_range(name: str, spec: dict, where: str) -> Range:
    unknown = sorted(set(spec) - set(RANGE_KEYS), key=str)
    if unknown:
        raise UserError(f"{where}: unknown range key {unknown[0]!r} (allowed: {', '.join(RANGE_KEYS)})")
    kind = FIELD_TYPES[name]
    if kind not in (int, float):
        raise UserError(f"{where}: a range needs a numeric key ({name} is {kind.__name__}); give a list of choices")
    if "low" not in spec or "high" not in spec:
        raise UserError(f"{where}: a range needs both low and high")
    low, high = (as_field_type(name, spec[k]) for k in ("low", "high"))
    step = as_field_type(name, spec["step"]) if spec.get("step") is not None else None
    for label, value in (("low", low), ("high", high), ("step", step)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, kind)):
            raise UserError(f"{where}: {label} must be {'a whole number' if kind is int else 'a number'}, "
                            f"got {value!r}")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise UserError(f"{where}: log must be true or false, got {log!r}")
    if not low < high:
        raise UserError(f"{where}: empty range: low {low} must be below high {high}")
    if step is not None and (step <= 0 or log):
        raise UserError(f"{where}: step must be positive and cannot be combined with log: true")
    if log and low <= 0:
        raise UserError(f"{where}: log: true needs low > 0, got {low}")
    return Range(low, high, log, step, integer=kind is int)


def check_space(space: SearchSpace, base: TrainConfig) -> None:
    """Every choice, both ends of every range and every start point must give a config that TrainConfig accepts on
    top of `base` (a one-line error naming the file and key, before any trial runs)."""
    for i, point in enumerate(space.starts):
        try:
            trial_config(base, point)
        except UserError as err:
            raise UserError(f"{space.source}: start[{i}] is refused ({str(err).split(': ', 1)[-1]})") from None
    for name, param in space.params.items():
        values = param.values if isinstance(param, Choice) else (param.low, param.high)
        for value in values:
            try:
                trial_config(base, {name: value})
            except UserError as err:
                reason = str(err).split(": ", 1)[-1]
                raise UserError(f"{space.source}: {name}: {value!r} is refused ({reason})") from None


# Keys counted in epochs from the start of a run: when a trial changes `epochs`, they keep their share of it (a
# base config's mixup_off_epoch 16 of 20 epochs becomes 8 of 10), or a shorter trial would never reach them.
EPOCH_POINTS = ("mixup_off_epoch", "loss_switch_epoch")


def dependent_values(base: TrainConfig, values: dict) -> dict:
    """A trial's values plus the base keys they make meaningless or out of place: mixup_off_epoch goes when the
    trial mixes nothing, and the EPOCH_POINTS scale with a searched `epochs` (unless the trial sets them itself)."""
    out = dict(values)
    merged = {**dataclasses.asdict(base), **values}
    if "mixup_off_epoch" not in values and not (merged["mixup_alpha"] or merged["cutmix_alpha"]):
        out["mixup_off_epoch"] = 0
    epochs = values.get("epochs", base.epochs)
    for key in EPOCH_POINTS:
        point = out.get(key, getattr(base, key))
        if key not in values and point and epochs != base.epochs:
            out[key] = min(epochs - 1, max(1, round(point * epochs / base.epochs)))
    return out


def trial_config(base: TrainConfig, values: dict) -> TrainConfig:
    """`base` with a trial's values (and what they imply: dependent_values), validated. validate() may print a note
    (a warmup clipped to a short run): the resolved value is saved in each run's config.json, so the note is not
    repeated for every trial."""
    with contextlib.redirect_stderr(io.StringIO()):
        return config_from_dict(dependent_values(base, values), TrainConfig, base=base).validate()


# Searched keys that change nothing in some configs, so a trial must not spend a dimension on them there
# (`values` is the base config with the trial's values so far). Their controlling keys are sampled first.
def _flips_inert(values: dict, param) -> bool:
    """Under the photo preset, which always mirrors left-right, `none` trains as `h` (and `v` as `hv`)."""
    choices = param.values if isinstance(param, Choice) else ()
    return values["augment"] == "photo" and len({trained_flips("photo", f) for f in choices}) <= 1


INERT = {
    "flips": _flips_inert,
    "label_smoothing": lambda v, _: "label_smoothing" not in (v["loss"], v["loss2"]),
    "focal_gamma": lambda v, _: "focal" not in (v["loss"], v["loss2"]),
    "momentum": lambda v, _: v["optimizer"] != "sgd",
    "lr_step_epochs": lambda v, _: v["scheduler"] != "step",
    "lr_step_gamma": lambda v, _: v["scheduler"] != "step",
    "plateau_patience_epochs": lambda v, _: v["scheduler"] != "plateau",
    "plateau_factor": lambda v, _: v["scheduler"] != "plateau",
    "lr_min_ratio": lambda v, _: v["scheduler"] not in ("cosine", "onecycle"),
    "mixup_off_epoch": lambda v, _: not (v["mixup_alpha"] or v["cutmix_alpha"]),
    "loss_switch_epoch": lambda v, _: not v["loss2"],
}
CONTROLS = ("augment", "loss", "loss2", "optimizer", "scheduler", "mixup_alpha", "cutmix_alpha")


def sample(trial, params: dict[str, Range | Choice], base: TrainConfig | None = None) -> dict:
    """One value per searched key from an Optuna trial (or FixedTrial), the keys that decide whether others matter
    first; a key that changes nothing given the others (INERT) is not sampled and keeps the base config's value."""
    current = dataclasses.asdict(base or TrainConfig())
    values = {}
    for name in sorted(params, key=lambda k: CONTROLS.index(k) if k in CONTROLS else len(CONTROLS)):
        param = params[name]
        if name in INERT and INERT[name]({**current, **values}, param):
            continue
        if isinstance(param, Choice):
            values[name] = trial.suggest_categorical(name, list(param.values))
        elif param.integer:
            values[name] = trial.suggest_int(name, param.low, param.high, step=param.step or 1, log=param.log)
        else:
            values[name] = trial.suggest_float(name, param.low, param.high, step=param.step, log=param.log)
    return {k: values[k] for k in params if k in values}  # in the file's order, for the reports


def contains(param: Range | Choice, value) -> bool:
    """Whether the sampler could draw `value` (e.g. the base config's own value, to try it first)."""
    if isinstance(param, Choice):
        return value in param.values
    if isinstance(value, bool) or not param.low <= value <= param.high:
        return False
    return param.step is None or abs((value - param.low) / param.step - round((value - param.low) / param.step)) < 1e-9


def space_record(space: SearchSpace) -> dict:
    """The space as plain JSON values, stored with the study so a resumed study can check it is the same."""
    return {"params": {k: dataclasses.asdict(v) if isinstance(v, Range) else list(v.values)
                       for k, v in space.params.items()}, "fixed": space.fixed, "start": space.starts}


def base_config(config_file: str | None, space: SearchSpace, args: dict) -> tuple[TrainConfig, SearchSpace]:
    """The config every trial starts from: defaults < --config file < the space's fixed keys < the TrainConfig
    flags given on the command line. A key set by a flag is fixed, so it leaves the search: (base, space left)."""
    cfg = TrainConfig()
    if config_file:
        cfg = config_from_dict(load_config_file(config_file), TrainConfig, source=config_file)
    cfg = config_from_dict(space.fixed, TrainConfig, source=f"{space.source}: fixed", base=cfg)
    flags = {k: v for k, v in args.items() if k in FIELD_TYPES}  # flag defaults are suppressed: only those given
    if "exp" in flags:
        raise UserError("--exp: tune.py names each trial's runs trial<number>; the tuned config's exp is --name")
    return config_from_dict(flags, TrainConfig, source="command line", base=cfg).validate(), space.without(flags)
