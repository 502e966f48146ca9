"""README.md's examples as tests, read from README.md at test time (so they cannot drift from it).

* Every ```python block runs in its own Python process (a new temporary folder, the hub offline) with
  the smaller settings of its ``# ci:`` markers, and must print exactly the lines the README shows
  (``print(x)  # TEXT`` and ``# prints:`` blocks; conventions in benchmarks/readme_examples.py). A block
  with ``# ci:`` markers prints other figures at its CI settings, so only the form of its lines is
  compared with the README; its full-size figures must be the ones ``python benchmarks/readme_examples.py``
  recorded for the same code in benchmarks/results/readme_examples.json, and what it prints at its CI
  settings must be what that script recorded at those settings (a library change that moves the
  figures fails until the script is rerun and the README updated).
* Every ``accel ...`` command of a ```bash block is parsed by its own command line with ``--help``
  appended (values before it are checked: choices and types), and every option it uses must be in
  that help.

``ACCEL_README_TIMEOUT`` (seconds, default 900) bounds each block.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load_examples():
    spec = importlib.util.spec_from_file_location("readme_examples", ROOT / "benchmarks" / "readme_examples.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


examples = _load_examples()
README = (ROOT / "README.md").read_text()
PYTHON_BLOCKS = examples.python_blocks(README)
SHRUNK = [b for b in PYTHON_BLOCKS if examples.ci_settings(b.code)]
TIMEOUT = float(os.environ.get("ACCEL_README_TIMEOUT", "900"))


def _id(block) -> str:
    return f"README-line-{block.line}"


def _recorded(block):
    """The full-size run of this block's code (comments aside: :func:`run_key`) recorded by
    benchmarks/readme_examples.py, or ``None``."""
    results = examples.RESULTS
    records = json.loads(results.read_text())["blocks"] if results.is_file() else []
    key = examples.run_key(block.code)
    return next((r for r in records if examples.run_key(r["code"]) == key), None)


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=_id)
def test_python_example_prints_what_the_readme_shows(block):
    claims = examples.claimed_output(block.code)
    shrunk = bool(examples.ci_settings(block.code))
    record = _recorded(block) if shrunk else None
    rerun = f"rerun `{examples.COMMAND} --only {block.line}` (it updates {examples.RESULTS.relative_to(ROOT)})"
    if shrunk:  # its figures are the full-size run's: checked before the (long) CI run
        assert record is not None, f"README line {block.line}: no full-size run of this code is recorded; {rerun}"
        assert record["returncode"] == 0, f"README line {block.line}: the recorded full-size run failed; {rerun}"
        problems = examples.output_problems(claims, record["stdout"])
        assert not problems, (f"README line {block.line} shows other figures than its full-size run printed:\n"
                              + "\n".join(problems))
    run = examples.run_python(examples.ci_version(block.code), TIMEOUT)
    assert run.returncode is not None, f"README line {block.line}: still running after {TIMEOUT:.0f} s (killed)"
    assert run.returncode == 0, f"README line {block.line} failed:\n{run.stderr[-4000:]}"
    problems = examples.output_problems(claims, run.stdout, form_only=shrunk)
    assert not problems, f"README line {block.line}:\n" + "\n".join(problems)
    if shrunk:  # the library still computes what was recorded: a change that moves the figures fails here
        assert run.stdout == record.get("ci_stdout"), (
            f"README line {block.line} printed {run.stdout} at its CI settings; the recorded run printed "
            f"{record.get('ci_stdout')}: the figures moved; {rerun} and update the README")


def _shell_commands(text: str) -> list[tuple[int, list[str]]]:
    """``(README line, argv after 'accel')`` of every accel command in the README's ```bash blocks: ``accel``,
    ``.venv/bin/accel`` and ``python -m accel.cli`` (also after ``torchrun ... -m``)."""
    found = []
    for block in examples.readme_blocks(text):
        if block.language not in ("bash", "sh", "shell"):
            continue
        joined = block.code.replace("\\\n", " ")
        for offset, line in enumerate(joined.splitlines()):
            for part in re.split(r"&&|\|\||;|\|", line):
                words = shlex.split(part, comments=True)
                for i, word in enumerate(words):
                    if word == "accel" or word.endswith("/accel"):
                        found.append((block.line + offset, words[i + 1:]))
                        break
                    if word == "-m" and i + 1 < len(words) and words[i + 1] == "accel.cli":
                        found.append((block.line + offset, words[i + 2:]))
                        break
    return found


SHELL = _shell_commands(README)


def test_the_readme_shows_accel_commands():
    assert len(SHELL) >= 5 and len(PYTHON_BLOCKS) >= 4  # the parsers found the README's examples


@pytest.mark.parametrize("command", SHELL, ids=[f"README-line-{line}-{' '.join(argv[:2])}" for line, argv in SHELL])
def test_shell_command_parses_and_its_options_exist(command, capsys):
    from accel.cli import main

    line, argv = command
    with pytest.raises(SystemExit) as exc:
        main(argv + ["--help"])
    out = capsys.readouterr()
    assert exc.value.code == 0, f"README line {line}: `accel {' '.join(argv)}` is refused:\n{out.err}"
    for word in argv:
        if word.startswith("--"):
            option = word.split("=", 1)[0]
            assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", out.out), \
                f"README line {line}: `accel {' '.join(argv)}` uses {option}, which its --help does not list"
