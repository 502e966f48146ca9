"""accel.ClearLocal: exact against the reference CLEAR rule, tiling-invariant, through accel.apply."""

from __future__ import annotations

import io

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from accel.grid import TokenLayout
from accel.methods.clear_local import ClearLocal

from ..patterns import reference as ref
from ..patterns.strategies import grids
from .method_checks import apply_to_tiny_pipeline, check_method, text_layouts


@settings(max_examples=40)
@given(data=st.data())
def test_equals_masked_dense(data):
    grid = data.draw(grids(max_tokens=96))
    radius = data.draw(st.sampled_from([0.5, 1, 1.5, 2, 2.9, 3, 5, 50]))
    radius_t = data.draw(st.sampled_from([None, None, 0.8, 1, 2.5]))
    batch = data.draw(st.integers(1, 2))
    layout = data.draw(text_layouts(grid, batch))
    tiling = data.draw(st.sampled_from([True, False, (1, 4, 4), (2, 2, 4)]))
    method = ClearLocal(radius=radius, radius_t=radius_t, block_size=16, tiling=tiling, backend="reference")
    check_method(method, layout, ref.clear_mask(grid, radius, radius_t), batch=batch,
                 seed=data.draw(st.integers(0, 100)))


@pytest.mark.parametrize("side", ["first", "last"])
def test_triton_interpreted(side):
    grid = (1, 8, 8)
    mask = torch.tensor([[True] * 5 + [False] * 3])
    layout = TokenLayout(grid, 8, side, mask if side == "last" else None)
    method = ClearLocal(radius=2.5, block_size=16, backend="triton")
    check_method(method, layout, ref.clear_mask(grid, 2.5, None), atol=1e-4)


def test_text_first_aligned_is_one_fused_layout():
    """FLUX-like text (first, a multiple of the block size, no padding) runs as one joint layout."""
    grid = (1, 8, 8)
    layout = TokenLayout(grid, 32, "first")
    method = ClearLocal(radius=2.5, block_size=16, backend="reference")
    joint = method.build_block_layout(layout, batch=1, heads=2, device=torch.device("cpu"))
    assert joint is not None and joint.q_len == 96
    check_method(method, layout, ref.clear_mask(grid, 2.5, None))
    assert method.build_block_layout(TokenLayout(grid, 24, "first"), batch=1, heads=2, device="cpu") is None


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(radius=0), "radius must be a finite number > 0, got 0"),
        (dict(radius=float("inf")), "radius must be a finite number > 0"),
        (dict(radius=2, radius_t=-1), "radius_t must be a finite number > 0 or None, got -1"),
        (dict(radius=2, block_size=8), "block_size must be a power of two >= 16, got 8"),
        (dict(radius=2, tiling="yes"), "tiling must be True, False or a tuple"),
    ],
)
def test_construction_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ClearLocal(**kwargs)


def test_presets_and_describe():
    preset = ClearLocal.preset("flux")
    assert preset.method.radius == 16 and preset.method.radius_t is None
    for model in ("hunyuan_video", "wan"):
        assert ClearLocal.preset(model).method.radius_t is not None
    assert ClearLocal.preset("flux", radius=8).method.radius == 8
    buf = io.StringIO()
    info = ClearLocal(radius=16).describe((1, 64, 64), text_len=512, heads=24, file=buf)
    assert info["tile"] is not None and info["video_density"] < info["video_density_rowmajor"]
    # the disc holds about pi r^2 of the 4096 tokens (fewer at the borders)
    assert 0.1 < info["mask_density"] < 3.15 * 256 / 4096


@pytest.mark.parametrize("family", ["wan", "hunyuan_video", "flux"])
def test_apply_tiny_pipeline(family):
    apply_to_tiny_pipeline(family, ClearLocal(radius=1.5, radius_t=1.5, block_size=16, backend="reference"))
