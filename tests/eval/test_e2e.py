"""End-to-end run on a tiny pipeline: a complete, self-consistent report directory; clear errors."""

import json
import math

import pytest

import accel
from accel.eval import e2e
from accel.pipelines.tiny import tiny_call_kwargs, tiny_pipeline


def _tiny_wan():
    kw = tiny_call_kwargs("wan", steps=2, size=64)
    for key in ("prompt", "generator", "output_type"):
        kw.pop(key)
    return tiny_pipeline("wan", num_layers=2), kw


#: seconds the fake clock moves per transformer forward, by attention: the speedups the run must report
COST = {"dense": 3.0, "Neighborhood": 1.0, "Agent": 1.5, "Dense": 0.0}  # Dense: the grid probe
WARMUP_COST = 1000.0  # added to the first pipeline call of every configuration: must not be in any figure


class _FakeTime:
    """The run's clock, moved only by the transformer's forwards (by COST) and by the warm-up calls."""

    def __init__(self, pipe):
        self.now = 0.0
        self.calls = {}
        attn = pipe.transformer.blocks[0].attn1

        def kind():
            method = getattr(attn.processor, "method", None)
            return "dense" if method is None else type(method).__name__

        def forward(*_):
            self.now += COST[kind()]

        self.kind = kind
        pipe.transformer.register_forward_hook(forward)  # inside the run's forward timer (registered later)

    def clock(self):
        return self.now


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    pipe, kw = _tiny_wan()
    fake = _FakeTime(pipe)
    generate = e2e._generate

    def first_call_is_slow(pipe_, prompt, seed, kwargs):
        k = fake.kind()
        fake.calls[k] = fake.calls.get(k, 0) + 1
        if fake.calls[k] == 1:  # the untimed warm-up call of this configuration
            fake.now += WARMUP_COST
        return generate(pipe_, prompt, seed, kwargs)

    patch = pytest.MonkeyPatch()
    patch.setattr(e2e, "_clock", fake.clock)
    patch.setattr(e2e, "_generate", first_call_is_slow)
    try:
        out = tmp_path_factory.mktemp("e2e") / "run"
        path = e2e.run(out, pipeline="tiny-wan", pipe=pipe, call_kwargs=kw, prompts=["a red cat"],
                       methods=["neighborhood", "agent"], densities=[0.5], progress=False, repeats=2)
    finally:
        patch.undo()
    return path, json.loads((path / "results.json").read_text()), fake.calls


def test_report_directory_is_complete(tiny_run):
    path, data, _ = tiny_run
    assert data["complete"]
    labels = [r["config"] for r in data["records"]]
    assert labels[0] == "dense" and [label.split("@")[0] for label in labels[1:]] == ["neighborhood", "agent"]
    md = (path / "report.md").read_text()
    assert f"| {labels[1]} |" in md and "LPIPS not computed" in md
    assert "median of 2 timed call(s) each, alternated, after 1 untimed warm-up call(s)" in md
    pictures = ("speedup_vs_psnr.png", "density_heatmaps.png", "side_by_side.png",
                "layout_" + labels[1].replace("@", "_").replace("%", "") + ".png")
    for png in pictures:
        assert (path / png).stat().st_size > 1000, png
    assert data["environment"]["device"] == "cpu" and "torch" in data["environment"]


def test_speedups_are_the_planted_time_ratios(tiny_run):
    """The fake clock makes a dense forward cost 3 s, Neighborhood's 1 s and Agent's 1.5 s, and every
    configuration's first call 1000 s more: the run must report 3x and 2x, warm-up excluded."""
    _, data, calls = tiny_run
    recs = {r["method"]: r for r in data["records"]}
    assert calls == {"dense": 3, "Neighborhood": 3, "Agent": 3}  # 1 warm-up + 2 timed calls each
    for name, want in (("dense", 1.0), ("neighborhood", 3.0), ("agent", 2.0)):
        r = recs[name]
        assert r["speedup_pipeline"] == pytest.approx(want, rel=1e-12), name
        assert r["speedup_transformer"] == pytest.approx(want, rel=1e-12), name
        # only forwards move the clock: the pipeline time is its transformer time, the same in every timed call
        assert r["pipeline_s"] == pytest.approx(r["transformer_s"]) and r["pipeline_s"] < WARMUP_COST
        assert len(r["pipeline_s_all"]) == 2 and len(set(r["pipeline_s_all"])) == 1
    forwards = recs["dense"]["pipeline_s"] / COST["dense"]
    assert forwards == round(forwards) >= 2  # a whole number of forwards per call (2 steps)


def test_numbers_are_consistent(tiny_run):
    from tests.eval.brute_density import brute_force_density

    _, data, _ = tiny_run
    recs = {r["method"]: r for r in data["records"]}
    dense = recs["dense"]
    assert dense["psnr_db"] == "inf" and dense["ssim"] == pytest.approx(1.0)
    grid = tuple(data["grid"])
    n = math.prod(grid)
    configs = {c["label"]: c for c in data["configs"]}
    for name in ("neighborhood", "agent"):
        r = recs[name]
        assert 0 < r["transformer_s"] <= r["pipeline_s"]
        assert isinstance(r["psnr_db"], float) and r["psnr_db"] > 10  # close to dense, not identical
        cfg = configs[r["config"]]
        # executed density from the kernel calls == the brute-force rule's (uniform: no dense schedule)
        if name == "neighborhood":
            method = accel.Neighborhood(window=tuple(cfg["parameter"]["window"]), block_size=16)
            want = brute_force_density(method, grid)
        else:
            a = cfg["parameter"]["agents"]
            want = 2 * a[0] * a[1] * a[2] / n  # agents x N aggregation + N x agents broadcast, over N x N
        assert r["density"] == pytest.approx(want)
        assert [d for _, _, d in r["density_map"]] == pytest.approx([want] * len(r["density_map"]))
        assert len(r["density_map"]) == 2 * 2  # steps x layers
        # the label says the density reached, as a percentage rounded half up
        assert r["config"] == f"{name}@{math.floor(100 * cfg['matched_density'] + 0.5)}%"
    summary = {s["config"]: s for s in data["summary"]}
    assert summary[recs["agent"]["config"]]["psnr_db"] == pytest.approx(recs["agent"]["psnr_db"])


def test_unreachable_targets_are_labelled_by_the_density_reached():
    """Radial on a 4-frame grid keeps neighbouring frames dense (62.5% of the pairs) and the release's block
    selection keeps part of the narrowest windows too: no decay gets it below that floor (brute force, about
    69%), so its 10/20/30% targets are one configuration, labelled by the density it ran at."""
    from tests.eval.brute_density import brute_force_density

    grid = (4, 16, 16)
    floor = brute_force_density(accel.Radial(decay=1e-3, block_size=16), grid)
    assert 0.625 <= floor < 0.75
    (cfg,) = e2e.method_configs(["radial"], [0.1, 0.2, 0.3], grid, block_size=16)
    assert cfg.label == f"radial@{math.floor(100 * floor + 0.5)}%" and cfg.density == pytest.approx(floor)
    assert cfg.targets == [0.1, 0.2, 0.3] and cfg.unreached == [0.1, 0.2, 0.3]
    nb, = e2e.method_configs(["neighborhood"], [0.3], grid, block_size=16)
    assert nb.unreached == [] and nb.label == f"neighborhood@{math.floor(100 * nb.density + 0.5)}%"


def test_object_lost_flag():
    from accel.embedded.adherence import ClipAnalysis

    def seen(colour, fraction):
        return ClipAnalysis(colour, None, (0.0, 0.0), fraction, 1.0, None)

    dense = seen("red", 0.10)
    assert e2e._object_lost(seen("red", 0.06), dense) is False
    assert e2e._object_lost(seen("red", 0.04), dense) is True        # fewer than half the object pixels
    assert e2e._object_lost(seen("green", 0.10), dense) is True      # another object
    assert e2e._object_lost(seen(None, 0.0), dense) is True          # a blank clip
    assert e2e._object_lost(seen(None, 0.0), seen(None, 0.0)) is None  # nothing to lose


def test_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="prompts must be a non-empty list"):
        e2e.run(tmp_path / "a", pipeline="tiny-wan", prompts=[])
    with pytest.raises(ValueError, match="unknown method 'fast'"):
        e2e.run(tmp_path / "a", pipeline="tiny-wan", methods=["fast"])
    with pytest.raises(ValueError, match="model 'sdxl' is not a preset"):
        e2e.run(tmp_path / "a", pipeline="sdxl")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match="is not writable"):
        e2e.run(blocker / "sub", pipeline="tiny-wan")
    assert not (tmp_path / "a").exists()  # bad input is rejected before anything is written


def test_cli_reports_errors_with_exit_status_2(capsys):
    from accel.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["eval", "e2e", "--model", "tiny-wan", "--method", "fast"])
    assert exc.value.code == 2
    assert "unknown method 'fast'" in capsys.readouterr().err


def test_quick_option_resolves_defaults_only(monkeypatch, tmp_path):
    from accel.eval import e2e

    seen = []
    monkeypatch.setattr(e2e, "run", lambda out, **kw: seen.append(kw) or out)
    assert e2e.main(["--quick", "--out", str(tmp_path)]) == 0
    assert seen[-1]["densities"] == [0.2] and seen[-1]["steps"] == 8
    assert seen[-1]["prompts"] == list(e2e.DEFAULT_PROMPTS)[:1]
    # values the user gives win, even when they equal the full run's defaults
    assert e2e.main(["--quick", "--densities", "0.1", "0.2", "0.3", "--steps", "6", "--out", str(tmp_path)]) == 0
    assert seen[-1]["densities"] == [0.1, 0.2, 0.3] and seen[-1]["steps"] == 6
    assert e2e.main(["--out", str(tmp_path)]) == 0
    assert seen[-1]["densities"] == [0.1, 0.2, 0.3] and seen[-1]["steps"] is None
    assert seen[-1]["prompts"] == list(e2e.DEFAULT_PROMPTS)
