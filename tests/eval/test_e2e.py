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


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    pipe, kw = _tiny_wan()
    out = tmp_path_factory.mktemp("e2e") / "run"
    path = e2e.run(out, pipeline="tiny-wan", pipe=pipe, call_kwargs=kw, prompts=["a red cat"],
                   methods=["neighborhood", "agent"], densities=[0.5], progress=False)
    return path, json.loads((path / "results.json").read_text())


def test_report_directory_is_complete(tiny_run):
    path, data = tiny_run
    assert data["complete"]
    assert [r["config"] for r in data["records"]] == ["dense", "neighborhood@50%", "agent@50%"]
    md = (path / "report.md").read_text()
    assert "| neighborhood@50% |" in md and "LPIPS not computed" in md
    for png in ("speedup_vs_psnr.png", "density_heatmaps.png", "side_by_side.png", "layout_neighborhood_50.png"):
        assert (path / png).stat().st_size > 1000, png
    assert data["environment"]["device"] == "cpu" and "torch" in data["environment"]


def test_numbers_are_consistent(tiny_run):
    _, data = tiny_run
    recs = {r["config"]: r for r in data["records"]}
    dense = recs["dense"]
    assert dense["psnr_db"] == "inf" and dense["ssim"] == pytest.approx(1.0)
    grid = tuple(data["grid"])
    n = math.prod(grid)
    for label, r in recs.items():
        assert r["speedup_pipeline"] == pytest.approx(dense["pipeline_s"] / r["pipeline_s"])
        assert r["speedup_transformer"] == pytest.approx(dense["transformer_s"] / r["transformer_s"])
        assert 0 < r["transformer_s"] < r["pipeline_s"]
        if label == "dense":
            continue
        assert isinstance(r["psnr_db"], float) and r["psnr_db"] > 10  # close to dense, not identical
        # executed density from the kernel calls == the layout's (uniform over steps/layers: no dense schedule)
        cfg = next(c for c in data["configs"] if c["label"] == label)
        if r["method"] == "neighborhood":
            method = accel.Neighborhood(window=tuple(cfg["parameter"]["window"]), block_size=16)
            want = method.describe(grid, file=None)["video_density"]
        else:
            a = cfg["parameter"]["agents"]
            want = 2 * a[0] * a[1] * a[2] / n
        assert r["density"] == pytest.approx(want)
        assert [d for _, _, d in r["density_map"]] == pytest.approx([want] * len(r["density_map"]))
        assert len(r["density_map"]) == 2 * 2  # steps x layers
    summary = {s["config"]: s for s in data["summary"]}
    assert summary["agent@50%"]["psnr_db"] == pytest.approx(recs["agent@50%"]["psnr_db"])


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
    assert seen[-1]["densities"] == [0.2] and seen[-1]["steps"] == 4
    assert seen[-1]["prompts"] == list(e2e.DEFAULT_PROMPTS)[:1]
    # values the user gives win, even when they equal the full run's defaults
    assert e2e.main(["--quick", "--densities", "0.1", "0.2", "0.3", "--steps", "6", "--out", str(tmp_path)]) == 0
    assert seen[-1]["densities"] == [0.1, 0.2, 0.3] and seen[-1]["steps"] == 6
    assert e2e.main(["--out", str(tmp_path)]) == 0
    assert seen[-1]["densities"] == [0.1, 0.2, 0.3] and seen[-1]["steps"] is None
    assert seen[-1]["prompts"] == list(e2e.DEFAULT_PROMPTS)
