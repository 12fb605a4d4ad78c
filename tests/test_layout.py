"""The layout is a contract: one package per area, imports pointing one way, one script per package."""
from __future__ import annotations

import ast
from pathlib import Path

from helpers import REPO

# core <- data <- train <- infer <- the rest; packages on the same level never import each other.
LEVELS = {"core": 0, "data": 1, "train": 2, "infer": 3,
          "synthetic": 4, "pretrain": 4, "pseudo": 4, "labels": 4, "compare": 4, "tune": 4}
# Each script's own package: where its logic lives.
SCRIPT_PACKAGES = {
    "train.py": "train", "infer.py": "infer", "score.py": "infer", "gen_synthetic.py": "synthetic",
    "pretrain.py": "pretrain", "pseudo_label.py": "pseudo", "make_folds.py": "data", "prepare_demo.py": "data",
    "eda.py": "data", "label_errors.py": "labels", "auto_label.py": "labels", "import_reviews.py": "labels",
    "active_learning.py": "labels", "runs.py": "compare", "ablate.py": "compare", "tune.py": "tune",
}


def imported_modules(path: Path) -> set[str]:
    """Every src.* module a file imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("src."):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("src.")}
    return found


def module_name(path: Path, root: Path) -> str:
    return ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")


def import_graph(root: Path) -> dict[str, set[str]]:
    return {module_name(p, root): imported_modules(p) for p in sorted((root / "src").rglob("*.py"))}


def layering_errors(graph: dict[str, set[str]]) -> list[str]:
    """Imports that point to a package of the same or a higher level (or to an unknown package)."""
    errors = []
    for module, targets in graph.items():
        parts = module.split(".")
        if len(parts) < 2 or parts[1] not in LEVELS:
            if len(parts) >= 2:
                errors.append(f"{module}: package {parts[1]!r} has no level in LEVELS")
            continue
        package = parts[1]
        for target in sorted(targets):
            other = target.split(".")[1]
            if other == package:
                continue
            if other not in LEVELS or LEVELS[other] >= LEVELS[package]:
                errors.append(f"{module} imports {target} ({package} may only import lower levels)")
    return errors


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Module import cycles (depth-first search; each cycle reported once by its first module)."""
    found, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                found.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state and nxt in graph:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    return found


def test_every_package_has_a_level_and_a_docstring():
    packages = sorted(p.parent.name for p in (REPO / "src").glob("*/__init__.py"))
    assert packages and set(packages) <= set(LEVELS)
    for name in packages:
        doc = ast.get_docstring(ast.parse((REPO / "src" / name / "__init__.py").read_text()))
        assert doc, f"src/{name}/__init__.py needs a docstring: what lives here, which scripts use it"
    assert not list((REPO / "src").glob("*.py")) or [p.name for p in (REPO / "src").glob("*.py")] == ["__init__.py"]


def test_imports_point_one_way_and_form_no_cycle():
    graph = import_graph(REPO)
    assert not layering_errors(graph), "\n".join(layering_errors(graph))
    assert not cycles(graph), cycles(graph)


def test_the_checks_catch_an_upward_import_and_a_cycle(tmp_path):
    for name, text in {"core/a.py": "from src.train.b import x\n", "train/b.py": "from src.train.c import y\n",
                       "train/c.py": "from src.train.b import x\n"}.items():
        path = tmp_path / "src" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    graph = import_graph(tmp_path)
    assert layering_errors(graph) == ["src.core.a imports src.train.b (core may only import lower levels)"]
    assert cycles(graph) == [["src.train.b", "src.train.c", "src.train.b"]]


def test_each_script_calls_into_its_own_package():
    scripts = sorted(p.name for p in REPO.glob("*.py"))
    assert set(scripts) == set(SCRIPT_PACKAGES), "a new script needs its package in SCRIPT_PACKAGES"
    for script, package in SCRIPT_PACKAGES.items():
        used = {m.split(".")[1] for m in imported_modules(REPO / script)}
        assert package in used, f"{script} should call into src/{package}/"
        higher = [p for p in used if LEVELS[p] > LEVELS[package]]
        assert not higher, f"{script} reaches into {higher}, above its package {package}"
