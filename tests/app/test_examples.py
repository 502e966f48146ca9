"""The Generate tab's examples are settings benchmarks/app_examples.py measured, labelled with its figures and verdict."""

import dataclasses
import json
from pathlib import Path

import pytest

from accel.app.examples import EXAMPLES, RESULTS_FILE, Example, example_rows, examples_table
from accel.app.logic import GenerateSettings, validate_generate

REPO = Path(__file__).resolve().parents[2]


def _records():
    data = json.loads((REPO / RESULTS_FILE).read_text())
    return {r["name"]: r for r in data["records"]}  # a later record of the same name replaces an earlier one


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.name for e in EXAMPLES])
def test_each_example_is_a_measured_record(example, models):
    rec = _records()[example.name]
    assert example.kept == rec["kept"]
    row = next(line for line in examples_table().splitlines() if line.startswith(f"| {example.label} |"))
    assert row.endswith("| faster at good quality |" if rec["kept"] else "| not faster at good quality here |")
    assert example.measured in row and len(example.label) <= 60  # Gradio cuts longer labels
    assert rec["settings"] == dataclasses.asdict(example.settings)
    for value, spec in ((rec["speedup"], ".2f"), (rec["cpu_speedup"], ".2f"), (rec["psnr_db"], ".1f"),
                        (rec["ssim"], ".3f")):
        assert f"{value:{spec}}" in example.measured, (value, example.measured)
    low, high = (f"{f(rec['load_1min']):.0f}" for f in (min, max))
    assert example.measured.endswith(f"at load {low}-{high}" if low != high else f"at load {high}")
    validate_generate(example.settings, models)


def test_kept_records_are_faster_at_good_quality():
    """The rule of the script, read back from its output: kept means faster in wall and CPU time, no
    impossible-speedup warning, good PSNR and SSIM."""
    data = json.loads((REPO / RESULTS_FILE).read_text())
    rule = data["rule"]
    for rec in data["records"]:
        good = (min(rec["speedup"], rec["cpu_speedup"]) >= rule["min_speedup"] and rec["psnr_db"] >= rule["min_psnr_db"]
                and rec["ssim"] >= rule["min_ssim"] and not any("exceeds 1 / executed density" in w
                                                                 for w in rec["warnings"]))
        assert rec["kept"] == good, rec["name"]


def test_example_rows_follow_the_page_inputs():
    s = GenerateSettings(model="embedded", prompt="p", height=192, width=128, frames=9, steps=4, seed=7,
                         method="radial", method_params="decay=0.2", dense_steps=1, dense_layers=2, dense_last_steps=3)
    e = Example("x", s, "1.20x")
    assert example_rows([e]) == [["embedded", "p", 192, 128, 9, 4, 7, "radial", "decay=0.2", 1, 2, 3, True]]
    assert e.label == "radial 128x192x9, 4 steps, 1 dense"
    assert examples_table([e]).splitlines()[-1] == ("| radial 128x192x9, 4 steps, 1 dense | `decay=0.2` | 1.20x | "
                                                    "not faster at good quality here |")
    assert len({x.label for x in EXAMPLES}) == len(EXAMPLES)  # the page tells them apart by label
