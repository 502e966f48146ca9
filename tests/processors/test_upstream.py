"""accel.processors.upstream: every reliance on diffusers internals is checked at import, with one message.

The planted differences below are small fake upstream pieces (a processor whose ``__call__`` takes its
arguments in another order, reassigns ``attention_mask`` or no longer calls ``dispatch_attention_fn``; a
cache-context setter without the attribute scan; a context without ``step_index``); each must be
reported. Without diffusers, the lower layers still import and the processors say what is missing.
"""

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from accel.processors import upstream

ROOT = Path(__file__).resolve().parents[2]


def test_the_installed_diffusers_passes():
    assert upstream.check() == []
    assert set(upstream.SKIPPING_HOOKS.values()) >= {"FirstBlockCache", "FasterCache", "TaylorSeerCache", "MagCache"}


class _Reordered:
    def __call__(self, attn, encoder_hidden_states, hidden_states, attention_mask=None, image_rotary_emb=None):
        return upstream.dispatch_attention_fn(hidden_states, hidden_states, hidden_states, attn_mask=attention_mask)


class _Reassigns:
    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, image_rotary_emb=None):
        attention_mask = None if attention_mask is None else attention_mask.bool()
        return upstream.dispatch_attention_fn(hidden_states, hidden_states, hidden_states, attn_mask=attention_mask)


class _NoDispatch:
    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, image_rotary_emb=None):
        return hidden_states


def test_planted_processor_changes_are_reported(monkeypatch):
    expected = ("self", "attn", "hidden_states", "encoder_hidden_states", "attention_mask", "image_rotary_emb")
    monkeypatch.setattr(upstream, "PROCESSOR_PARAMETERS", {_Reordered: expected, _Reassigns: expected,
                                                           _NoDispatch: expected})
    problems = upstream.check()
    assert any(p.startswith("_Reordered.__call__ parameters start") for p in problems)
    assert "_Reassigns.__call__ reassigns attention_mask before dispatch_attention_fn" in problems
    assert "_NoDispatch.__call__ no longer calls dispatch_attention_fn" in problems
    assert len(problems) == 3
    with pytest.raises(RuntimeError, match="no longer calls dispatch_attention_fn"):
        upstream.rebind_dispatch(_NoDispatch.__call__, lambda *a, **k: None)


def test_planted_hook_changes_are_reported(monkeypatch):
    def set_context_without_scan(module, context):
        return None

    @dataclasses.dataclass
    class Context:
        name: str
        timestep: float | None = None

    monkeypatch.setattr(upstream._hooks_module, "_set_cache_context", set_context_without_scan)
    monkeypatch.setattr(upstream._hooks_module, "CacheContext", Context)
    problems = upstream.check()
    assert any("_set_cache_context no longer finds StateManager attributes" in p for p in problems)
    assert "diffusers.hooks.hooks.CacheContext lacks num_inference_steps, step_index" in problems
    monkeypatch.delattr(upstream._hooks_module, "_set_cache_context")
    assert any("_set_cache_context (cache contexts -> stateful hooks) is missing" in p for p in upstream.check())


def test_one_message_names_the_supported_versions(monkeypatch):
    monkeypatch.setattr(upstream, "check", lambda: ["first difference", "second difference"])
    with pytest.raises(ImportError) as info:
        upstream._check_at_import()
    text = str(info.value)
    assert text.startswith("accel's processors support diffusers >=0.42.1 (tested with 0.42.1)")
    assert "- first difference\n- second difference" in text


def test_without_diffusers_the_lower_layers_import_and_processors_say_why():
    script = (
        "import sys\n"
        "sys.modules['diffusers'] = None  # as on a machine without diffusers\n"
        "import torch, accel, accel.kernels, accel.patterns, accel.methods\n"
        "from accel.methods.registry import build_method\n"
        "layout = accel.TokenLayout((1, 4, 4))\n"
        "q = torch.randn(1, 16, 1, 8)\n"
        "assert accel.Radial(block_size=16)(q, q, q, layout).shape == q.shape\n"
        "try:\n"
        "    accel.apply\n"
        "except ImportError as exc:\n"
        "    print('ImportError:', exc)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ImportError: accel.processors needs diffusers >=0.42.1 (tested with 0.42.1)" in done.stdout


def test_planted_context_parallel_changes_are_reported(monkeypatch):
    @dataclasses.dataclass
    class ConfigWithoutMeshes:  # a ContextParallelConfig that no longer keeps the Ulysses mesh
        ring_degree: int = 1
        ulysses_degree: int = 1
        ulysses_anything: bool = False
        ring_anything: bool = False
        mesh: object = None
        _flattened_mesh: object = None

    def template(query, key, value, attn_mask=None, *, forward_op, _parallel_config=None):
        return query

    monkeypatch.setattr(upstream, "ContextParallelConfig", ConfigWithoutMeshes)
    monkeypatch.setattr(upstream, "templated_context_parallel_attention", template)
    problems = upstream.check()
    assert problems == ["ContextParallelConfig has no field _ulysses_mesh",
                        "_templated_context_parallel_attention has no parameter backward_op"]
