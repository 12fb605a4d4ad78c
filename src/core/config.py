"""The typed run configuration: defaults < config file (JSON/YAML) < command-line flags.

Every field becomes a `--kebab-case` flag. Unknown keys in a config file are errors, so a typo can
never silently fall back to a default.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import functools
import json
import re
import sys
import typing
from pathlib import Path

import yaml

from src.core.errors import UserError

INF = float("inf")

def check_fields(cfg) -> None:
    """Check a config dataclass's values against its CHOICES and RANGES; raises UserError naming the field."""
    for name, allowed in cfg.CHOICES.items():
        if getattr(cfg, name) not in allowed:
            raise UserError(f"config: {name}={getattr(cfg, name)!r} is not one of {list(allowed)}")
    for name, (low, high, brackets) in cfg.RANGES.items():
        value = getattr(cfg, name)
        above = value >= low if brackets[0] == "[" else value > low
        below = value <= high if brackets[1] == "]" else value < high
        if not (above and below):  # NaN fails both
            raise UserError(f"config: {name} must be in {brackets[0]}{low}, {high}{brackets[1]}, got {value}")


def clip_warmup(cfg) -> None:
    """Clip a warmup that would fill the whole run (e.g. `--epochs 1` with the default 1-epoch warmup, a
    natural smoke run) to half the run, and say so in one line (on stderr: stdout may be a --print-config)."""
    if cfg.lr_warmup_epochs >= cfg.epochs:
        clipped = cfg.epochs / 2
        print(f"note: lr_warmup_epochs {cfg.lr_warmup_epochs:g} is not shorter than epochs {cfg.epochs}; "
              f"warming up for {clipped:g} epochs instead", file=sys.stderr)
        cfg.lr_warmup_epochs = clipped


def _coerce(name: str, value, kind: type, source: str):
    """Convert a config-file value to the field's type or raise a UserError naming it."""
    if kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif kind is str:
        if isinstance(value, str):
            return value
    raise UserError(f"{source}: key {name!r} must be {kind.__name__}, got {value!r}")


@functools.cache
def _field_types(cls: type) -> dict[str, type]:
    # Once per class: resolving the hints costs ~40 ms per call, and a call per field made every config ~3 s.
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def config_from_dict(values: dict, cls: type, source: str = "config", base=None):
    """Build a config of dataclass `cls` from a mapping; unknown keys and wrong types are errors."""
    types = _field_types(cls)
    merged = dataclasses.asdict(base or cls())
    values = upgraded(values, cls)
    for name, value in values.items():
        if name not in types:
            hint = difflib.get_close_matches(name, list(types), n=1)
            extra = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise UserError(f"{source}: unknown key {name!r}{extra}")
        merged[name] = _coerce(name, value, types[name], source)
    return cls(**merged)


def upgraded(values: dict, cls: type) -> dict:
    """`values` with keys written by older versions in today's form (the class's `upgrade`, where it has one)."""
    upgrade = getattr(cls, "upgrade", None)
    return upgrade(values) if upgrade else values


class YamlLoader(yaml.SafeLoader):
    """YAML with YAML 1.2's booleans: only true / false. YAML 1.1 also reads on / off / yes / no as booleans, which
    would turn `amp: on` into True."""


YamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
YamlLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                 list("tTfF"))


def load_config_file(path: str | Path) -> dict:
    """Read a JSON or YAML mapping of config keys."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: config file not found")
    try:
        text = path.read_text()
        values = json.loads(text) if path.suffix == ".json" else yaml.load(text, Loader=YamlLoader)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        raise UserError(f"{path}: cannot parse config ({str(err).splitlines()[0]})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: cannot read config ({err})") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise UserError(f"{path}: a config file must hold a mapping of key: value")
    return values


def add_config_flags(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add one flag per field of config dataclass `cls`; defaults are suppressed so we know what the user set."""
    types = _field_types(cls)
    group = parser.add_argument_group("run config (also settable in --config FILE)")
    group.add_argument("--config", default=None, help="JSON or YAML file with config keys")
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        kind = types[f.name]
        # The flag's own default is SUPPRESS (to see what the user set), so the help names the field's default;
        # an empty one says nothing. argparse %-formats help: a bare % ("±10 %") would crash --help.
        note = "" if f.default == "" else f" (default: {f.default!r})"
        helptext = f"{cls.HELP.get(f.name, '')}{note}".replace("%", "%%")
        if kind is bool:
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction,
                               default=argparse.SUPPRESS, help=helptext)
        else:
            group.add_argument(flag, dest=f.name, type=kind, default=argparse.SUPPRESS,
                               choices=cls.CHOICES.get(f.name), help=helptext)


def config_from_args(args: argparse.Namespace, cls: type):
    """Resolve defaults < --config file < explicit flags into a validated config of dataclass `cls`."""
    cfg = cls()
    if getattr(args, "config", None):
        cfg = config_from_dict(load_config_file(args.config), source=args.config, cls=cls)
    flags = {k: v for k, v in vars(args).items() if k in _field_types(cls)}
    return config_from_dict(flags, source="command line", base=cfg, cls=cls).validate()


def config_to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def config_differences(a: dict, b: dict, cls: type) -> list[str]:
    """Keys where two saved configs would train differently. A key one of them lacks (written by older or
    newer code) counts at its default, so adding a config key does not orphan existing runs."""
    defaults = dataclasses.asdict(cls())
    a, b = upgraded(a, cls), upgraded(b, cls)
    logging_only = getattr(cls, "LOGGING_ONLY", ())  # keys that change what is logged, not what is learned
    return [k for k in dict.fromkeys([*a, *b])
            if k not in logging_only and a.get(k, defaults.get(k)) != b.get(k, defaults.get(k))]
