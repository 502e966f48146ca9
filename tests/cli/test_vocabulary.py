"""One vocabulary across the commands: method names (``clear-local``), model names (the presets', e.g.
``tiny-hunyuan-video``) and option names (``--model``, ``--method``, ``--method-arg``, ``--steps``, ...); the
old spellings still work and print a one-line deprecation note."""

import dataclasses
import json

import pytest

from accel.cli import main
from accel.methods.registry import METHODS
from accel.pipelines.presets import PRESETS
from accel.render import batch
from accel.schedule import Schedule


@pytest.fixture
def captured(monkeypatch):
    """What ``accel render`` / ``accel generate`` would render (the batch itself is not run)."""
    calls = []

    def fake_run(args, items, method_args, schedule, ctx, error):
        calls.append({"method": args.method, "model": args.model, "items": [(i.name, i.prompt, i.seed) for i in items],
                      "method_args": method_args, "steps": args.steps, "out": args.out})
        return 0

    monkeypatch.setattr(batch, "run", fake_run)
    return calls


def _notes(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("accel: note:")]


def _prompt_source(command: str, tmp_path) -> list[str]:
    """One prompt, as a file for render and on the command line for generate."""
    if command == "generate":
        return ["--prompt", "a red circle moving left", "--out", str(tmp_path / "o")]
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red circle moving left\n")
    return ["--prompts", str(prompts), "--out", str(tmp_path / "o")]


@pytest.mark.parametrize("command", ["render", "generate"])
def test_current_names_pass_without_a_note(command, captured, tmp_path, capsys):
    assert main([command, *_prompt_source(command, tmp_path), "--model", "tiny-hunyuan-video",
                 "--method", "clear-local", "--method-arg", "radius=2", "--steps", "3"]) == 0
    assert _notes(capsys.readouterr().err) == []
    (call,) = captured
    assert call["method"] == "clear-local" and call["model"] == "tiny-hunyuan-video"
    assert call["method_args"] == {"radius": 2} and call["steps"] == 3
    assert call["items"] == [("0000-a-red-circle-moving-left", "a red circle moving left", 0)]


@pytest.mark.parametrize("command", ["render", "generate"])
def test_old_spellings_work_with_a_deprecation_note(command, captured, tmp_path, capsys):
    assert main([command, *_prompt_source(command, tmp_path), "--model", "tiny-hunyuan_video",
                 "--method", "clear_local"]) == 0
    notes = _notes(capsys.readouterr().err)
    assert notes == ["accel: note: method name 'clear_local' is deprecated, use 'clear-local'",
                     "accel: note: model name 'tiny-hunyuan_video' is deprecated, use 'tiny-hunyuan-video'"]
    assert captured[0]["method"] == "clear-local" and captured[0]["model"] == "tiny-hunyuan-video"


def test_unknown_method_is_an_error_listing_the_names(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "--prompt", "x", "--out", str(tmp_path), "--method", "clear local"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "accel generate: error: --method must be one of" in err and "'clear-local'" in err


def test_generate_numbers_prompts_like_render_and_seeds_from_seed(captured, tmp_path):
    assert main(["generate", "--prompt", "one", "--prompt", "two", "--seed", "7", "--out", str(tmp_path)]) == 0
    assert captured[0]["items"] == [("0000-one", "one", 7), ("0001-two", "two", 8)]
    assert captured[0]["model"] == "embedded" and captured[0]["method"] == "none"


def test_eval_e2e_takes_the_same_names(monkeypatch, tmp_path, capsys):
    from accel.eval import e2e

    seen = []
    monkeypatch.setattr(e2e, "run", lambda out, **kw: seen.append(kw) or out)
    assert main(["eval", "e2e", "--model", "tiny-hunyuan-video", "--method", "clear-local", "radial",
                 "--prompt", "a cat", "--steps", "2", "--out", str(tmp_path)]) == 0
    assert _notes(capsys.readouterr().err) == []
    assert seen[-1]["pipeline"] == "tiny-hunyuan-video" and seen[-1]["methods"] == ["clear_local", "radial"]
    assert seen[-1]["prompts"] == ["a cat"] and seen[-1]["steps"] == 2
    # the old option and name spellings
    assert main(["eval", "e2e", "--pipeline", "tiny-hunyuan_video", "--methods", "clear_local",
                 "--prompts", "a cat", "--out", str(tmp_path)]) == 0
    notes = _notes(capsys.readouterr().err)
    for old, new in (("--pipeline", "--model"), ("--methods", "--method"), ("--prompts", "--prompt")):
        assert f"accel: note: option {old} is deprecated, use {new}" in notes
    assert "accel: note: method name 'clear_local' is deprecated, use 'clear-local'" in notes
    assert "accel: note: model name 'tiny-hunyuan_video' is deprecated, use 'tiny-hunyuan-video'" in notes
    assert seen[-1]["pipeline"] == "tiny-hunyuan-video" and seen[-1]["methods"] == ["clear_local"]


def test_the_app_offers_the_same_method_and_model_names():
    from accel.app.logic import METHOD_CHOICES
    from accel.app.models import offered_models

    assert set(METHOD_CHOICES) == set(METHODS)
    assert set(offered_models(device="cpu")) <= set(PRESETS)


def test_names_are_lower_case_words_joined_by_hyphens():
    for name in [*METHODS, *PRESETS]:
        assert name == name.lower() and "_" not in name and " " not in name


def test_render_manifest_method_record(tmp_path):
    """The manifest's method is a structured record; its fields are those of the method that ran."""
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red circle moving left\n")
    out = tmp_path / "o"
    assert main(["render", "--model", "tiny-wan", "--prompts", str(prompts), "--out", str(out), "--method",
                 "neighborhood", "--method-arg", "window=2,3,3", "--method-arg", "block_size=16",
                 "--schedule", "dense_steps=1", "--no-progress"]) == 0
    (record,) = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    method = record["method"]
    assert method["name"] == "neighborhood" and method["class"] == "Neighborhood"
    assert method["parameters"]["window"] == [2, 3, 3] and method["parameters"]["block_size"] == 16
    assert method["schedule"] == dataclasses.asdict(Schedule(dense_steps=1))
    assert method["source"] == "class defaults"


def test_eval_attention_takes_the_same_names(monkeypatch, tmp_path, capsys):
    from accel.eval import attention_bench

    seen = []
    monkeypatch.setattr(attention_bench, "run", lambda out, **kw: seen.append(kw) or out)
    assert main(["eval", "attention", "--method", "clear-local", "dense", "--out", str(tmp_path)]) == 0
    assert _notes(capsys.readouterr().err) == [] and seen[-1]["methods"] == ["clear_local", "dense"]
    assert main(["eval", "attention", "--methods", "clear_local", "--out", str(tmp_path)]) == 0
    assert _notes(capsys.readouterr().err) == ["accel: note: option --methods is deprecated, use --method",
                                               "accel: note: method name 'clear_local' is deprecated, use 'clear-local'"]
    with pytest.raises(SystemExit):
        main(["eval", "attention", "--method", "fast", "--out", str(tmp_path)])
    assert "unknown method 'fast'; allowed: dense, radial, clear-local" in capsys.readouterr().err
