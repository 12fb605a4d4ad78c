"""The README is the front door and docs/ the reference: both must stay in step with the code. Every config
key is documented with its current default, every flag a script's --help prints is documented in that
script's section of docs/reference.md, the README stays short, and every link resolves."""
from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest

from src.pretrain.config import PretrainConfig
from src.synthetic.config import GenConfig
from src.train.config import TrainConfig

from helpers import REPO

README = REPO / "README.md"
DOCS = sorted((REPO / "docs").glob("*.md"))
REFERENCE = REPO / "docs" / "reference.md"
README_MAX_LINES = 250
# Every top-level .py file is a script (entry points live there and nowhere else), so a new one is checked
# without anyone remembering to add it here.
SCRIPTS = sorted(path.name for path in REPO.glob("*.py"))
# tune.py takes every TrainConfig key as a flag too (its base config): those are documented in train.py's key table.
CONFIG_OF_SCRIPT = {"train.py": TrainConfig, "gen_synthetic.py": GenConfig, "pretrain.py": PretrainConfig,
                    "tune.py": TrainConfig}
HEADING = re.compile(r"(#{1,6})\s+(.+?)\s*#*\s*$")
FENCE = re.compile(r"\s*(```|~~~)")


def outside_code_blocks(lines: list[str]) -> list[tuple[int, str]]:
    """(index, line) of every Markdown line outside fenced code blocks: a `# comment` in a bash block is
    not a heading, and a link in one is not a link."""
    kept, fenced = [], False
    for index, line in enumerate(lines):
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            kept.append((index, line))
    return kept


def headings(lines: list[str]) -> list[tuple[int, int, str]]:
    """(line index, level, title) of every Markdown heading."""
    found = []
    for index, line in outside_code_blocks(lines):
        match = HEADING.match(line)
        if match:
            found.append((index, len(match.group(1)), match.group(2)))
    return found


def github_slug(title: str) -> str:
    """GitHub's heading anchor: lowercase, punctuation dropped except '-' and '_', spaces become '-'."""
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor GitHub gives the headings of a Markdown file (a repeated title gets -1, -2, ...)."""
    found, repeats = set(), {}
    for _, _, title in headings(path.read_text().splitlines()):
        slug = github_slug(title)
        found.add(f"{slug}-{repeats[slug]}" if slug in repeats else slug)
        repeats[slug] = repeats.get(slug, 0) + 1
    return found


def links(path: Path) -> list[str]:
    """Targets of the Markdown links and images in a file (inline code and code blocks are not links)."""
    targets = []
    for _, line in outside_code_blocks(path.read_text().splitlines()):
        line = re.sub(r"`[^`]*`", "", line)
        targets += re.findall(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", line)
    return targets


def section(path: Path, name: str) -> str:
    """The part of a Markdown file under the first heading that mentions `name`, down to the next heading
    of the same or a higher level ('' when no heading mentions it)."""
    lines = path.read_text().splitlines()
    found = headings(lines)
    for position, (start, level, title) in enumerate(found):
        if name in title:
            end = next((index for index, lvl, _ in found[position + 1:] if lvl <= level), len(lines))
            return "\n".join(lines[start:end])
    return ""


def option_flags(help_text: str) -> set[str]:
    """The long flags on argparse's option lines. The usage block and the description come first and are
    skipped, and an option line starts two spaces in with `--x` or `-x, --x`, so a flag quoted in prose
    (`torchrun --nproc-per-node N`) or in a wrapped help text does not count."""
    flags, in_arguments = set(), False
    for line in help_text.splitlines():
        if line in ("options:", "optional arguments:", "positional arguments:"):
            in_arguments = True
        elif in_arguments and re.match(r" {2}(-\w, )?--\w", line):
            invocation = line.strip().split("  ")[0]
            flags |= set(re.findall(r"--[a-z][a-z0-9-]*", invocation))
    return flags - {"--help"}


def documented(flag: str, text: str) -> bool:
    """A flag counts as documented where a code span starts with it: `--fold`, `--config FILE`."""
    return re.search(rf"`{re.escape(flag)}[` ]", text) is not None


def test_github_slugs_and_option_lines_are_parsed_as_github_and_argparse_do():
    assert github_slug("Does synthetic data help? (`configs/ablations/synthetic.yaml`, measured)") == \
        "does-synthetic-data-help-configsablationssyntheticyaml-measured"
    assert github_slug("`make_folds.py`: cross-validation folds") == "make_foldspy-cross-validation-folds"
    help_text = ("usage: x.py [-h] [--fold FOLD]\n\nData-parallel: torchrun --nproc-per-node N x.py\n"
                 "  --indented-prose in the description\n\noptions:\n"
                 "  -h, --help   show this help message and exit\n  --fold FOLD  fold index; see\n"
                 "               --other-flag in the help text\n  --amp, --no-amp  mixed precision\n"
                 "  --labels-per-class LABELS_PER_CLASS\n               wrapped help\n")
    assert option_flags(help_text) == {"--fold", "--amp", "--no-amp", "--labels-per-class"}


def test_readme_is_the_front_door_of_at_most_250_lines():
    lines = len(README.read_text().splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move reference material to docs/"


@pytest.mark.parametrize("cls", [TrainConfig, GenConfig, PretrainConfig], ids=lambda cls: cls.__name__)
def test_every_config_key_is_documented_with_its_current_default(cls):
    script = next(name for name, config in CONFIG_OF_SCRIPT.items() if config is cls)
    text = section(REFERENCE, f"`{script}`")
    assert text, f"docs/reference.md has no section whose heading names `{script}`"
    stale = []
    for field in dataclasses.fields(cls):
        default = f"`{field.default}`" if field.default != "" else "(empty)"
        if f"| `{field.name}` | {default} |" not in text:
            stale.append(f"| `{field.name}` | {default} |")
    assert not stale, f"docs/reference.md, section `{script}`: config table is stale, expected rows: {stale}"


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_flag_of_the_scripts_help_is_in_its_reference_section(script):
    proc = subprocess.run([sys.executable, str(REPO / script), "--help"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, f"{script} --help exited {proc.returncode}:\n{proc.stderr}"
    flags = option_flags(proc.stdout)
    assert flags, f"{script} --help lists no flags; the option-line parser no longer matches argparse"
    text = " ".join(proc.stdout.split())
    for noise in ("(default: None)", "(default: '')", "(default: ) "):  # defaults that say nothing
        assert noise not in text, f"{script} --help shows {noise}"
    assert not re.search(r"\(default[^()]*\) \(default", text), f"{script} --help names a default twice"
    if script in CONFIG_OF_SCRIPT:  # config keys are documented in the key tables, by their key name
        keys = {field.name for field in dataclasses.fields(CONFIG_OF_SCRIPT[script])}
        flags = {flag for flag in flags if flag[2:].replace("-", "_").removeprefix("no_") not in keys}
    text = section(REFERENCE, f"`{script}`")
    assert text, f"docs/reference.md has no section whose heading names `{script}`"
    missing = sorted(flag for flag in flags if not documented(flag, text))
    assert not missing, f"{script}: flags missing from its section of docs/reference.md: {missing}"


def test_the_readme_names_every_script():
    text = README.read_text()
    missing = [script for script in SCRIPTS if f"`{script}`" not in text]
    assert not missing, f"README.md's script table lacks {missing}"


def test_every_relative_link_and_anchor_resolves():
    broken, checked = [], 0
    for doc in [README, *DOCS]:
        for target in links(doc):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ... are not checked offline
                continue
            checked += 1
            file_part, _, anchor = target.partition("#")
            path = (doc.parent / file_part).resolve() if file_part else doc
            where = f"{doc.relative_to(REPO)}: ({target})"
            if not path.exists():
                broken.append(f"{where} no such file")
            elif anchor and path.suffix == ".md" and anchor not in anchors(path):
                broken.append(f"{where} no heading with that anchor in {path.relative_to(REPO)}")
    assert checked, "no relative links found: the link parser no longer matches the Markdown"
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_ci_runs_the_readme_test_command():
    ci_commands = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()
                   if not line.lstrip().startswith("#")]
    assert "make test" in ci_commands, ".ci/run must run `make test`"
    tests_section = section(README, "Tests")
    assert re.search(r"^make test(\s|$)", tests_section, re.M), "README's Tests section must give `make test`"
