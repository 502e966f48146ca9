"""`Neighborhood`: Generalized Neighborhood Attention (NATTEN 0.21 rules) as an accel method.

Reference: A. Hassani et al., "Generalized Neighborhood Attention: Multi-dimensional Sparse
Attention at the Speed of Light", 2025 (arXiv 2504.16922); NATTEN 0.21. The exact rule is in
:mod:`accel.patterns.neighborhood`.
"""

from __future__ import annotations

import dataclasses

from accel.kernels import validate_block_size
from accel.methods.preset import MODEL_FAMILIES, Published
from accel.methods.static import StaticPatternMethod, check_tiling
from accel.patterns.neighborhood import NeighborhoodRule, normalize_per_axis
from accel.schedule import Schedule

__all__ = ["Neighborhood"]


_NEIGHBORHOOD_PUBLISHED = {
    "hunyuan_video": Published(dict(window=(18, 24, 24), stride=(6, 8, 8)), Schedule(dense_steps=12),
                               "STA's HunyuanVideo window as GNA with a one-tile stride (arXiv 2502.04507); schedule ours"),
    "wan": Published(dict(window=(12, 24, 24), stride=(3, 8, 8)), Schedule(dense_steps=12),
                     "ours: STA-like window scaled to Wan's grid"),
    "flux": Published(dict(window=(32, 32), stride=(8, 8)), Schedule(), "ours: half-image window on FLUX 1024^2"),
}


@dataclasses.dataclass(frozen=True, eq=False)
class Neighborhood(StaticPatternMethod):
    """Generalized Neighborhood Attention over the video/image token grid.

    Per axis (T, H, W) a query attends the keys of a window of ``window`` tokens, slid with
    ``stride`` and spread by ``dilation``, optionally causal; the window is *shifted* to stay inside
    the axis (never truncated), so every query sees the same number of keys. The exact rule is in
    :mod:`accel.patterns.neighborhood`. Text tokens follow the default text rule (image/video
    queries see every valid text key; text queries see every valid key).

    Args:
        window: window size per axis: an int (all three axes), a 2-tuple ``(H, W)`` (T is then the
            whole axis) or a 3-tuple ``(T, H, W)``. Each entry is ``-1`` (whole axis) or ``>= 2``.
        stride: stride per axis (same forms), each ``>= 1`` and ``<= window``; 1 (default) is
            classic neighbourhood attention, ``stride == window`` blocked attention. For a 2-tuple,
            T gets 1.
        dilation: dilation per axis (same forms), each ``>= 1`` (default 1). For a 2-tuple, T gets 1.
        causal: causal flag per axis: a bool or a 2-/3-tuple of bools (default False); typically
            ``(True, False, False)`` for causal-in-time video.
        block_size: query/key block size of the kernel, a power of two >= 16 (default 128).
        tiling: token order: ``True`` (default) lays tokens out in tiles chosen per grid (fewer
            visited blocks, more full blocks), ``False`` keeps row-major order, a tuple
            ``(tt, th, tw)`` of powers of two fixes the tile. Never changes the result, only speed.
        clamp: when True (default) an axis window larger than the grid allows (``window * dilation
            > axis length``) is reduced to the largest legal window ``axis length // dilation``
            (stride to at most the window); when False such a window raises ``ValueError``. Axes of
            length 1 are ignored either way.
        backend: kernel backend, keyword-only (see :class:`accel.methods.base.AttentionMethod`).

    Raises:
        ValueError: at construction for malformed parameters; at call time for parameters the
            grid cannot take (naming the axis, the value and the allowed range).

    Example::

        out = accel.Neighborhood(window=(3, 7, 7))(q, k, v, accel.TokenLayout(grid=(8, 30, 52)))
    """

    window: int | tuple = 7
    stride: int | tuple = 1
    dilation: int | tuple = 1
    causal: bool | tuple = False
    block_size: int = 128
    tiling: bool | tuple = True
    clamp: bool = True

    def __post_init__(self) -> None:
        w = normalize_per_axis("window", self.window, default_t=-1)
        s = normalize_per_axis("stride", self.stride, default_t=1)
        d = normalize_per_axis("dilation", self.dilation, default_t=1)
        normalize_per_axis("causal", self.causal, default_t=False, kind=bool)
        for name, vals in (("window", w), ("stride", s), ("dilation", d)):
            for axis, v in zip("THW", vals, strict=True):
                if name == "window" and not (v == -1 or v >= 2):
                    raise ValueError(f"window on axis {axis} must be -1 (whole axis) or >= 2, got {v}")
                if name != "window" and v < 1:
                    raise ValueError(f"{name} on axis {axis} must be >= 1, got {v}")
        for axis, wv, sv in zip("THW", w, s, strict=True):
            if wv != -1 and sv > wv:
                raise ValueError(f"stride on axis {axis} must be in [1, window={wv}], got {sv}")
        validate_block_size("block_size", self.block_size)
        check_tiling(self.tiling)
        if not isinstance(self.clamp, bool):
            raise ValueError(f"clamp must be a bool, got {self.clamp!r}")
        super().__post_init__()

    def rule(self, grid):
        """The :class:`~accel.patterns.neighborhood.NeighborhoodRule` on ``grid`` (clamped if ``clamp``)."""
        if self.clamp:
            return NeighborhoodRule.clamped(grid, self.window, self.stride, self.dilation, self.causal)
        return NeighborhoodRule(
            tuple(grid),
            normalize_per_axis("window", self.window, default_t=-1),
            normalize_per_axis("stride", self.stride, default_t=1),
            normalize_per_axis("dilation", self.dilation, default_t=1),
            normalize_per_axis("causal", self.causal, default_t=False, kind=bool),
        )

    @classmethod
    def published(cls, model: str) -> Published | None:
        """The configuration for a model of family ``hunyuan_video``, ``wan`` or ``flux``
        (``Neighborhood.preset(model)``; see :meth:`~accel.methods.base.AttentionMethod.preset`).

        * ``hunyuan_video``: window ``(18, 24, 24)``, stride ``(6, 8, 8)`` -- Sliding Tile Attention's
          HunyuanVideo window (3 x 3 x 3 tiles of (6, 8, 8); Zhang et al. 2025, arXiv 2502.04507)
          written as GNA with a stride of one tile (STA slides its window tile by tile). Not the GNA
          paper's own table, which we could not verify. Schedule: first 12 of 50 steps dense (our
          choice, Radial's recipe).
        * ``wan``: window ``(12, 24, 24)``, stride ``(3, 8, 8)`` on Wan's 21 x 45 x 80 grid -- our
          scaling of the same window to Wan's 4x temporal compression (not a published setting).
        * ``flux``: window ``(32, 32)``, stride ``(8, 8)`` on FLUX's 64 x 64 image grid -- our choice
          (the GNA paper reports FLUX results at 4K; its exact 1024^2 setting is not reproduced here).
        """
        return _NEIGHBORHOOD_PUBLISHED.get(MODEL_FAMILIES.get(model))
