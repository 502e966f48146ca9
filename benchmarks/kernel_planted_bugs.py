"""Do the kernel's sub-tile tests catch offset bugs? Plant one bug at a time in a copy of the checkout and run them.

    python benchmarks/kernel_planted_bugs.py --out benchmarks/results/kernel_planted_bugs.json [--only B3 B7]

Each planted bug is one textual change to ``accel/kernels/triton_fwd.py``: a row / column / word offset of a
program tile inside the layout's block computed wrongly, the kind of bug only program tiles smaller than the
layout's blocks (``BLOCK_M < Q_BLOCK``, ``BLOCK_N < KV_BLOCK``) can show. For each, ``accel/``, ``tests/``
and ``pyproject.toml`` are copied into a temporary directory, the change is applied there (the checkout is
never modified), and ``tests/kernels/test_kernel_kinds.py::test_triton_program_tiles_smaller_than_layout_blocks``
runs under the Triton interpreter. The unmodified copy runs first (it must pass). A bug counts as caught
when the run fails (a test failure, or the interpreted kernel crashing on an out-of-bounds read). The
JSON is rewritten after every bug; the exit status is 1 when a bug was not caught or the baseline failed.
CPU only; about 1-3 minutes per bug on a 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
KERNEL = "accel/kernels/triton_fwd.py"
TESTS = "tests/kernels/test_kernel_kinds.py::test_triton_program_tiles_smaller_than_layout_blocks"
_START = "start_n = tl.multiple_of(kb * KV_BLOCK + (it % SUB_N) * BLOCK_N, BLOCK_N)\n"
_PART_START = _START + "                        if PART_KIND == 1:"  # the partial loop's (its indentation)
_FULL_START = _START + "            acc, l_i, m_i = _attend("  # the full loop's

#: (id, what is wrong, exact text in triton_fwd.py, its planted replacement)
BUGS = [
    ("B1", "partial blocks: tile-bit column without the key sub-tile's offset",
     "col_in_block = (it % SUB_N) * BLOCK_N + tl.arange(0, BLOCK_N)", "col_in_block = tl.arange(0, BLOCK_N)"),
    ("B2", "partial blocks: bit-packed word index without the key sub-tile's offset",
     "word0 = ((it % SUB_N) * BLOCK_N) // 32", "word0 = 0"),
    ("B3", "partial blocks: key sub-tile start without its offset in the block",
     _PART_START, _PART_START.replace(" + (it % SUB_N) * BLOCK_N", "")),
    ("B4", "full blocks: key sub-tile start without its offset in the block",
     _FULL_START, _FULL_START.replace(" + (it % SUB_N) * BLOCK_N", "")),
    ("B5", "partial blocks: tile rows without the query sub-tile's offset",
     "row_in_block = sub * BLOCK_M + tl.arange(0, BLOCK_M)", "row_in_block = tl.arange(0, BLOCK_M)"),
    ("B6", "query sub-tile start scaled by BLOCK_N instead of BLOCK_M",
     "start_m = qb * Q_BLOCK + sub * BLOCK_M", "start_m = qb * Q_BLOCK + sub * BLOCK_N"),
    ("B7", "full blocks: block slot and sub-tile index swapped",
     "kb = tl.load(full_row + (it // SUB_N) * stride_fic)", "kb = tl.load(full_row + (it % SUB_N) * stride_fic)"),
    ("B8", "persistent grid: stops after num_programs tiles",
     "tile_end = total_tiles", "tile_end = num_programs"),
    ("B9", "analytic predicates: key coordinates of the block's first sub-tile for every sub-tile",
     "kl = tl.minimum(tl.maximum(cols - mk_start, 0), mk_n - 1)",
     "kl = tl.minimum(tl.maximum(cols - col_in_block + tl.arange(0, BLOCK_N) - mk_start, 0), mk_n - 1)"),
    ("B10", "key padding tested on the column inside the block instead of the key position",
     "col_ok = col_ok & ((cols < pad_lo) | (cols >= pad_hi))",
     "col_ok = col_ok & ((col_in_block < pad_lo) | (col_in_block >= pad_hi))"),
]


def planted_source(source: str, old: str, new: str) -> str:
    """``source`` with the one occurrence of ``old`` replaced by ``new``; ValueError unless it occurs once."""
    if source.count(old) != 1:
        raise ValueError(f"the planted change's text occurs {source.count(old)} times in {KERNEL}, not once: {old!r}")
    return source.replace(old, new)


def run_tests(copy: pathlib.Path) -> dict:
    """Run the sub-tile tests in ``copy``; returns rc, the failed test ids, pytest's last line and seconds."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACCEL_", "TRITON_"))}
    env.update(PYTHONPATH=str(copy), TRITON_INTERPRET="1", ACCEL_TUNING_CACHE=str(copy / "tuning.json"))
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rf", TESTS],
                       cwd=copy, env=env, capture_output=True, text=True)
    lines = p.stdout.strip().splitlines()
    failed = sorted({line.split("::")[-1].split(" ")[0] for line in lines if line.startswith("FAILED")})
    progress = "".join(m.group(1) for m in map(re.compile(r"([.FEsx]+)\s*(\[\s*\d+%\])?$").match, lines) if m)
    return {"rc": p.returncode, "failed": failed, "failed_before_crash": progress.count("F") if p.returncode < 0 else None,
            "last_line": lines[-1] if lines else p.stderr.strip()[-200:], "seconds": round(time.monotonic() - t0, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="kernel_planted_bugs.json", help="JSON file, rewritten after every bug")
    parser.add_argument("--only", nargs="*", default=None, help="bug ids to plant (default: all)")
    args = parser.parse_args(argv)
    known = [b[0] for b in BUGS]
    chosen = args.only or known
    unknown = sorted(set(chosen) - set(known))
    if unknown:
        parser.error(f"--only: unknown bug ids {unknown}; known: {known}")
    source = (ROOT / KERNEL).read_text()
    out = pathlib.Path(args.out)
    report = {"tests": TESTS, "python": sys.version.split()[0], "loadavg_start": os.getloadavg(), "baseline": None,
              "bugs": []}
    with tempfile.TemporaryDirectory(prefix="accel-planted-") as tmp:
        copy = pathlib.Path(tmp)
        for name in ("accel", "tests"):
            shutil.copytree(ROOT / name, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy2(ROOT / "pyproject.toml", copy / "pyproject.toml")
        report["baseline"] = run_tests(copy)
        ok = report["baseline"]["rc"] == 0
        print(f"baseline (no bug): {report['baseline']['last_line']}", flush=True)
        for bug_id, what, old, new in BUGS:
            if bug_id not in chosen:
                continue
            (copy / KERNEL).write_text(planted_source(source, old, new))
            result = run_tests(copy)
            caught = result["rc"] != 0
            ok &= caught
            report["bugs"].append({"id": bug_id, "what": what, "caught": caught, **result})
            report["loadavg_end"] = os.getloadavg()
            out.write_text(json.dumps(report, indent=1) + "\n")
            print(f"{bug_id} {'caught' if caught else 'NOT CAUGHT'}: {what} -- {result['last_line']}", flush=True)
            (copy / KERNEL).write_text(source)
    out.write_text(json.dumps(report, indent=1) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
