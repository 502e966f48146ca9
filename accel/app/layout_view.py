"""What a method computed: the block layout it ran (as a picture) and the executed attention density.

The density of one self-attention call is the fraction of (query, key) pairs of the joint sequence
that lie in computed blocks -- :meth:`~accel.patterns.method.StaticPatternMethod.describe`'s
``density`` at the recorded :class:`~accel.TokenLayout`. The executed density of a whole pipeline call
averages it over every (step, layer) pair of self-attention, counting the pairs that the
:class:`~accel.Schedule` keeps dense as 1.
"""

from __future__ import annotations

import numpy as np
import torch

from accel.grid import TokenLayout

__all__ = ["call_density", "executed_density", "video_block_kinds", "block_kinds_image", "KIND_COLOURS"]

#: RGB colour per block kind of :meth:`accel.kernels.BlockLayout.block_kinds`: skipped, full, partial.
KIND_COLOURS = np.array([[242, 242, 242], [31, 78, 140], [122, 172, 222]], dtype=np.uint8)


def _is_static_pattern(method) -> bool:
    from accel.patterns.method import StaticPatternMethod

    return isinstance(method, StaticPatternMethod)


def call_density(method, layout: TokenLayout) -> float | None:
    """Density of one sparse self-attention call of ``method`` at ``layout`` (1.0 for dense attention).

    Args:
        method: an accel attention method, or ``None`` (upstream attention).
        layout: the token layout the transformer recorded (grid, text length and side).

    Returns:
        The fraction of query-key pairs of the joint sequence in computed blocks, ``1.0`` for
        ``None`` and :class:`accel.Dense`, or ``None`` for methods whose layout is chosen per call
        from the data (Rectified, Agent), which cannot be stated without recording the call.
    """
    from accel.methods.dense import Dense

    if method is None or isinstance(method, Dense):
        return 1.0
    if not _is_static_pattern(method):
        return None
    return float(method.describe(layout, file=None)["density"])


def executed_density(method, schedule, layout: TokenLayout, *, num_layers: int, num_steps: int) -> float | None:
    """Mean density over every (step, layer) self-attention pair of one pipeline call.

    Args:
        method: as in :func:`call_density`.
        schedule: the :class:`accel.Schedule` in force (``None``: never dense).
        layout: the recorded token layout (the same at every step of a call).
        num_layers: self-attention layers that got the method, an int >= 1.
        num_steps: denoising steps of the call, an int >= 1.

    Returns:
        ``(dense pairs + sparse pairs * call density) / all pairs``, or ``None`` when
        :func:`call_density` is ``None``.
    """
    sparse = call_density(method, layout)
    if sparse is None:
        return None
    if schedule is None or method is None:
        return sparse
    dense_pairs = sum(schedule.is_dense(step, layer, num_steps, num_layers)
                      for step in range(num_steps) for layer in range(num_layers))
    total = num_steps * num_layers
    return (dense_pairs + (total - dense_pairs) * sparse) / total


def video_block_kinds(method, layout: TokenLayout) -> tuple[torch.Tensor, int] | None:
    """The video x video block map the method runs at ``layout``, in the token order it runs in.

    Args:
        method: an accel attention method or ``None``.
        layout: the recorded token layout (only its grid is used).

    Returns:
        ``(kinds, block)``: int8 ``[NQ, NKV]`` (0 skipped, 1 full, 2 partial; tile order when the
        method tiles) and the block size in tokens; every block full for ``None`` and
        :class:`accel.Dense` (drawn with 128-token blocks); ``None`` for methods whose layout depends
        on the data.
    """
    from accel.methods.dense import Dense

    grid = tuple(layout.grid)
    n = grid[0] * grid[1] * grid[2]
    if method is None or isinstance(method, Dense):
        block = 128
        nb = -(-n // block)
        return torch.ones(nb, nb, dtype=torch.int8), block
    if not _is_static_pattern(method):
        return None
    video = TokenLayout(grid, permutation=method.tile_permutation(grid))
    blocks = method.video_block_layout(video, batch=1, heads=1, device=torch.device("cpu"))
    kinds = blocks.block_kinds()
    return kinds.reshape(kinds.shape[-2], kinds.shape[-1]), method.block_size


def block_kinds_image(kinds: torch.Tensor, *, target: int = 256) -> np.ndarray:
    """An RGB picture (uint8 ``[H, W, 3]``) of a block map, each block an equal square of pixels.

    Args:
        kinds: int8 ``[NQ, NKV]`` block kinds (0 skipped, 1 full, 2 partial), coloured with
            :data:`KIND_COLOURS`; rows are query blocks (top to bottom), columns key blocks.
        target: the longer side is scaled up by an integer factor to at least ``target`` pixels
            when the map is smaller (never scaled down).
    """
    k = kinds.cpu().numpy().astype(np.int64)
    if k.ndim != 2 or k.min(initial=0) < 0 or k.max(initial=0) > 2:
        raise ValueError(f"kinds must be a 2-D map of values 0, 1, 2, got shape {tuple(kinds.shape)}")
    scale = max(1, -(-target // max(k.shape)))
    return KIND_COLOURS[k].repeat(scale, axis=0).repeat(scale, axis=1)
