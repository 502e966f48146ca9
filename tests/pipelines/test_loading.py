import dataclasses

import pytest
import torch

import accel
from accel.methods.preset import MODEL_FAMILIES
from accel.pipelines import load, loading
from accel.pipelines.loading import parse_dtype, pipeline_size_rules, resolve_model
from accel.pipelines.presets import PRESETS, get_preset, preset_for_hub_id
from accel.pipelines.tiny import tiny_call_kwargs, tiny_pipeline

HUB_PRESETS = [p for p in PRESETS.values() if p.source == "hub"]


def test_preset_table_is_consistent():
    names = {"embedded", "tiny-wan", "tiny-flux", "tiny-hunyuan-video", "hunyuan-video", "wan2.1-t2v-1.3b",
             "wan2.1-t2v-14b", "wan2.1-i2v-14b-480p", "wan2.1-i2v-14b-720p", "wan2.2-t2v-a14b", "wan2.2-ti2v-5b",
             "flux.1-dev", "flux.1-schnell"}
    assert names <= set(PRESETS)
    for p in PRESETS.values():
        assert p.height % p.size_multiple == 0 and p.width % p.size_multiple == 0, p.name
        if p.is_video:
            assert (p.num_frames - 1) % p.frame_step == 0 and p.fps >= 1, p.name
        else:
            assert p.frame_step is None and "num_frames" not in p.generation_kwargs()
        assert p.note, p.name
    for p in HUB_PRESETS:
        assert p.hub_id and "/" in p.hub_id and MODEL_FAMILIES[p.method_model] in {"wan", "hunyuan_video", "flux"}
        assert preset_for_hub_id(p.hub_id.upper()) is p
    assert get_preset("wan2.2-t2v-a14b").generation_kwargs()["guidance_scale_2"] == 3.0
    assert get_preset("FLUX.1-schnell").generation_kwargs() == dict(
        height=1024, width=1024, num_inference_steps=4, guidance_scale=0.0, max_sequence_length=256)


def test_resolve_model_names_and_errors(tmp_path):
    assert resolve_model("wan2.1-t2v-1.3b") == (PRESETS["wan2.1-t2v-1.3b"], "Wan-AI/Wan2.1-T2V-1.3B-Diffusers")
    assert resolve_model("Wan-AI/Wan2.1-T2V-1.3B-Diffusers")[0] is PRESETS["wan2.1-t2v-1.3b"]
    assert resolve_model("someone/some-model") == (None, "someone/some-model")
    assert resolve_model("embedded") == (PRESETS["embedded"], None)
    with pytest.raises(ValueError, match=r"'wan-9000' is not a preset.*presets are embedded, tiny-wan"):
        resolve_model("wan-9000")
    with pytest.raises(ValueError, match="has no model_index.json"):
        resolve_model(str(tmp_path))
    with pytest.raises(ValueError, match="unknown preset 'nope'"):
        get_preset("nope")


def test_size_rules_match_the_presets():
    """The presets' size rules equal what the pipelines' own VAE and patch configs require."""
    for name, family in (("tiny-wan", "wan"), ("tiny-flux", "flux"), ("tiny-hunyuan-video", "hunyuan_video")):
        pipe = tiny_pipeline(family)
        assert pipeline_size_rules(pipe) == (PRESETS[name].size_multiple, PRESETS[name].frame_step)
    # Wan: VAE 2^3 x patch 2 = 16 and 4x temporal; FLUX tiny VAE has one block (scale 1) x 2x2 packing
    assert pipeline_size_rules(tiny_pipeline("wan")) == (16, 4)
    assert pipeline_size_rules(tiny_pipeline("flux")) == (2, None)
    with pytest.raises(TypeError, match="unsupported pipeline"):
        pipeline_size_rules(object())


def test_load_tiny_with_named_method():
    pipe = load("tiny-wan", method="neighborhood", method_args={"window": (3, 5, 5)}, device="cpu")
    assert pipe.accel_preset is PRESETS["tiny-wan"]
    handle = pipe.accel_handle
    assert isinstance(handle.method, accel.Neighborhood) and handle.method.window == (3, 5, 5)
    assert handle.schedule == accel.Schedule() and pipe.accel_method_source == "class defaults"
    assert accel.remove(pipe)
    assert load("tiny-flux", device="cpu").accel_handle is None


def test_load_argument_errors():
    with pytest.raises(ValueError, match="offload=True .* device is cpu"):
        load("tiny-wan", device="cpu", offload=True)
    with pytest.raises(ValueError, match="dtype must be float32, float16 or bfloat16"):
        load("tiny-wan", dtype="int8")
    with pytest.raises(ValueError, match="--method must be one of"):
        load("tiny-wan", method="sparse")
    with pytest.raises(ValueError, match="method_args is only used with a method name"):
        load("tiny-wan", method=accel.Dense(), method_args={"x": 1})
    with pytest.raises(ValueError, match="schedule must be an accel.Schedule"):
        load("tiny-wan", schedule=3)
    assert parse_dtype("bf16") is torch.bfloat16 and parse_dtype(None) is None


def test_hub_preset_uses_safe_from_pretrained(monkeypatch):
    """A real checkpoint is read by diffusers' from_pretrained with safetensors only and no remote code;
    the preset's flow shift, float32 VAE and the paper's method setting are applied."""
    from diffusers import DiffusionPipeline

    calls = []

    def fake_from_pretrained(location, **kwargs):
        calls.append((location, kwargs))
        return tiny_pipeline("wan").to(dtype=kwargs["dtype"])

    monkeypatch.setattr(DiffusionPipeline, "from_pretrained", fake_from_pretrained)
    monkeypatch.setattr(loading, "weights_cached", lambda hub_id: True)  # the faked hub holds it
    pipe = load("wan2.1-t2v-1.3b", method="radial", dtype="bf16", device="cpu")
    assert calls == [("Wan-AI/Wan2.1-T2V-1.3B-Diffusers",
                      dict(dtype=torch.bfloat16, use_safetensors=True, trust_remote_code=False))]
    assert pipe.scheduler.config["shift"] == 3.0  # the tiny pipeline's scheduler had shift 7.0
    assert pipe.vae.dtype == torch.float32 and pipe.transformer.dtype == torch.bfloat16
    published = accel.Radial.preset("wan2.1-t2v-1.3b")
    assert repr(pipe.accel_handle.method) == repr(published.method) and pipe.accel_handle.schedule == published.schedule
    assert pipe.accel_method_source == published.source


def test_hub_id_offline_not_cached_is_a_clear_error(monkeypatch):
    from diffusers import DiffusionPipeline

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(DiffusionPipeline, "from_pretrained", lambda *a, **k: pytest.fail("tried to load anyway"))
    with pytest.raises(OSError, match=r"^model 'nobody/not-a-model' is not in the local Hugging Face cache and "
                                      r"HF_HUB_OFFLINE is set, .* `hf download nobody/not-a-model`") as exc:
        load("nobody/not-a-model", device="cpu")
    assert "\n" not in str(exc.value) and exc.value.__cause__ is None


def test_a_cached_index_without_weights_is_a_one_line_error(monkeypatch):
    """``model_index.json`` cached but the weights not: diffusers' own error, cut to one line, no chain."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(loading, "weights_cached", lambda hub_id: True)
    with pytest.raises(OSError, match=r"^could not load 'nobody/not-a-model' with diffusers' from_pretrained") as exc:
        load("nobody/not-a-model", device="cpu")
    assert "\n" not in str(exc.value) and exc.value.__cause__ is None and exc.value.__suppress_context__


@pytest.mark.parametrize("device, message", [
    ("cuda", "this PyTorch build"), ("cuda:7", "this PyTorch build"), ("mps", "mps is not available"),
    ("gpu", "device must be a torch.device or a string like"),
])
def test_unusable_device_is_refused_before_loading(monkeypatch, device, message):
    if torch.cuda.is_available():
        pytest.skip("checks a machine without CUDA")
    monkeypatch.setattr("accel.pipelines.tiny.tiny_pipeline", lambda *a, **k: pytest.fail("loaded a model anyway"))
    with pytest.raises(ValueError, match=message):
        load("tiny-wan", device=device)
    with pytest.raises(ValueError, match=message):
        loading.parse_device(device)


def test_local_folder_round_trip(tmp_path):
    """A folder saved with save_pretrained loads through from_pretrained and renders exactly like the
    in-memory pipeline it was saved from; its settings come from the pipeline's own defaults."""
    original = tiny_pipeline("flux")
    original.save_pretrained(tmp_path / "flux")
    pipe = load(str(tmp_path / "flux"), device="cpu")
    preset = pipe.accel_preset
    assert (preset.family, preset.source, preset.size_multiple, preset.frame_step) == ("flux", "path", 2, None)
    assert (preset.steps, preset.guidance) == (28, 3.5)  # FluxPipeline.__call__ defaults
    expected = original(**tiny_call_kwargs("flux", seed=3)).images
    got = pipe(**tiny_call_kwargs("flux", seed=3)).images
    assert (expected - got).abs().max() < 1e-5, (expected - got).abs().max()

    safe = tmp_path / "bin"
    original.save_pretrained(safe, safe_serialization=False)
    with pytest.raises(OSError, match=r"safetensors only"):
        load(str(safe), device="cpu")


def test_parallel_is_checked_before_loading():
    # the real context-parallel load runs in tests/render/test_context_parallel_render.py (2 processes)
    for bad in (0, -2, True, 2.0, "2"):
        with pytest.raises(ValueError, match="parallel must be None, an int >= 1"):
            load("tiny-wan", device="cpu", parallel=bad)
    with pytest.raises(ValueError, match="offload=True cannot be combined with parallel"):
        load("tiny-wan", device="cuda", offload=True, parallel=2)
    with pytest.raises(RuntimeError, match="needs torch.distributed initialised"):
        load("tiny-wan", device="cpu", parallel=2)
    assert load("tiny-wan", device="cpu", parallel=1).accel_parallel is None


def test_preset_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        PRESETS["embedded"].steps = 3


def test_rectified_uses_the_release_setting_of_the_checkpoint():
    from accel.methods.registry import method_for_model

    method, schedule, source = method_for_model("rectified", {"tau": 0.2}, PRESETS["wan2.1-t2v-1.3b"].method_model)
    # the release's Wan 2.1 T2V script (drop 0.75, 128-token blocks on its Hilbert curve, neighbours and the
    # first floor(NB / T) blocks kept), tau overridden
    expected = dict(drop=0.75, tau=0.2, block_size=128, order="hilbert", keep_neighbors=True, dense_first_blocks=True)
    assert {k: getattr(method, k) for k in expected} == expected
    assert schedule == accel.Schedule(dense_steps=5, dense_layers=2) and "Rectified SpaAttn release" in source
    # no setting for FLUX.1-schnell: class defaults
    method, schedule, source = method_for_model("rectified", {}, PRESETS["flux.1-schnell"].method_model)
    assert repr(method) == repr(accel.Rectified()) and schedule is None and source == "class defaults"
    with pytest.raises(ValueError, match="unknown model 'wan9'"):
        method_for_model("rectified", {}, "wan9")


def test_one_vocabulary_of_model_names():
    """The presets are exactly the model names the method classes' published settings are keyed by."""
    assert set(PRESETS) == set(MODEL_FAMILIES)
    family = {"wan": "wan", "wan_i2v": "wan", "hunyuan_video": "hunyuan_video", "flux": "flux"}
    for p in PRESETS.values():
        expected = family[p.family] if p.source == "hub" else None
        assert MODEL_FAMILIES[p.name] == expected, p.name


def test_wan_i2v_without_ftfy_is_refused_before_loading(monkeypatch):
    import importlib.util

    from diffusers import DiffusionPipeline

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ftfy" else real_find_spec(name, *a))
    monkeypatch.setattr(DiffusionPipeline, "from_pretrained", lambda *a, **k: pytest.fail("downloaded anyway"))
    with pytest.raises(ImportError, match="need the ftfy package"):
        load("wan2.1-i2v-14b-480p", device="cpu")


@pytest.mark.parametrize("family", ["tiny-wan", "tiny-flux"])
def test_vae_memory_options(family):
    pipe = load(family, device="cpu", vae_tiling=True, vae_slicing=True)
    assert pipe.vae.use_tiling and pipe.vae.use_slicing
    plain = load(family, device="cpu")
    assert not plain.vae.use_tiling and not plain.vae.use_slicing
