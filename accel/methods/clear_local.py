"""`ClearLocal`: CLEAR's circular local window (ellipsoid for video) as an accel method.

Reference: S. Liu, Z. Tan, X. Wang, "CLEAR: Conv-Like Linearization Revs Pre-Trained Diffusion
Transformers Up", 2024 (arXiv 2412.16112). The exact rule is in :mod:`accel.patterns.clear_local`.
"""

from __future__ import annotations

import dataclasses

from accel.kernels import validate_block_size
from accel.methods.preset import MODEL_FAMILIES, Published
from accel.methods.static import StaticPatternMethod, check_tile_size, check_tiling
from accel.patterns.clear_local import ClearLocalRule, check_radius
from accel.patterns.tiled import TiledClearLocalRule, ball_tile
from accel.schedule import Schedule

__all__ = ["ClearLocal", "GRANULARITIES"]

GRANULARITIES = ("token", "block", "tile")


_VIDEO = dict(radius=16, radius_t=4, granularity="block", tiling=(2, 8, 8))
_CLEAR_LOCAL_PUBLISHED = {
    "flux": Published(dict(radius=16), Schedule(), "CLEAR r=16 on FLUX.1 1024^2 (arXiv 2412.16112), exact disc"),
    "hunyuan_video": Published(_VIDEO, Schedule(dense_steps=12),
                               "ours (video extension), rounded up to whole (2, 8, 8) tiles"),
    "wan": Published(_VIDEO, Schedule(dense_steps=12), "ours (video extension), rounded up to whole (2, 8, 8) tiles"),
}


@dataclasses.dataclass(frozen=True, eq=False)
class ClearLocal(StaticPatternMethod):
    """CLEAR local attention: each image/video token attends the tokens within a radius.

    A query at ``(t, y, x)`` attends the key at ``(t', y', x')`` iff ``(y - y')^2 + (x - x')^2 <
    radius^2`` (``radius_t=None``), or ``((t - t') * radius / radius_t)^2 + (y - y')^2 + (x - x')^2 <
    radius^2``. Strict inequality, evaluated exactly; the disc is cut at the borders (not shifted).
    Image/video queries also attend every valid text key; text queries attend every valid key.

    Args:
        radius: spatial radius in latent tokens, a finite number > 0 (default 16, one of the
            paper's FLUX settings; the paper trains 8, 16 and 32 at 1024^2, i.e. a 64 x 64 grid).
        radius_t: temporal semi-axis in latent frames (finite, > 0), or ``None`` (default): no
            temporal limit, the same disc in every frame (the image rule applied per frame pair).
        block_size: query/key block size of the kernel, a power of two >= 16 (default 128).
        tiling: token order: ``True`` (default) tiles chosen per grid, ``False`` row-major, or a
            tuple ``(tt, th, tw)`` of powers of two. With ``granularity="token"`` it never changes the
            result, only speed; with ``"block"`` and ``"tile"`` the tile is part of the rule.
        granularity: ``"token"`` (default): CLEAR's exact disc/ellipsoid (partial blocks wherever
            it cuts a block). ``"block"``: the exact rule *rounded up to whole blocks*, every visited
            block computed whole (as Radial attention executes its mask, arXiv 2506.19852): with
            tiling on, blocks are the tiles of the grid padded to whole tiles (a query tile attends a
            key tile iff one of their real token pairs is within the radius;
            :class:`accel.patterns.tiled.TiledClearLocalRule` ``mode="any"``); with
            ``tiling=False``, row-major blocks. ``"tile"``: a tile-aligned disc/ellipsoid, the
            inequality evaluated between tile centres (``mode="centre"``; tiling must be on). In the
            two tile-decided modes an automatic tile (``tiling=True``) is the power-of-two tile of
            ``block_size`` tokens closest to a ball in CLEAR's metric (time weighted by ``radius /
            radius_t``), e.g. ``(2, 8, 8)`` for ``radius=16, radius_t=4``.
        backend: kernel backend, keyword-only (see :class:`accel.methods.base.AttentionMethod`).

    CLEAR is a *fine-tuned* linearisation (the paper distils FLUX's attention layers into the local
    window); applied training-free, quality depends on the radius.
    """

    radius: float = 16
    radius_t: float | None = None
    block_size: int = 128
    tiling: bool | tuple = True
    granularity: str = "token"

    def __post_init__(self) -> None:
        check_radius("radius", self.radius)
        check_radius("radius_t", self.radius_t, allow_none=True)
        validate_block_size("block_size", self.block_size)
        check_tiling(self.tiling)
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {GRANULARITIES}, got {self.granularity!r}")
        if self.granularity == "tile" and self.tiling is False:
            raise ValueError("granularity='tile' needs tiles: tiling must be True or a tuple (tt, th, tw), got False")
        if self._tile_mode() and isinstance(self.tiling, tuple):
            check_tile_size(self.tiling, self.block_size)
        super().__post_init__()

    def _tile_mode(self) -> bool:
        return self.granularity == "tile" or (self.granularity == "block" and self.tiling is not False)

    def padded_tile(self, grid):
        """The tile of the tile-decided modes on ``grid``: ``tiling`` when a tuple, else
        :func:`accel.patterns.tiled.ball_tile` in CLEAR's metric."""
        if isinstance(self.tiling, tuple):
            return self.tiling
        scale_t = 0.0 if self.radius_t is None else float(self.radius) / float(self.radius_t)
        return ball_tile(tuple(grid), self.block_size, (scale_t, 1.0, 1.0))

    def tile_rule_on(self, tiles):
        """The :class:`~accel.patterns.tiled.TiledClearLocalRule` of the tile-decided modes."""
        return TiledClearLocalRule(tiles, self.radius, self.radius_t, "any" if self.granularity == "block" else "centre")

    def rule(self, grid):
        """The :class:`~accel.patterns.clear_local.ClearLocalRule` on ``grid``."""
        return ClearLocalRule(tuple(grid), self.radius, self.radius_t)

    @classmethod
    def published(cls, model: str) -> Published | None:
        """The configuration for a model of family ``flux``, ``hunyuan_video`` or ``wan``
        (``ClearLocal.preset(model)``; see :meth:`~accel.methods.base.AttentionMethod.preset`).

        * ``flux``: ``radius=16`` on FLUX.1's 64 x 64 token grid at 1024^2 (the paper's r = 16 setting,
          arXiv 2412.16112, which also reports r = 8 and 32); the exact disc (``granularity="token"``);
          no dense steps.
        * ``hunyuan_video`` / ``wan``: ``radius=16, radius_t=4`` -- ours (CLEAR is an image method; the
          ellipsoid is our video extension) -- *rounded up to whole tiles* of ``(2, 8, 8)``
          (``granularity="block"``: every visited block full, the grid padded to whole tiles); first
          12 of 50 steps dense (Radial's recipe). ``granularity="token"`` gives the exact ellipsoid.
        """
        return _CLEAR_LOCAL_PUBLISHED.get(MODEL_FAMILIES.get(model))
