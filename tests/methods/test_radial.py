"""accel.Radial: exact against the reference Radial rule and the release's block selection (ports in
tests/patterns), flex, through accel.apply."""

from __future__ import annotations

import io

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from accel.grid import TokenLayout
from accel.methods.radial import Radial

from ..patterns import radial_release as release
from ..patterns import reference as ref
from .method_checks import apply_to_tiny_pipeline, check_method, text_layouts


@st.composite
def video_grids(draw):
    t = draw(st.integers(1, 12))
    h = draw(st.integers(1, 4))
    w = draw(st.integers(1, max(1, 120 // (t * h))))
    return (t, h, w)


def reference_video_mask(grid, decay, sink, granularity, block=16):
    """The executed video mask as lists, or None when the release's selection leaves a query block empty."""
    if granularity == "block":
        blocks = release.block_mask(grid, decay, block, sink)
        if not bool(blocks.any(1).all()):
            return None
        n = grid[0] * grid[1] * grid[2]
        return blocks.repeat_interleave(block, 0).repeat_interleave(block, 1)[:n, :n].tolist()
    mask = ref.radial_mask(grid, decay, block, sink)
    return ref.round_up_to_blocks(mask, block) if granularity == "cover" else mask


@settings(max_examples=40)
@given(data=st.data())
def test_equals_masked_dense(data):
    grid = data.draw(video_grids())
    decay = data.draw(st.sampled_from([0.01, 0.05, 0.2, 0.5, 1.0, 3.0]))
    sink = data.draw(st.booleans())
    granularity = data.draw(st.sampled_from(["block", "cover", "token"]))
    batch = data.draw(st.integers(1, 2))
    layout = data.draw(text_layouts(grid, batch))
    method = Radial(decay=decay, block_size=16, sink=sink, granularity=granularity, backend="reference")
    expected = reference_video_mask(grid, decay, sink, granularity)
    if expected is None:
        with pytest.raises(ValueError, match="keeps no key block"):
            check_method(method, layout, [], batch=batch)
        return
    check_method(method, layout, expected, batch=batch, seed=data.draw(st.integers(0, 100)))


def test_triton_interpreted():
    grid = (8, 2, 8)  # 16 tokens per frame = one block per frame
    layout = TokenLayout(grid, 16, "last", torch.tensor([[True] * 10 + [False] * 6]))
    method = Radial(decay=0.05, block_size=16, sink=True, backend="triton")
    check_method(method, layout, reference_video_mask(grid, 0.05, True, "block"), atol=1e-4)


@pytest.mark.slow
def test_flex_compiled():
    grid = (8, 4, 8)  # 32 tokens per frame
    layout = TokenLayout(grid, 16, "first")
    method = Radial(decay=0.1, block_size=16, backend="flex")
    check_method(method, layout, reference_video_mask(grid, 0.1, False, "block"), atol=2e-4)


def test_release_selection_at_a_real_frame_size():
    # 192 tokens per frame at block 128: frames start off the block grid; decay 1.3 gives windows that are
    # not multiples of the block, where the release's density test differs from "any pair" rounding
    grid = (5, 12, 16)
    layout = TokenLayout(grid, 8, "last", torch.tensor([[True] * 5 + [False] * 3]))
    expected = reference_video_mask(grid, 1.3, True, "block", block=128)
    check_method(Radial(decay=1.3, sink=True, backend="reference"), layout, expected)
    cover = reference_video_mask(grid, 1.3, True, "cover", block=128)
    assert cover != expected
    check_method(Radial(decay=1.3, sink=True, granularity="cover", backend="reference"), layout, cover)


def test_single_image_is_dense():
    grid = (1, 6, 8)
    method = Radial(decay=0.01, block_size=16, backend="reference")
    check_method(method, TokenLayout(grid, 4, "first"), [[True] * 48 for _ in range(48)])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(decay=0), "decay must be a finite number > 0, got 0"),
        (dict(decay=float("nan")), "decay must be a finite number > 0"),
        (dict(block_size=100), "block_size must be a power of two >= 16, got 100"),
        (dict(sink=1), "sink must be a bool, got 1"),
        (dict(granularity="tile"), "granularity must be one of"),
    ],
)
def test_construction_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Radial(**kwargs)


def test_presets_and_describe():
    hy = Radial.preset("hunyuan_video")
    assert hy.method.decay == 0.95 and not hy.method.sink and hy.schedule.dense_steps == 12
    assert hy.schedule.dense_layers == 0 and hy.method.granularity == "block"
    wan22 = Radial.preset("wan2.2-t2v-a14b")
    assert (wan22.method.decay, wan22.method.block_size, wan22.schedule.dense_steps) == (0.8, 64, 11)
    wan = Radial.preset("wan2.1-t2v-14b")
    assert wan.method.decay == 0.2 and wan.method.sink and wan.schedule.dense_layers == 1
    with pytest.raises(ValueError, match=r"on FLUX images \(T = 1\) it is dense attention"):
        Radial.preset("flux")
    buf = io.StringIO()
    info = Radial(decay=0.5).describe((16, 16, 32), heads=2, file=buf)
    assert info["partial_blocks"] == 0 and info["tile"] is None
    assert 0 < info["video_density"] < 1


def test_describe_names_the_rule_and_the_executed_density():
    grid = (5, 12, 16)
    n = 5 * 12 * 16
    buf = io.StringIO()
    info = Radial(decay=1.3, sink=True).describe(grid, file=buf)
    rule = float(release.token_mask(grid, 1.3, 128, True).double().mean())
    blocks = release.block_mask(grid, 1.3, 128, True)
    executed = float(blocks.repeat_interleave(128, 0).repeat_interleave(128, 1)[:n, :n].double().mean())
    assert info["mask_density"] == pytest.approx(rule) and info["video_density"] == pytest.approx(executed)
    assert rule != pytest.approx(executed)
    text = buf.getvalue()
    assert f"executed {executed:.2%} of pairs" in text and f"the token rule allows {rule:.2%}" in text


@pytest.mark.parametrize("family", ["wan", "hunyuan_video"])
def test_apply_tiny_pipeline(family):
    apply_to_tiny_pipeline(family, Radial(decay=0.01, block_size=16, granularity="token", backend="reference"))


def test_apply_tiny_flux_is_dense():
    apply_to_tiny_pipeline("flux", Radial(decay=0.01, block_size=16, backend="reference"), expect_change=False)
