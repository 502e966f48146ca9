"""accel.ClearLocal: exact against the reference CLEAR rule, tiling-invariant, through accel.apply."""

from __future__ import annotations

import io

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from accel.grid import TokenLayout
from accel.methods.clear_local import ClearLocal
from accel.patterns.tiled import fitting_tiles

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


# ---------------------------------------------------------------------- whole blocks / whole tiles
@settings(max_examples=20)
@given(data=st.data())
def test_block_and_tile_granularity_equal_masked_dense(data):
    grid = data.draw(grids(max_tokens=80))
    radius = data.draw(st.sampled_from([0.5, 1, 2, 3, 5]))
    radius_t = data.draw(st.sampled_from([None, 0.8, 2.5]))
    granularity = data.draw(st.sampled_from(["block", "tile"]))
    tiling = data.draw(st.sampled_from([False, True] + fitting_tiles(grid, 16)))
    if granularity == "tile" and tiling is False:
        tiling = True
    batch = data.draw(st.integers(1, 2))
    layout = data.draw(text_layouts(grid, batch))
    method = ClearLocal(radius=radius, radius_t=radius_t, block_size=16, tiling=tiling, granularity=granularity,
                        backend="reference")
    if tiling is False:  # row-major blocks of 16 tokens
        want = ref.round_up_to_blocks(ref.clear_mask(grid, radius, radius_t), 16)
    else:
        tile = method.tile_for(grid)
        make = ref.clear_tile_any_mask if granularity == "block" else ref.clear_tile_centre_mask
        want = make(grid, tile, radius, radius_t)
    check_method(method, layout, want, batch=batch, seed=data.draw(st.integers(0, 100)))


def test_block_granularity_triton_interpreted():
    grid = (3, 6, 5)
    layout = TokenLayout(grid, 8, "last", torch.tensor([[True] * 6 + [False] * 2]))
    method = ClearLocal(radius=2.5, radius_t=1.5, block_size=16, tiling=(1, 4, 4), granularity="block",
                        backend="triton")
    check_method(method, layout, ref.clear_tile_any_mask(grid, (1, 4, 4), 2.5, 1.5), atol=1e-4)


def test_tile_modes_describe_and_errors():
    info = ClearLocal(radius=16, radius_t=4, granularity="block").describe((21, 45, 80), heads=40, file=None)
    assert info["tile"] == (2, 8, 8) and info["tile_aligned"] and info["full_fraction"] == 1.0
    assert info["mask_density"] == pytest.approx(info["video_density"])  # whole tiles: every computed pair counts
    with pytest.raises(ValueError, match="granularity must be one of"):
        ClearLocal(radius=2, granularity="disc")
    with pytest.raises(ValueError, match="granularity='tile' needs tiles"):
        ClearLocal(radius=2, granularity="tile", tiling=False)
    with pytest.raises(ValueError, match=r"tiling \(1, 4, 8\) holds 32 tokens"):
        ClearLocal(radius=2, granularity="block", tiling=(1, 4, 8), block_size=16)


@pytest.mark.parametrize("family", ["wan", "hunyuan_video", "flux"])
def test_apply_tiny_pipeline_block_granularity(family):
    tiling = (1, 4, 4) if family == "flux" else (2, 4, 2)
    apply_to_tiny_pipeline(family, ClearLocal(radius=1, radius_t=1, block_size=16, tiling=tiling,
                                              granularity="block", backend="reference"))
