import pytest

import accel
from accel.render.density import effective_density


class _FixedDensity:
    """A stand-in static method whose per-call density is 0.25 at any layout."""

    def describe(self, layout, file=None):
        return {"density": 0.25}


def test_schedule_average_by_hand():
    schedule = accel.Schedule(dense_steps=1, dense_layers=1)
    # 4 steps x 3 layers = 12 calls: step 0 dense in all 3 layers, layer 0 dense in steps 1-3 -> 6 dense calls
    assert effective_density(_FixedDensity(), schedule, "layout", 4, 3) == pytest.approx((6 + 6 * 0.25) / 12)
    assert effective_density(_FixedDensity(), None, "layout", 4, 3) == 0.25
    assert effective_density(None, None, None, 4, 3) == 1.0
    assert effective_density(accel.Dense(), schedule, None, 4, 3) == 1.0
    assert effective_density(_FixedDensity(), None, None, 4, 3) is None  # no layout recorded
    assert effective_density(accel.Agent(), None, "layout", 4, 3) is None  # dynamic: not measured


def test_render_records_the_density_of_the_recorded_grid(tmp_path):
    """The embedded model at 64x64x9 has a 5 x 8 x 8 token grid (VAE 4x spatial / 2x temporal, patch 2)."""
    import json

    from accel.cli import render as command

    prompts = tmp_path / "p.txt"
    prompts.write_text("a red circle moving left\n")
    out = tmp_path / "o"
    assert command.main(["--model", "embedded", "--prompts", str(prompts), "--out", str(out), "--height", "64",
                         "--width", "64", "--frames", "9", "--steps", "2", "--method", "neighborhood",
                         "--method-arg", "window=3,3,3", "--method-arg", "block_size=64",
                         "--schedule", "dense_steps=1", "--no-progress"]) == 0
    (record,) = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    from tests.eval.brute_density import brute_force_density

    # Wan's self-attention has no text tokens: the call's density is the video x video one, from the brute-force rule
    sparse = brute_force_density(accel.Neighborhood(window=(3, 3, 3), block_size=64), (5, 8, 8))
    assert sparse < 1.0
    assert record["density"] == pytest.approx((1.0 + sparse) / 2)  # step 0 of 2 dense
