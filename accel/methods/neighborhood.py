"""`Neighborhood`: Generalized Neighborhood Attention (NATTEN 0.21 rules) as an accel method.

Reference: A. Hassani et al., "Generalized Neighborhood Attention: Multi-dimensional Sparse
Attention at the Speed of Light", 2025 (arXiv 2504.16922); NATTEN 0.21. The exact rule is in
:mod:`accel.patterns.neighborhood`.
"""

from __future__ import annotations

import dataclasses

from accel.kernels import validate_block_size
from accel.methods.preset import MODEL_FAMILIES, Published
from accel.methods.static import StaticPatternMethod, check_tile_size, check_tiling
from accel.patterns.neighborhood import NeighborhoodRule, normalize_per_axis
from accel.patterns.tiled import TiledNeighborhoodRule, aligned_tiles
from accel.schedule import Schedule

__all__ = ["Neighborhood", "GRANULARITIES"]

GRANULARITIES = ("token", "tile")


_TILE = dict(granularity="tile", tiling=(2, 8, 8))
_NEIGHBORHOOD_PUBLISHED = {
    "hunyuan_video": Published(dict(window=(18, 24, 24), stride=(6, 8, 8), **_TILE), Schedule(dense_steps=12),
                               "STA's HunyuanVideo window (arXiv 2502.04507) as GNA with STA's one-tile stride "
                               "(arXiv 2504.16922), tile-aligned on (2, 8, 8) tiles of the padded grid; schedule ours"),
    "wan": Published(dict(window=(12, 24, 24), stride=(4, 8, 8), **_TILE), Schedule(dense_steps=12),
                     "ours: STA-like window scaled to Wan's grid, tile-aligned on (2, 8, 8) tiles"),
    "flux": Published(dict(window=(32, 32), stride=(8, 8)), Schedule(),
                      "ours: half-image window on FLUX 1024^2 (exact GNA, token-level)"),
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
            (stride to at most the window; with ``granularity="tile"``: to the number of tiles on the
            axis); when False such a window raises ``ValueError``. Axes of length 1 are ignored either
            way.
        granularity: ``"token"`` (default): NATTEN's exact rule (GNA), windows placed token by token
            (partial blocks where a window cuts a block). ``"tile"``: the *tile-aligned* variant:
            the grid is padded to whole tiles of ``tiling`` (a tuple, or chosen per grid with
            ``True``: the power-of-two tile of ``block_size`` tokens dividing ``window`` and
            ``stride`` with the least padding), and NATTEN's rule is applied to tile coordinates with
            ``window / tile`` and ``stride / tile`` tiles (:class:`accel.patterns.tiled.TiledNeighborhoodRule`):
            no visited block needs a per-token rule (a block whose key tile is cut by the grid border
            excludes its padding keys by their count, a key-prefix tile in today's kernel). Windows and
            strides must be multiples of the tile (or ``-1``), dilation 1, ``tiling`` not False. This is
            Sliding Tile Attention's construction (Zhang et al. 2025, arXiv 2502.04507) and GNA's
            fully block-sparse case (stride = tile, arXiv 2504.16922); where GNA's own windows start on
            tile borders it equals GNA on the padded grid with padding keys excluded.
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
    granularity: str = "token"

    def __post_init__(self) -> None:
        w = normalize_per_axis("window", self.window, default_t=-1)
        s = normalize_per_axis("stride", self.stride, default_t=1)
        d = normalize_per_axis("dilation", self.dilation, default_t=1)
        normalize_per_axis("causal", self.causal, default_t=False, kind=bool)
        for name, vals in (("window", w), ("stride", s), ("dilation", d)):
            for axis, v in zip("THW", vals, strict=True):
                smallest = 1 if self.granularity == "tile" else 2  # a tile-aligned window may be one tile wide
                if name == "window" and not (v == -1 or v >= smallest):
                    raise ValueError(f"window on axis {axis} must be -1 (whole axis) or >= {smallest}, got {v}")
                if name != "window" and v < 1:
                    raise ValueError(f"{name} on axis {axis} must be >= 1, got {v}")
        for axis, wv, sv in zip("THW", w, s, strict=True):
            if wv != -1 and sv > wv:
                raise ValueError(f"stride on axis {axis} must be in [1, window={wv}], got {sv}")
        validate_block_size("block_size", self.block_size)
        check_tiling(self.tiling)
        if not isinstance(self.clamp, bool):
            raise ValueError(f"clamp must be a bool, got {self.clamp!r}")
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {GRANULARITIES}, got {self.granularity!r}")
        if self.granularity == "tile":
            if self.tiling is False:
                raise ValueError("granularity='tile' needs tiles: tiling must be True or a tuple (tt, th, tw), got False")
            if any(x != 1 for x in d):
                raise ValueError(f"granularity='tile' supports dilation 1 only, got dilation={self.dilation!r}")
            if isinstance(self.tiling, tuple):
                check_tile_size(self.tiling, self.block_size)
        super().__post_init__()

    def _tile_mode(self) -> bool:
        return self.granularity == "tile"

    def _per_axis(self):
        return (normalize_per_axis("window", self.window, default_t=-1),
                normalize_per_axis("stride", self.stride, default_t=1),
                normalize_per_axis("causal", self.causal, default_t=False, kind=bool))

    def padded_tile(self, grid):
        """The tile of ``granularity="tile"`` on ``grid``: ``tiling`` when a tuple (checked against the
        window and stride), else the tile of :func:`accel.patterns.tiled.aligned_tiles` with the least padding.

        Raises:
            ValueError: no power-of-two tile of ``block_size`` tokens divides the window and stride.
        """
        window, stride, _ = self._per_axis()
        if isinstance(self.tiling, tuple):
            tile = self.tiling
        else:
            fits = self._memo(("aligned_tiles", tuple(grid)), lambda: aligned_tiles(grid, window, stride, self.block_size))
            if not fits:
                raise ValueError(
                    f"granularity='tile': no tile of {self.block_size} tokens (powers of two per axis) divides "
                    f"window={window} and stride={stride} on grid {tuple(grid)}; choose windows and strides that are "
                    "multiples of a tile such as (2, 8, 8), or granularity='token'"
                )
            tile = fits[0]
        for axis, n, w, s_, t in zip("THW", grid, window, stride, tile, strict=True):
            if n > 1 and w != -1 and (w % t or s_ % t):
                raise ValueError(f"granularity='tile': window and stride on axis {axis} must be multiples of the tile "
                                 f"side {t} (tile {tile}), got window={w}, stride={s_}")
        return tile

    def tile_rule_on(self, tiles):
        """The :class:`~accel.patterns.tiled.TiledNeighborhoodRule` of ``granularity="tile"`` (clamped if ``clamp``)."""
        window, stride, causal = self._per_axis()
        wt, st = [], []
        for axis, n, m, w, s_, t in zip("THW", tiles.grid, tiles.tile_grid, window, stride, tiles.tile, strict=True):
            if n == 1:
                wt.append(1)
                st.append(1)
                continue
            w_tiles = -1 if w == -1 else w // t
            if w_tiles > m:
                if not self.clamp:
                    raise ValueError(f"window on axis {axis} must be at most the {m} tiles of {t} on that axis "
                                     f"({m * t} padded tokens), got {w} (clamp=False)")
                w_tiles = m
            wt.append(w_tiles)
            st.append(1 if w_tiles == -1 else min(s_ // t, w_tiles))
        return TiledNeighborhoodRule(tiles, tuple(wt), tuple(st), causal)

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

        The video presets are *tile-aligned* (``granularity="tile"``: every visited block is full, see
        the class docstring); pass ``granularity="token"`` for NATTEN's exact token-level rule with the
        same window and stride.

        * ``hunyuan_video``: window ``(18, 24, 24)``, stride ``(6, 8, 8)``, tile-aligned on tiles of
          ``(2, 8, 8)`` (grid 33 x 45 x 80 padded to 34 x 48 x 80) -- Sliding Tile Attention's
          HunyuanVideo window (3 x 3 x 3 tiles of (6, 8, 8); Zhang et al. 2025, arXiv 2502.04507)
          written as GNA with STA's one-tile stride (arXiv 2504.16922). With these parameters the
          tile rule equals GNA on the padded grid (windows start on tile borders); it differs from
          GNA on the unpadded grid only where windows are shifted at the far T and H borders. Not
          the GNA paper's own table, which we could not verify. Schedule: first 12 of 50 steps dense
          (our choice, Radial's recipe).
        * ``wan``: window ``(12, 24, 24)``, stride ``(4, 8, 8)``, tile-aligned on ``(2, 8, 8)`` tiles
          (21 x 45 x 80 padded to 22 x 48 x 80) -- our scaling of the same window to Wan's grid (not
          a published setting; each group of 4 frames sees 4 frames before and after it).
        * ``flux``: window ``(32, 32)``, stride ``(8, 8)``, token-level (exact GNA) on FLUX's 64 x 64
          image grid -- our choice (the GNA paper reports FLUX results at 4K; its exact 1024^2 setting
          is not reproduced here). A stride of 8 fits no 128-token tile, so this preset is not
          tile-aligned.
        """
        return _NEIGHBORHOOD_PUBLISHED.get(MODEL_FAMILIES.get(model))
