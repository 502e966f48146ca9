"""accel.Neighborhood: exact against the reference GNA rule, tiling-invariant, through accel.apply."""

from __future__ import annotations

import io

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from accel.grid import TokenLayout
from accel.methods.neighborhood import Neighborhood

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
