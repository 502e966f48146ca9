"""``python -m accel.patterns.<name>`` draws the pattern's token mask and block map, as the docstrings say.

References: the independent brute-force rules of tests/patterns/reference.py, and block kinds worked out
here from that mask (all allowed in bounds -> ``#``, some -> ``+``, none -> ``.``).
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from . import radial_release
from . import reference as ref

ROOT = Path(__file__).resolve().parents[2]


def _kinds(mask, block):
    n = len(mask)
    nb = -(-n // block)
    rows = []
    for qi in range(nb):
        line = ""
        for kj in range(nb):
            cells = [mask[i][j] for i in range(qi * block, min(n, qi * block + block))
                     for j in range(kj * block, min(n, kj * block + block))]
            line += "#" if all(cells) else "+" if any(cells) else "."
        rows.append(line)
    return rows


def _run(module, *args):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-W", "error::RuntimeWarning", "-m", module, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.splitlines()


@pytest.mark.parametrize("module, args, mask, granularity_block", [
    ("accel.patterns.neighborhood", ["--grid", "1", "6", "8", "--window", "-1", "3", "5", "--stride", "1", "1", "2"],
     ref.natten_mask((1, 6, 8), (-1, 3, 5), (1, 1, 2), (1, 1, 1), (False, False, False)), False),
    ("accel.patterns.clear_local", ["--grid", "2", "5", "5", "--radius", "2", "--radius-t", "1"],
     ref.clear_mask((2, 5, 5), 2, 1), False),
    ("accel.patterns.radial", ["--grid", "8", "2", "2", "--decay", "1", "--block", "16", "--sink", "--granularity",
                               "cover"],
     ref.radial_mask((8, 2, 2), 1, 16, True), True),
])
def test_each_pattern_module_draws_its_mask(module, args, mask, granularity_block):
    out = _run(module, *args)
    n = len(mask)
    start = out.index("token mask (row-major; rows = queries, columns = keys):") + 1
    assert out[start:start + n] == ["".join("#" if a else "." for a in row) for row in mask]
    header = [i for i, line in enumerate(out) if line.startswith("block map (row-major, blocks of 16;")]
    assert len(header) == 1
    if granularity_block:  # Radial's "cover" layout keeps whole blocks: every visited block is full
        mask = ref.round_up_to_blocks(mask, 16)
    assert out[header[0] + 1:] == _kinds(mask, 16)


def test_draw_module_still_takes_the_pattern_name():
    out = _run("accel.patterns.draw", "clear_local", "--grid", "1", "3", "3", "--radius", "1.5")
    mask = ref.clear_mask((1, 3, 3), 1.5, None)
    start = out.index("token mask (row-major; rows = queries, columns = keys):") + 1
    assert out[start:start + 9] == ["".join("#" if a else "." for a in row) for row in mask]


def test_radial_draws_the_release_block_selection_by_default():
    out = _run("accel.patterns.radial", "--grid", "6", "8", "16", "--decay", "1.3", "--block", "64", "--sink")
    blocks = radial_release.block_mask((6, 8, 16), 1.3, 64, True)
    header = [i for i, line in enumerate(out) if line.startswith("block map (row-major, blocks of 64;")]
    assert out[header[0] + 1:] == ["".join("#" if b else "." for b in row) for row in blocks.tolist()]
