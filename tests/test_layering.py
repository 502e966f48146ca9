"""The import layering of accel: a package imports only from the packages below it.

Every ``import`` / ``from ... import`` of every module under ``accel/`` is read with :mod:`ast`, including
imports inside functions (lazy imports count: they run too), resolved to the accel package it names and
compared with :data:`LAYERS`. ``import accel`` (the lazy top-level facade, which serves names from every
layer) is allowed only in the top layer.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: accel's packages (and top-level modules), lowest first.
LAYERS = ["kernels", "grid", "schedule", "patterns", "methods", "processors", "control", "editing", "embedded",
          "pipelines", "eval", "render", "app", "cli"]


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, root: Path = ROOT) -> list[tuple[int, str]]:
    """``(line, absolute module name)`` of every import statement in the file at ``path`` (a module of the
    repository at ``root``), at any depth."""
    name = _module_name(path, root)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            out.append((node.lineno, module))
    return out


def layer_of(module: str) -> str | None:
    """The accel layer a module belongs to (``"accel"`` for the top-level package), or ``None`` outside accel."""
    parts = module.split(".")
    if parts[0] != "accel":
        return None
    return parts[1] if len(parts) > 1 else "accel"


def violations(files, root: Path = ROOT) -> list[str]:
    """``path:line: A imports B`` for every import of a higher layer (or of ``accel`` below the top layer)."""
    rank = {name: i for i, name in enumerate(LAYERS)}
    rank["accel"] = len(LAYERS) - 1
    found = []
    for path in files:
        own = layer_of(_module_name(path, root))
        if own == "accel":  # the facade itself
            continue
        if own not in rank:
            found.append(f"{path.relative_to(root)}: {own} is not a known layer")
            continue
        for line, module in imported_modules(path, root):
            other = layer_of(module)
            if other is None or other == own:
                continue
            if other not in rank:
                found.append(f"{path.relative_to(root)}:{line}: {own} imports {module} (not a known layer)")
            elif rank[other] > rank[own]:
                found.append(f"{path.relative_to(root)}:{line}: {own} imports {module}")
    return found


def _accel_files():
    return sorted((ROOT / "accel").rglob("*.py"))


def test_every_package_is_a_known_layer():
    tops = {p.name if p.is_dir() else p.stem for p in (ROOT / "accel").iterdir()
            if (p.is_dir() and (p / "__init__.py").exists()) or (p.suffix == ".py" and p.name != "__init__.py")}
    assert tops == set(LAYERS)


def test_no_package_imports_a_package_above_it():
    assert violations(_accel_files()) == []


@pytest.mark.parametrize("source, expected", [
    ("from accel.methods.base import AttentionMethod\n", ["patterns imports accel.methods.base"]),
    ("def f():\n    from accel.processors import apply\n", ["patterns imports accel.processors"]),
    ("import accel\n", ["patterns imports accel"]),
    ("from ..methods import static\n", ["patterns imports accel.methods"]),
    ("from accel.kernels import BlockLayout\nfrom . import blocks\n", []),
])
def test_the_check_finds_planted_violations(tmp_path, source, expected):
    """The checker on a planted module of accel/patterns/ (top-level and lazy imports, relative imports)."""
    planted = tmp_path / "accel" / "patterns" / "planted.py"
    planted.parent.mkdir(parents=True)
    planted.write_text(source)
    found = violations([planted], root=tmp_path)
    assert [f.split(": ", 1)[1] for f in found] == expected
