"""Run the README's Python examples and record what they print (the README's figures come from here).

``python benchmarks/readme_examples.py`` runs every ```python block of README.md, as written (full
size), each in its own Python process, and writes ``benchmarks/results/readme_examples.json``: per
block its code, the lines it printed, its wall and CPU time, and the machine (CPU count, load before
and after); it says on stderr (and by its exit status) whether the lines are the ones the README
shows. A block with ``# ci:`` markers runs a second time at those settings and those lines are
recorded too (``ci_stdout``). ``tests/test_readme.py`` runs every
block in CI at its ``# ci:`` settings and checks that the README's claimed figures of a marked block are
the ones recorded here for the same code, and that CI prints what was recorded at the CI settings (so
a change of the library that moves the figures fails CI until this script is rerun).

The conventions (also stated in README.md, "The examples run in CI"):

* **Claimed output.** ``print(...)  # TEXT``: that call prints the line TEXT. A statement followed by
  a comment line ``# prints:`` prints the comment lines after it that start with ``#   `` (hash, three
  spaces; the rest of the line is the printed line, further indentation included), e.g. what
  ``describe()`` prints. Everything a block prints must be shown, in order. A shown line ending with
  ``...`` matches any printed line that starts with the text before it.
* **CI settings.** A line ending with ``# ci: NAME=VALUE[, NAME=VALUE]`` runs in CI with each
  ``NAME=<value>`` keyword argument of that line set to ``VALUE``. A block with such a marker prints
  different figures in CI, so CI checks only the *form* of its printed lines (every number may
  differ); its figures are checked against this script's record of the full-size run.

Options: ``--only LINE [LINE ...]`` runs the blocks starting at those README lines and keeps the other
records of the existing JSON; ``--timeout`` per block (seconds); ``--readme``, ``--out``.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import io
import json
import os
import platform
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
RESULTS = ROOT / "benchmarks" / "results" / "readme_examples.json"
COMMAND = "python benchmarks/readme_examples.py"

_FENCE = re.compile(r"^(\s*)```(\S*)\s*$")
_CI_MARKER = re.compile(r"#\s*ci:\s*(?P<settings>[^#]+?)\s*$")
_NUMBER = r"[-+]?(?:\d[\d,]*(?:\.\d*)?(?:[eE][-+]?\d+)?|inf|nan)"


@dataclasses.dataclass(frozen=True)
class Block:
    """One fenced code block of a Markdown file.

    Attributes:
        language: the fence's info string (``"python"``, ``"bash"``, ``""``, ...).
        line: 1-based line number of the block's first code line in the file.
        code: the block's text (indentation of the fence removed), ending with a newline.
    """

    language: str
    line: int
    code: str


def readme_blocks(text: str) -> list[Block]:
    """Every fenced (```) code block of a Markdown text, in order.

    Raises:
        ValueError: a fence that is never closed (naming its line).
    """
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, language, start = m.group(1), m.group(2), i + 1
        j = start
        while j < len(lines) and lines[j].strip() != "```":
            j += 1
        if j == len(lines):
            raise ValueError(f"README line {i + 1}: code fence ``` is never closed")
        body = [line[len(indent):] if line.startswith(indent) else line for line in lines[start:j]]
        blocks.append(Block(language, start + 1, "\n".join(body) + "\n"))
        i = j + 1
    return blocks


def python_blocks(text: str) -> list[Block]:
    """The ```python blocks of a Markdown text."""
    return [b for b in readme_blocks(text) if b.language == "python"]


def _comments(code: str) -> dict[int, str]:
    """``{line: comment text without the leading '#'}`` for every comment of ``code`` (1-based lines)."""
    out = {}
    for tok in tokenize.generate_tokens(io.StringIO(code).readline):
        if tok.type == tokenize.COMMENT:
            out[tok.start[0]] = tok.string[1:]
    return out


def run_key(code: str) -> str:
    """What decides what a block prints: its code without comments and trailing spaces, plus its ``# ci:``
    settings. Records are matched to README blocks by it, so editing a block's shown output (a comment)
    keeps its record, while any change to what runs needs a new run."""
    kept = [tok for tok in tokenize.generate_tokens(io.StringIO(code).readline) if tok.type != tokenize.COMMENT]
    text = tokenize.untokenize(kept)
    lines = [line.rstrip() for line in text.splitlines() if line.strip()]
    return "\n".join(lines) + "\n# ci settings: " + repr(sorted((n, sorted(s.items())) for n, s in ci_settings(code).items()))


def ci_settings(code: str) -> dict[int, dict[str, str]]:
    """``{line: {name: value}}`` of the ``# ci: NAME=VALUE, ...`` markers of a block (1-based lines).

    Raises:
        ValueError: a marker that is not a comma-separated list of ``NAME=VALUE``.
    """
    out = {}
    for line, text in _comments(code).items():
        m = _CI_MARKER.search("#" + text)
        if not m:
            continue
        settings = {}
        for item in m.group("settings").split(","):
            name, sep, value = item.partition("=")
            if not sep or not name.strip().isidentifier() or not value.strip():
                raise ValueError(f"block line {line}: a '# ci:' marker must read NAME=VALUE[, NAME=VALUE], got {text!r}")
            settings[name.strip()] = value.strip()
        out[line] = settings
    return out


def ci_version(code: str) -> str:
    """``code`` with the ``# ci:`` markers applied: on each marked line, every ``NAME=<value>`` keyword
    argument named by the marker gets the marker's value.

    Raises:
        ValueError: a marker naming an argument that its line does not pass exactly once.
    """
    lines = code.split("\n")
    for line, settings in ci_settings(code).items():
        text = lines[line - 1]
        for name, value in settings.items():
            pattern = re.compile(rf"(\b{re.escape(name)}\s*=\s*)([^,)\s#]+)")
            code_part = text[: text.index("#")] if "#" in text else text
            found = pattern.findall(code_part)
            if len(found) != 1:
                raise ValueError(f"block line {line}: the '# ci:' marker sets {name}, which the line passes "
                                 f"{len(found)} times (must be once): {text.strip()!r}")
            text = pattern.sub(lambda m, v=value: m.group(1) + v, text, count=1)
        lines[line - 1] = text
    return "\n".join(lines)


def claimed_output(code: str) -> list[str]:
    """The lines a block claims to print, in order (see the module docstring for the convention).

    Raises:
        ValueError: a ``print(...)`` call whose output is not shown (every printed line must be).
    """
    tree = ast.parse(code)
    comments = _comments(code)
    lines = code.split("\n")
    claims = []
    for stmt in sorted((n for n in ast.walk(tree) if isinstance(n, ast.stmt)), key=lambda n: n.lineno):
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.With, ast.For, ast.While,
                             ast.If, ast.Try)):
            continue  # their inner statements are visited on their own
        own = []
        n = stmt.end_lineno  # 1-based line of the statement's end; lines[n] is the next line
        if n < len(lines) and lines[n].strip() == "# prints:":
            n += 1
            while n < len(lines) and lines[n].lstrip().startswith("#   "):
                own.append(lines[n].lstrip()[4:])
                n += 1
        is_print = (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call)
                    and isinstance(stmt.value.func, ast.Name) and stmt.value.func.id == "print")
        if is_print and not own:
            comment = comments.get(stmt.end_lineno)
            if comment is None or _CI_MARKER.search("#" + comment):
                raise ValueError(f"block line {stmt.lineno}: print(...) without a '# PRINTED TEXT' comment or a "
                                 "'# prints:' block; every printed line must be shown in the README")
            own.append(comment[1:] if comment.startswith(" ") else comment)
        claims += own
    return claims


def line_matches(claim: str, printed: str, *, form_only: bool = False) -> bool:
    """Whether a printed line is the claimed one: equal, or starting with the claim's text before a
    trailing ``...``; with ``form_only``, every number of the claim may be any number."""
    prefix = claim.endswith("...")
    text = claim[:-3] if prefix else claim
    if not form_only:
        return printed.startswith(text) if prefix else printed == text
    pattern = "".join(_NUMBER if re.fullmatch(_NUMBER, part) else re.escape(part)
                      for part in re.split(f"({_NUMBER})", text) if part)
    return re.fullmatch(pattern + (".*" if prefix else ""), printed) is not None


def output_problems(claims: list[str], printed: list[str], *, form_only: bool = False) -> list[str]:
    """Why ``printed`` is not the claimed output (empty when it is): one message per differing line."""
    problems = []
    for i in range(max(len(claims), len(printed))):
        want = claims[i] if i < len(claims) else None
        got = printed[i] if i < len(printed) else None
        if want is None:
            problems.append(f"printed line {i + 1} is not shown in the README: {got!r}")
        elif got is None:
            problems.append(f"the README shows line {i + 1} {want!r}, which was not printed")
        elif not line_matches(want, got, form_only=form_only):
            problems.append(f"line {i + 1}: README shows {want!r}, printed {got!r}"
                            + (" (numbers may differ in CI, the text may not)" if form_only else ""))
    return problems


def example_environment() -> dict:
    """The environment the examples run in: ``PYTHONPATH`` starts with this checkout (so its ``accel`` is
    imported), the Hugging Face hub is offline (the examples download nothing) and ``TRITON_INTERPRET`` is
    removed (a user's shell does not set it; the test suite does)."""
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env["HF_HUB_OFFLINE"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclasses.dataclass
class Run:
    """The result of :func:`run_python`: exit status (``None`` after a timeout), printed lines, stderr,
    wall seconds, CPU seconds (user + system of the process and its children)."""

    returncode: int | None
    stdout: list[str]
    stderr: str
    seconds: float
    cpu_seconds: float | None = None


def run_python(code: str, timeout: float, *, cwd: Path | None = None) -> Run:
    """Run ``code`` as a Python program in a new process (:func:`example_environment`), in ``cwd`` (a new
    temporary folder when ``None``); the whole process group is killed after ``timeout`` seconds."""
    with tempfile.TemporaryDirectory(prefix="readme-example-") as tmp:
        folder = Path(cwd) if cwd is not None else Path(tmp)
        script = Path(tmp) / "example.py"
        script.write_text(code)
        t0 = time.perf_counter()
        usage0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        proc = subprocess.Popen([sys.executable, str(script)], cwd=folder, env=example_environment(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            out, err = proc.communicate(timeout=timeout)
            code_ = proc.returncode
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            code_ = None
        seconds = time.perf_counter() - t0
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (usage.ru_utime - usage0.ru_utime) + (usage.ru_stime - usage0.ru_stime)
    return Run(code_, out.splitlines(), err, seconds, cpu)


def machine() -> dict:
    """CPU count, 1-minute load average and platform, recorded with every timing."""
    return {"cpus": os.cpu_count(), "load_1min": round(os.getloadavg()[0], 2), "platform": platform.platform(),
            "python": platform.python_version()}


def main(argv=None) -> int:
    """Command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--readme", type=Path, default=README)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--only", type=int, nargs="+", default=None, metavar="LINE",
                   help="README lines of the blocks to run (the first code line); the other records are kept")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds per block")
    args = p.parse_args(argv)
    blocks = python_blocks(args.readme.read_text())
    if args.only:
        unknown = set(args.only) - {b.line for b in blocks}
        if unknown:
            p.error(f"--only: no python block starts at README line(s) {sorted(unknown)}; blocks start at "
                    f"{[b.line for b in blocks]}")
    old = json.loads(args.out.read_text()) if args.only and args.out.is_file() else {"blocks": []}
    kept = {run_key(r["code"]): r for r in old.get("blocks", [])}
    records, failed = [], 0
    for block in blocks:
        if args.only and block.line not in args.only:
            if run_key(block.code) in kept:
                records.append(kept[run_key(block.code)])
            continue
        before = machine()
        print(f"README line {block.line}: running ...", file=sys.stderr, flush=True)
        run = run_python(block.code, args.timeout)
        problems = output_problems(claimed_output(block.code), run.stdout)
        ok = run.returncode == 0 and not problems
        failed += not ok
        record = {"line": block.line, "code": block.code, "stdout": run.stdout, "returncode": run.returncode,
                  "seconds": round(run.seconds, 2),
                  "cpu_seconds": round(run.cpu_seconds, 2),
                  "machine_before": before, "machine_after": machine(),
                  **({"stderr_tail": run.stderr[-2000:]} if run.returncode != 0 else {})}
        print(f"README line {block.line}: {run.seconds:.1f} s, " + ("claims hold" if ok else "FAILED: " +
              "; ".join(problems or [f"exit status {run.returncode}"])), file=sys.stderr, flush=True)
        if ci_settings(block.code):  # what CI prints at the marked settings, which CI compares with its own run
            ci = run_python(ci_version(block.code), args.timeout)
            ok_ci = ci.returncode == 0 and not output_problems(claimed_output(block.code), ci.stdout, form_only=True)
            failed += not ok_ci
            record.update(ci_stdout=ci.stdout, ci_returncode=ci.returncode, ci_seconds=round(ci.seconds, 2),
                          ci_cpu_seconds=round(ci.cpu_seconds, 2), ci_machine_after=machine())
            print(f"README line {block.line} at its CI settings: {ci.seconds:.1f} s", file=sys.stderr, flush=True)
        records.append(record)
    args.out.write_text(json.dumps({"command": COMMAND + (f" --only {' '.join(map(str, args.only))}" if args.only else ""),
                                    "readme": str(args.readme.relative_to(ROOT)) if args.readme.is_relative_to(ROOT)
                                    else str(args.readme), "blocks": records}, indent=1) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
