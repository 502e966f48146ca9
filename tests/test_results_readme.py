"""Every file in benchmarks/results/ names the command that wrote it (benchmarks/results/README.md or, for a
folder, its NOTE.md), and every script or module such a command names exists."""

import importlib.util
import re
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
ROOT = RESULTS.parents[1]
# a command in backticks: python / python3 / .venv/bin/python, accel, or bash
COMMAND = re.compile(r"`((?:\.venv/bin/)?(?:python3?|accel|bash) [^`]+)`")


def _entries(text: str) -> list[str]:
    """README items: each bullet ('- ...') or table row ('| ...') with its continuation lines."""
    items: list[str] = []
    for line in text.splitlines():
        if line.startswith(("- ", "| ")) or not items or not line.strip():
            items.append(line)
        else:
            items[-1] += " " + line.strip()
    return items


def _commands_for(name: str, items: list[str]) -> list[str]:
    pattern = re.compile(rf"`{re.escape(name)}/?`")
    return [c for item in items if pattern.search(item) for c in COMMAND.findall(item)]


def test_every_results_file_names_its_command():
    items = _entries((RESULTS / "README.md").read_text())
    missing = []
    for path in sorted(RESULTS.iterdir()):
        if path.name == "README.md" or path.name.startswith("."):
            continue
        commands = _commands_for(path.name, items)
        if path.is_dir():
            note = path / "NOTE.md"
            commands += COMMAND.findall(note.read_text()) if note.exists() else []
            commands += [line.strip() for line in (note.read_text().splitlines() if note.exists() else [])
                         if re.match(r"\s+(python3?|accel|bash) ", line)]
        if not commands:
            missing.append(path.name)
    assert not missing, f"results without the command that wrote them in benchmarks/results/README.md: {missing}"


def test_the_named_scripts_and_modules_exist():
    text = (RESULTS / "README.md").read_text() + "".join(p.read_text() for p in RESULTS.glob("*/NOTE.md"))
    scripts = set(re.findall(r"\b(benchmarks/[\w/]+\.(?:py|sh))\b", text))
    modules = set(re.findall(r"python3? -m (accel[\w.]*)", text))
    assert scripts and modules
    assert [s for s in sorted(scripts) if not (ROOT / s).is_file()] == []
    assert [m for m in sorted(modules) if importlib.util.find_spec(m) is None] == []


def test_a_file_without_a_command_is_reported():
    items = _entries("- `a.json` — `python benchmarks/a.py --x 1`: a figure\n- `b.json` — measured by hand, 3 dB\n")
    assert _commands_for("a.json", items) == ["python benchmarks/a.py --x 1"]
    assert _commands_for("b.json", items) == []
