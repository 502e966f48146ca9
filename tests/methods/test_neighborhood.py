"""accel.Neighborhood: exact against the reference GNA rule, tiling-invariant, through accel.apply."""

from __future__ import annotations

import io

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from accel.grid import TokenLayout
from accel.methods.neighborhood import Neighborhood
from accel.patterns.tiled import fitting_tiles

from ..patterns import reference as ref
from ..patterns.strategies import grids
from .method_checks import apply_to_tiny_pipeline, check_method, text_layouts


def reference_video_mask(grid, window, stride, dilation, causal):
    """Independent clamping (as documented on Neighborhood.clamp) + the reference rule."""
    w, s = list(window), list(stride)
    for a, n in enumerate(grid):
        if n > 1 and w[a] != -1:
            w[a] = min(w[a], n // dilation[a])
            s[a] = min(s[a], w[a])
    return ref.natten_mask(grid, w, s, dilation, causal)


@st.composite
def configs(draw, grid):
    window, stride, dilation, causal = [], [], [], []
    for n in grid:
        d = draw(st.integers(1, max(1, n // 2)))
        w = draw(st.sampled_from([-1, 2, 3, 4, 5, 7, 20]))  # larger than the axis: clamped
        s = 1 if w == -1 else draw(st.integers(1, w))
        window.append(w), stride.append(s), dilation.append(d), causal.append(draw(st.booleans()))
    return tuple(window), tuple(stride), tuple(dilation), tuple(causal)


@settings(max_examples=40)
@given(data=st.data())
def test_equals_masked_dense(data):
    grid = data.draw(grids(max_tokens=96))
    window, stride, dilation, causal = data.draw(configs(grid))
    if any(n > 1 and n // d < 2 for n, d in zip(grid, dilation, strict=True)):
        dilation = tuple(1 if n // d < 2 else d for n, d in zip(grid, dilation, strict=True))
    batch = data.draw(st.integers(1, 2))
    layout = data.draw(text_layouts(grid, batch))
    tiling = data.draw(st.sampled_from([True, False, (1, 2, 8), (2, 2, 4)]))
    method = Neighborhood(window=window, stride=stride, dilation=dilation, causal=causal, block_size=16,
                          tiling=tiling, backend="reference")
    check_method(method, layout, reference_video_mask(grid, window, stride, dilation, causal), batch=batch,
                 seed=data.draw(st.integers(0, 100)))


def test_int_and_pair_parameters():
    grid = (3, 5, 6)
    method = Neighborhood(window=3, block_size=16, backend="reference")
    check_method(method, TokenLayout(grid), ref.natten_mask(grid, (3, 3, 3), (1, 1, 1), (1, 1, 1), (False,) * 3))
    method = Neighborhood(window=(3, 5), stride=(1, 2), causal=(True, False), block_size=16, backend="reference")
    check_method(method, TokenLayout(grid),
                 ref.natten_mask(grid, (-1, 3, 5), (1, 1, 2), (1, 1, 1), (False, True, False)))


@pytest.mark.parametrize("side", ["first", "last"])
def test_triton_interpreted(side):
    grid = (2, 4, 8)
    mask = torch.tensor([[True] * 6 + [False] * 2])
    layout = TokenLayout(grid, 8, side, mask if side == "last" else None)
    method = Neighborhood(window=(2, 3, 3), stride=(1, 1, 2), block_size=16, backend="triton")
    check_method(method, layout, ref.natten_mask(grid, (2, 3, 3), (1, 1, 2), (1, 1, 1), (False,) * 3), atol=1e-4)


def test_strict_mode_rejects_oversized_window():
    method = Neighborhood(window=(2, 9, 9), clamp=False, block_size=16, backend="reference")
    q = torch.randn(1, 2 * 4 * 4, 1, 16)
    with pytest.raises(ValueError, match="window \\* dilation on axis H must be <= the axis length 4"):
        method(q, q, q, TokenLayout((2, 4, 4)))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(window=1), "window on axis T must be -1"),
        (dict(window=(3, 3), stride=(1, 4)), r"stride on axis W must be in \[1, window=3\], got 4"),
        (dict(window=3, dilation=0), "dilation on axis T must be >= 1, got 0"),
        (dict(window=(3, 3, 3, 3)), "window must be an int or a tuple of 2"),
        (dict(window=3, causal=1), "causal must be a bool or a tuple"),
        (dict(window=3, block_size=48), "block_size must be a power of two >= 16, got 48"),
        (dict(window=3, tiling=(3, 4, 4)), "tiling must be True, False or a tuple of three powers of two"),
    ],
)
def test_construction_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Neighborhood(**kwargs)


def test_presets_and_describe():
    for model in ("hunyuan_video", "wan", "flux"):
        preset = Neighborhood.preset(model)
        assert isinstance(preset.method, Neighborhood) and preset.source
    with pytest.raises(ValueError, match="unknown model 'sd3'; model names are"):
        Neighborhood.preset("sd3")
    buf = io.StringIO()
    info = Neighborhood(window=(3, 7, 7)).describe((4, 24, 32), text_len=16, heads=2, file=buf)
    assert "visited blocks" in buf.getvalue()
    assert 0 < info["mask_density"] <= info["video_density"] <= 1
    assert info["video_density"] <= info["video_density_rowmajor"] + 1e-12
    assert info["flops"] < info["dense_flops"]


@pytest.mark.parametrize("family", ["wan", "hunyuan_video", "flux"])
def test_apply_tiny_pipeline(family):
    apply_to_tiny_pipeline(family, Neighborhood(window=(2, 3, 3), block_size=16, backend="reference"))


@pytest.mark.slow
def test_flex_compiled_tiled():
    grid = (4, 8, 8)
    layout = TokenLayout(grid, 16, "first")
    method = Neighborhood(window=(3, 5, 5), stride=(1, 1, 2), block_size=16, tiling=(1, 4, 4), backend="flex")
    check_method(method, layout, ref.natten_mask(grid, (3, 5, 5), (1, 1, 2), (1, 1, 1), (False,) * 3), atol=2e-4)


def test_user_permutation_is_respected():
    """A layout that already carries a token order is used as given (the method does not re-tile)."""
    grid = (2, 5, 6)
    perm = torch.randperm(60, generator=torch.Generator().manual_seed(3))
    layout = TokenLayout(grid, 4, "first", permutation=perm)
    method = Neighborhood(window=(2, 3, 3), stride=(1, 2, 1), block_size=16, backend="reference")
    check_method(method, layout, ref.natten_mask(grid, (2, 3, 3), (1, 2, 1), (1, 1, 1), (False,) * 3, perm.tolist()))


def test_compiled_fullgraph():
    grid = (2, 4, 8)
    layout = TokenLayout(grid, 8, "last", torch.tensor([[True] * 5 + [False] * 3]))
    method = Neighborhood(window=(2, 3, 3), block_size=16, backend="reference")
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 72, 2, 16, generator=g) for _ in range(3))

    def f(q, k, v, mask):
        return method(q, k, v, TokenLayout(grid, 8, "last", mask))

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(q, k, v, layout.text_mask), method(q, k, v, layout))


def test_layouts_are_cached_per_method_object():
    method = Neighborhood(window=3, block_size=16, backend="reference")

    def build(m):
        return m.video_block_layout(TokenLayout((2, 6, 8)), batch=1, heads=1, device="cpu")

    first = build(method)
    assert build(method) is first  # a new TokenLayout of the same sizes hits the cache
    assert build(Neighborhood(window=3, block_size=16)) is not first  # no state shared between objects
    method.clear_cache()
    assert build(method) is not first


# ---------------------------------------------------------------------- tile-aligned (granularity="tile")
@st.composite
def tile_configs(draw, grid, tile):
    """Per-axis (window, stride) in tokens, multiples of the tile (or a whole-axis window), and causal flags."""
    window, stride, causal = [], [], []
    for n, t in zip(grid, tile, strict=True):
        m = -(-n // t)
        w = draw(st.sampled_from([-1] + [t * i for i in range(1, m + 2)]))  # m + 1 tiles: clamped
        window.append(w)
        stride.append(t * draw(st.integers(1, max(1, min(m, (w // t) if w != -1 else m)))))
        causal.append(draw(st.booleans()))
    return tuple(window), tuple(stride), tuple(causal)


def reference_tile_mask(grid, tile, window, stride, causal):
    """Independent clamping (window to the number of tiles, stride to the window) + the tile reference."""
    wt, st_ = [], []
    for n, t, w, s in zip(grid, tile, window, stride, strict=True):
        m = -(-n // t)
        w_t = m if w == -1 else min(w // t, m)
        wt.append(w_t)
        st_.append(1 if w == -1 else min(s // t, w_t))
    return ref.tiled_natten_mask(grid, tile, wt, st_, causal)


@settings(max_examples=20)
@given(data=st.data())
def test_tile_granularity_equals_masked_dense(data):
    grid = data.draw(grids(max_tokens=96))
    tile = data.draw(st.sampled_from(fitting_tiles(grid, 16)))
    window, stride, causal = data.draw(tile_configs(grid, tile))
    batch = data.draw(st.integers(1, 2))
    layout = data.draw(text_layouts(grid, batch))
    method = Neighborhood(window=window, stride=stride, causal=causal, block_size=16, tiling=tile,
                          granularity="tile", backend="reference")
    check_method(method, layout, reference_tile_mask(grid, tile, window, stride, causal), batch=batch,
                 seed=data.draw(st.integers(0, 100)))


@pytest.mark.parametrize("side", [None, "first", "last"])
def test_tile_granularity_triton_interpreted(side):
    grid = (3, 5, 6)  # padded to (4, 8, 8) with (2, 4, 2) tiles
    mask = torch.tensor([[True] * 13 + [False] * 3])
    layout = TokenLayout(grid) if side is None else TokenLayout(grid, 16, side, mask if side == "last" else None)
    method = Neighborhood(window=(4, 8, 6), stride=(2, 4, 2), block_size=16, tiling=(2, 4, 2), granularity="tile",
                          backend="triton")
    check_method(method, layout, reference_tile_mask(grid, (2, 4, 2), (4, 8, 6), (2, 4, 2), (False,) * 3), atol=1e-4)


def test_tile_granularity_automatic_tile_and_errors():
    method = Neighborhood(window=(18, 24, 24), stride=(6, 8, 8), granularity="tile")
    assert method.tile_for((33, 45, 80)) == (2, 8, 8)
    info = method.describe((33, 45, 80), text_len=256, heads=24, file=None)
    assert info["tile_aligned"] and info["partial_blocks"] == 0 and info["full_fraction"] == 1.0
    assert info["positions"] == 34 * 48 * 80
    with pytest.raises(ValueError, match="granularity must be one of"):
        Neighborhood(window=3, granularity="block")
    with pytest.raises(ValueError, match="granularity='tile' needs tiles"):
        Neighborhood(window=8, granularity="tile", tiling=False)
    with pytest.raises(ValueError, match="dilation 1 only"):
        Neighborhood(window=8, dilation=2, granularity="tile")
    with pytest.raises(ValueError, match=r"tiling \(2, 8, 4\) holds 64 tokens"):
        Neighborhood(window=8, granularity="tile", tiling=(2, 8, 4))
    q = torch.zeros(1, 4 * 16 * 16, 1, 16)
    with pytest.raises(ValueError, match="no tile of 128 tokens"):
        Neighborhood(window=(3, 5, 5), granularity="tile")(q, q, q, TokenLayout((4, 16, 16)))
    bad = Neighborhood(window=(2, 8, 12), stride=(2, 8, 8), granularity="tile", tiling=(2, 8, 8))
    with pytest.raises(ValueError, match="window and stride on axis W must be multiples of the tile side 8"):
        bad(q, q, q, TokenLayout((4, 16, 16)))
    strict = Neighborhood(window=(2, 8, 32), stride=(2, 8, 8), granularity="tile", tiling=(2, 8, 8), clamp=False)
    with pytest.raises(ValueError, match="window on axis W must be at most the 2 tiles of 8"):
        strict(q, q, q, TokenLayout((4, 16, 16)))


TILE_METHODS = {  # tile-aligned configurations for the tiny pipelines' grids (Wan/HunyuanVideo 3x4x4, FLUX 1x8x8)
    "wan": dict(window=(2, 4, 2), stride=(2, 4, 2), tiling=(2, 4, 2)),  # grid padded to 4 x 4 x 4
    "hunyuan_video": dict(window=(2, 4, 2), stride=(2, 4, 2), tiling=(2, 4, 2)),
    "flux": dict(window=(4, 4), stride=(4, 4), tiling=(1, 4, 4)),
}


@pytest.mark.parametrize("family", ["wan", "hunyuan_video", "flux"])
def test_apply_tiny_pipeline_tile_aligned(family):
    apply_to_tiny_pipeline(family, Neighborhood(**TILE_METHODS[family], granularity="tile", block_size=16,
                                                backend="reference"))
