"""Pictures of the block layout a method runs, and a density recorder that keeps one call's layout.

Static patterns have one layout per grid (:func:`video_block_kinds`, computed outside the timed call);
data-dependent methods (Rectified, Agent) choose theirs per call, so :class:`LayoutRecorder` -- the
eval suite's :class:`~accel.eval.recorder.DensityRecorder`, which measures the executed density --
also keeps the layout of the first sparse call.
"""

from __future__ import annotations

import numpy as np
import torch

from accel.grid import TokenLayout

__all__ = ["video_block_kinds", "block_kinds_image", "KIND_COLOURS", "LayoutRecorder"]

#: RGB colour per block kind of :meth:`accel.kernels.BlockLayout.block_kinds`: skipped, full, partial.
KIND_COLOURS = np.array([[242, 242, 242], [31, 78, 140], [122, 172, 222]], dtype=np.uint8)


def _recorder_base():
    from accel.eval.recorder import DensityRecorder

    return DensityRecorder


class LayoutRecorder(_recorder_base()):
    """A :class:`~accel.eval.recorder.DensityRecorder` that also keeps ``first_layout``: the
    :class:`~accel.kernels.BlockLayout` of the first kernel call of the first sparse attention call it
    records (for Rectified, its video x video selection; for Agent, agents x keys). ``None`` until then.
    Re-planning that one call adds one selection's cost to the recorded pipeline call.
    """

    def __init__(self) -> None:
        super().__init__()
        self.first_layout = None

    def record_call(self, binding, method, q, k, v, layout: TokenLayout, scale) -> None:
        """As the base class; on the first call also keep that call's first kernel layout."""
        super().record_call(binding, method, q, k, v, layout, scale)
        if self.first_layout is None:
            from accel.eval.recorder import kernel_layouts

            self.first_layout = kernel_layouts(method, q, k, v, layout, scale=scale)[0]


def _is_static_pattern(method) -> bool:
    from accel.methods.static import StaticPatternMethod

    return isinstance(method, StaticPatternMethod)


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
            :data:`KIND_COLOURS`; rows are query blocks (top to bottom), columns key blocks. A
            ``[B, H, NQ, NKV]`` map (per batch element and head) is drawn for element 0, head 0.
        target: the longer side is scaled up by an integer factor to at least ``target`` pixels
            when the map is smaller (never scaled down).
    """
    k = kinds.cpu().numpy().astype(np.int64)
    if k.ndim == 4:  # [B|1, H|1, NQ, NKV]: the first batch element and head
        k = k[0, 0]
    if k.ndim != 2 or k.min(initial=0) < 0 or k.max(initial=0) > 2:
        raise ValueError(f"kinds must be a 2-D map of values 0, 1, 2, got shape {tuple(kinds.shape)}")
    scale = max(1, -(-target // max(k.shape)))
    return KIND_COLOURS[k].repeat(scale, axis=0).repeat(scale, axis=1)
