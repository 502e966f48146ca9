"""One preset mechanism: ``Method.preset(model)`` with the model names of accel.pipelines.presets.

The expected values are the published settings as written in the method modules' docstrings (papers,
the authors' scripts, or "ours"), copied here as literals so that a changed value fails this test.
"""

import pytest
import torch

import accel
from accel.methods.preset import FAMILIES, MODEL_FAMILIES, Preset, model_names
from accel.pipelines.tiny import tiny_call_kwargs, tiny_pipeline

S = accel.Schedule
_WAN = [n for n, f in MODEL_FAMILIES.items() if f == "wan"]
_WAN21 = [n for n in _WAN if n.startswith("wan2.1")]
_WAN22 = [n for n in _WAN if n.startswith("wan2.2")]
# the release's defaults (the class defaults): Hilbert order, neighbours, the text column counted
_RECT = dict(tau=0.3, block_size=128, order="hilbert", keep_neighbors=True, count_text=True)

# (class, model names) -> (fields, schedule) for every model with a published setting
EXPECTED = {
    (accel.Radial, ("hunyuan-video",)): (dict(decay=0.95, sink=False, granularity="block"),
                                         S(dense_steps=12, dense_layers=0)),
    (accel.Radial, tuple(_WAN21)): (dict(decay=0.2, sink=True, block_size=128), S(dense_steps=12, dense_layers=1)),
    (accel.Radial, tuple(_WAN22)): (dict(decay=0.8, sink=True, block_size=64), S(dense_steps=11, dense_layers=1)),
    (accel.ClearLocal, ("flux.1-dev", "flux.1-schnell")): (dict(radius=16, radius_t=None), S()),
    (accel.ClearLocal, ("hunyuan-video", *_WAN)): (dict(radius=16, radius_t=4), S(dense_steps=12)),
    (accel.Neighborhood, ("hunyuan-video",)): (dict(window=(18, 24, 24), stride=(6, 8, 8)), S(dense_steps=12)),
    (accel.Neighborhood, tuple(_WAN)): (dict(window=(12, 24, 24), stride=(4, 8, 8)), S(dense_steps=12)),
    (accel.Neighborhood, ("flux.1-dev", "flux.1-schnell")): (dict(window=(32, 32), stride=(8, 8)), S()),
    (accel.Rectified, ("hunyuan-video",)): (dict(drop=0.8, dense_first_blocks=False, **_RECT), S()),
    (accel.Rectified, ("wan2.1-t2v-1.3b", "wan2.1-t2v-14b")): (dict(drop=0.75, dense_first_blocks=True, **_RECT),
                                                               S(dense_steps=5, dense_layers=2)),
    (accel.Rectified, ("wan2.1-i2v-14b-480p", "wan2.1-i2v-14b-720p")): (dict(drop=0.75, dense_first_blocks=True, **_RECT),
                                                                        S(dense_layers=2)),
    (accel.Rectified, ("wan2.2-t2v-a14b",)): (dict(drop=0.85, dense_first_blocks=True, **_RECT),
                                              S(dense_steps=3, dense_layers=2)),
    (accel.Rectified, ("wan2.2-ti2v-5b",)): (dict(drop=0.75, dense_first_blocks=True, **_RECT),
                                             S(dense_steps=5, dense_layers=2)),
    (accel.Rectified, ("flux.1-dev",)): (dict(drop=0.9, dense_first_blocks=False, **_RECT), S(dense_last_layers=20)),
}
CLASSES = (accel.Dense, accel.Radial, accel.ClearLocal, accel.Neighborhood, accel.Rectified, accel.Agent)


def test_every_published_setting_and_only_those():
    expected = {(cls, name): value for (cls, names), value in EXPECTED.items() for name in names}
    for cls in CLASSES:
        for name in MODEL_FAMILIES:
            if (cls, name) not in expected:
                with pytest.raises(ValueError):
                    cls.preset(name)
                continue
            fields, schedule = expected[(cls, name)]
            preset = cls.preset(name)
            assert isinstance(preset, Preset) and type(preset.method) is cls
            assert {k: getattr(preset.method, k) for k in fields} == fields, (cls.__name__, name)
            assert isinstance(preset.schedule, accel.Schedule) and preset.schedule == schedule, (cls.__name__, name)
            assert preset.source, (cls.__name__, name)


def test_names_are_case_insensitive_and_overrides_replace_fields():
    assert accel.Neighborhood.preset("FLUX.1-dev", window=(16, 16)).method.window == (16, 16)
    with pytest.raises(TypeError):
        accel.Radial.preset("hunyuan-video", windw=3)


def test_family_names_resolve_only_when_unambiguous():
    hy = accel.Radial.preset("hunyuan_video")
    assert repr(hy.method) == repr(accel.Radial.preset("hunyuan-video").method)
    with pytest.raises(ValueError, match=r"'wan' is ambiguous for Radial"):
        accel.Radial.preset("wan")  # decay 0.2 for Wan 2.1, 0.8 for Wan 2.2
    assert accel.ClearLocal.preset("flux").method.radius == 16
    with pytest.raises(ValueError, match=r"'wan' is ambiguous for Rectified.*wan2\.1-t2v-1\.3b"):
        accel.Rectified.preset("wan")  # drop 0.75 for Wan 2.1, 0.85 for Wan 2.2 T2V
    with pytest.raises(ValueError, match="'flux' is ambiguous for Rectified"):
        accel.Rectified.preset("flux")  # FLUX.1-dev has a setting, FLUX.1-schnell none
    with pytest.raises(ValueError, match=r"on FLUX images \(T = 1\) it is dense attention"):
        accel.Radial.preset("flux.1-dev")
    assert set(model_names("hunyuan_video")) == {"hunyuan-video"} and set(FAMILIES) == {"wan", "hunyuan_video", "flux"}


def test_unknown_and_offline_models_are_clear_errors():
    with pytest.raises(ValueError, match=r"unknown model 'wan2\.1'; model names are embedded, .*wan2\.1-t2v-1\.3b"):
        accel.Radial.preset("wan2.1")
    with pytest.raises(ValueError, match=r"Radial has no published setting for 'tiny-wan'.*hunyuan-video"):
        accel.Radial.preset("tiny-wan")
    with pytest.raises(TypeError, match="model must be a str"):
        accel.Radial.preset(None)


def test_apply_takes_a_preset():
    """``apply(pipe, preset)`` == ``apply(pipe, preset.method, schedule=preset.schedule)`` (the reference)."""
    pipe = tiny_pipeline("wan")
    pipe.set_progress_bar_config(disable=True)
    method = accel.Neighborhood(window=(2, 3, 3), block_size=16, backend="reference")
    preset = Preset(method, accel.Schedule(dense_layers=1), "test")

    def run():
        return pipe(**dict(tiny_call_kwargs("wan", size=64), output_type="latent"))[0]

    stock = run()
    with accel.apply(pipe, preset.method, schedule=preset.schedule):
        expected = run()
    with accel.apply(pipe, preset) as handle:
        assert handle.method is method and handle.schedule == preset.schedule
        got = run()
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert (got - stock).abs().max() > 1e-3  # the method ran on the layers the schedule leaves sparse
    with accel.apply(pipe, preset, schedule=accel.Schedule(dense_layers=1)) as handle:  # the same schedule: fine
        assert handle.schedule == preset.schedule
    with pytest.raises(ValueError, match="conflicts with the preset's schedule"):
        accel.apply(pipe, preset, schedule=accel.Schedule())
    assert not accel.remove(pipe)  # the refused call installed nothing
