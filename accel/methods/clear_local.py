"""`ClearLocal`: CLEAR's circular local window (ellipsoid for video) as an accel method.

Reference: S. Liu, Z. Tan, X. Wang, "CLEAR: Conv-Like Linearization Revs Pre-Trained Diffusion
Transformers Up", 2024 (arXiv 2412.16112). The exact rule is in :mod:`accel.patterns.clear_local`.
"""

from __future__ import annotations

import dataclasses

from accel.kernels import validate_block_size
from accel.methods.preset import MODEL_FAMILIES, Published
from accel.methods.static import StaticPatternMethod, check_tiling
from accel.patterns.clear_local import ClearLocalRule, check_radius
from accel.schedule import Schedule

__all__ = ["ClearLocal"]


_CLEAR_LOCAL_PUBLISHED = {
    "flux": Published(dict(radius=16), Schedule(), "CLEAR r=16 on FLUX.1 1024^2 (arXiv 2412.16112)"),
    "hunyuan_video": Published(dict(radius=16, radius_t=4), Schedule(dense_steps=12), "ours (video extension)"),
    "wan": Published(dict(radius=16, radius_t=4), Schedule(dense_steps=12), "ours (video extension)"),
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
            tuple ``(tt, th, tw)`` of powers of two. Never changes the result, only speed.
        backend: kernel backend, keyword-only (see :class:`accel.methods.base.AttentionMethod`).

    CLEAR is a *fine-tuned* linearisation (the paper distils FLUX's attention layers into the local
    window); applied training-free, quality depends on the radius.
    """

    radius: float = 16
    radius_t: float | None = None
    block_size: int = 128
    tiling: bool | tuple = True

    def __post_init__(self) -> None:
        check_radius("radius", self.radius)
        check_radius("radius_t", self.radius_t, allow_none=True)
        validate_block_size("block_size", self.block_size)
        check_tiling(self.tiling)
        super().__post_init__()

    def rule(self, grid):
        """The :class:`~accel.patterns.clear_local.ClearLocalRule` on ``grid``."""
        return ClearLocalRule(tuple(grid), self.radius, self.radius_t)

    @classmethod
    def published(cls, model: str) -> Published | None:
        """The configuration for a model of family ``flux``, ``hunyuan_video`` or ``wan``
        (``ClearLocal.preset(model)``; see :meth:`~accel.methods.base.AttentionMethod.preset`).

        * ``flux``: ``radius=16`` on FLUX.1's 64 x 64 token grid at 1024^2 (the paper's r = 16 setting,
          arXiv 2412.16112, which also reports r = 8 and 32); no dense steps.
        * ``hunyuan_video`` / ``wan``: ``radius=16, radius_t=4`` -- ours (CLEAR is an image method; the
          ellipsoid is our video extension), first 12 of 50 steps dense (Radial's recipe).
        """
        return _CLEAR_LOCAL_PUBLISHED.get(MODEL_FAMILIES.get(model))
