"""Shared machinery of the static-pattern attention methods (Radial, ClearLocal, Neighborhood).

:class:`StaticPatternMethod` is an :class:`~accel.methods.base.AttentionMethod` whose video x video
pattern is a :class:`~accel.patterns.blocks.GridRule` of the call's grid. It provides

* :meth:`~StaticPatternMethod.video_block_layout`: the exact analytic block layout, cached per
  (rule, token order, block size, granularity, device) in an LRU owned by the method object (no
  process-wide state: two pipelines with different methods never share or evict each other's);
* :meth:`~StaticPatternMethod.video_token_mask`: the brute-force token rule (tests);
* tiling: when the method's tile order is on, :meth:`~StaticPatternMethod.forward` gathers the
  video tokens of q/k/v into tile order once, runs the kernel with a permuted
  :class:`~accel.TokenLayout`, and scatters the output back (one gather each way);
* :meth:`~StaticPatternMethod.describe`: density, visited blocks and attention FLOPs for a resolution.
"""

from __future__ import annotations

import collections
import dataclasses
import sys

import torch

from accel.grid import TokenLayout
from accel.methods.base import AttentionMethod
from accel.patterns.blocks import (
    GridRule,
    block_kind_counts,
    build_grid_layout,
    lru_memo,
    order_key,
    prepend_text_blocks,
)
from accel.patterns.tiling import choose_tile, grid_coords, inverse_permutation, tile_order

__all__ = ["StaticPatternMethod", "check_tiling"]

_ORDER_KEY = "accel.methods.static.order_key"
_CACHE_SIZE = 32  # entries per method object (layouts, tile choices, permutations, tiled TokenLayouts)
_TILED = "accel.methods.static.tiled_layout"


def check_tiling(value) -> None:
    """Validate a ``tiling`` field: True (automatic tile), False (row-major) or a tuple of three
    powers of two ``(tt, th, tw)``."""
    if isinstance(value, bool):
        return
    if (isinstance(value, tuple) and len(value) == 3
            and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 and v & (v - 1) == 0 for v in value)):
        return
    raise ValueError(f"tiling must be True, False or a tuple of three powers of two (tt, th, tw), got {value!r}")


@dataclasses.dataclass(frozen=True, eq=False)
class StaticPatternMethod(AttentionMethod):
    """Base of the static-pattern methods; subclasses define their fields and :meth:`rule`.

    Subclass contract: a ``block_size`` field (power of two >= 16), :meth:`rule` (the validated
    :class:`~accel.patterns.blocks.GridRule` for a grid), and optionally :attr:`granularity` and
    :meth:`tile_for`.
    """

    #: ``"token"``: exact rule with partial blocks; ``"block"``: rule rounded up to whole blocks
    granularity = "token"

    def _memo(self, key, build):
        """Memoise ``build()`` under ``key`` in this method object's own LRU (no process-wide state)."""
        store = self.__dict__.setdefault("_pattern_cache", collections.OrderedDict())
        return lru_memo(store, key, build, size=_CACHE_SIZE)

    def clear_cache(self) -> None:
        """Forget the layouts, tile choices and permutations this method object has cached."""
        self.__dict__.pop("_pattern_cache", None)
        self.__dict__.pop("_rules", None)
        store = getattr(self, "_static_layouts", None)
        if store is not None:
            store.clear()

    def rule(self, grid: tuple[int, int, int]) -> GridRule:  # pragma: no cover - abstract
        """The token rule of this method on ``grid`` (raises ``ValueError`` for parameters the grid cannot take)."""
        raise NotImplementedError

    def _rule(self, grid) -> GridRule:
        rules = self.__dict__.setdefault("_rules", {})
        if grid not in rules:
            rules[grid] = self.rule(tuple(grid))
        return rules[grid]

    def tile_for(self, grid: tuple[int, int, int]) -> tuple[int, int, int] | None:
        """The tile shape of the token order used on ``grid``, or ``None`` for row-major order.

        ``tiling=True`` picks one with :func:`~accel.patterns.tiling.choose_tile` (cached); a tuple is
        used as given; ``False`` (or no ``tiling`` field) gives ``None``. Grids of at most one block
        are never tiled (nothing to gain).
        """
        tiling = getattr(self, "tiling", False)
        if tiling is False:
            return None
        t, h, w = grid
        if t * h * w <= self.block_size:
            return None
        if tiling is True:
            rule = self._rule(grid)
            return self._memo(("tile", rule.key(), self.block_size), lambda: choose_tile(rule, self.block_size))
        return tiling

    def tile_permutation(self, grid: tuple[int, int, int]) -> torch.Tensor | None:
        """int64 ``[T*H*W]`` (CPU): the tiled token order for ``grid`` (``TokenLayout.permutation``
        semantics), or ``None`` when the method runs in row-major order."""
        pair = self._perm_pair(grid)
        return None if pair is None else pair[0]

    def _perm_pair(self, grid):
        tile = self.tile_for(grid)
        if tile is None:
            return None
        rule = self._rule(grid)

        def build():
            perm = tile_order(rule.rule_coords(grid_coords(grid)), tile)
            return perm, inverse_permutation(perm)

        return self._memo(("perm", rule.key(), tile), build)

    # ------------------------------------------------------------------ AttentionMethod hooks
    def video_block_layout(self, tokens: TokenLayout, *, batch: int, heads: int, device: torch.device):
        """Exact block layout of the rule over the video tokens in ``tokens``' order (cached).

        Arguments as in :meth:`AttentionMethod.video_block_layout`; the layout is batch- and
        head-independent (broadcast dimensions 1).
        """
        rule = self._rule(tokens.grid)
        okey = tokens.cache.get(_ORDER_KEY)
        if okey is None:
            okey = order_key(tokens.permutation)
            tokens.cache[_ORDER_KEY] = okey
        dev = torch.device(device)
        key = (rule.key(), okey, self.block_size, self.granularity, str(dev))
        return self._memo(("layout",) + key, lambda: build_grid_layout(
            rule, tokens.video_coords("cpu"), self.block_size, self.block_size, granularity=self.granularity,
            device=dev))

    def build_block_layout(self, tokens: TokenLayout, *, batch: int, heads: int, device: torch.device):
        """One layout for the whole joint sequence when that is exact and cheap, else ``None``.

        Besides the base class's cases (no text, or a dense video pattern), fuses text placed
        *first* whose length is a multiple of ``block_size`` and has no padding mask (FLUX: 512 text
        tokens): the text blocks are prepended as full blocks, so one kernel call replaces the three
        calls and the log-sum-exp merge of the default text rule. Other text layouts return ``None``
        (three calls, merged exactly).
        """
        fused = super().build_block_layout(tokens, batch=batch, heads=heads, device=device)
        if fused is not None:
            return fused
        b = self.block_size
        if tokens.text_side != "first" or tokens.text_mask is not None or tokens.text_len % b:
            return None
        video = self._cached_video_layout(tokens, batch, heads, device)
        return self._cached(tokens, ("joint_text_first",), batch, heads, device,
                            lambda: prepend_text_blocks(video, tokens.text_len))

    def video_token_mask(self, tokens: TokenLayout, *, batch: int, heads: int, device="cpu") -> torch.Tensor:
        """The brute-force video x video rule, bool ``[1, 1, N, N]`` (tests / tiny sizes only)."""
        mask = self._rule(tokens.grid).token_mask(tokens.video_coords("cpu"))
        return mask[None, None].to(device)

    def forward(self, q, k, v, tokens: TokenLayout, *, scale=None):
        """Attention with the pattern; in tile order when tiling is on (see the module docstring).

        A layout that already carries a permutation is used as given (no second permutation).
        """
        pair = None if tokens.permutation is not None else self._perm_pair(tokens.grid)
        if pair is None:
            return super().forward(q, k, v, tokens, scale=scale)
        tiled = self._tiled_layout(tokens, pair[0])
        dev = q.device
        perm, inv = self._perm_on(tokens, pair, dev)
        vs, ts = tokens.video_slice, tokens.text_slice

        def to_tiles(x):
            video = x[:, vs].index_select(1, perm)
            if tokens.text_len == 0:
                return video
            parts = (x[:, ts], video) if tokens.text_side == "first" else (video, x[:, ts])
            return torch.cat(parts, dim=1)

        out = super().forward(to_tiles(q), to_tiles(k), to_tiles(v), tiled, scale=scale)
        video = out[:, vs].index_select(1, inv)
        if tokens.text_len == 0:
            return video
        parts = (out[:, ts], video) if tokens.text_side == "first" else (video, out[:, ts])
        return torch.cat(parts, dim=1)

    def _perm_on(self, tokens, pair, device):
        key = ("perm_on", self._rule(tokens.grid).key(), self.tile_for(tokens.grid), str(device))
        return self._memo(key, lambda: (pair[0].to(device), pair[1].to(device)))

    def _tiled_layout(self, tokens: TokenLayout, perm: torch.Tensor) -> TokenLayout:
        cached = tokens.cache.get((_TILED, id(self)))
        if cached is not None:
            return cached
        rule_key = self._rule(tokens.grid).key()

        def build():
            tiled = TokenLayout(tokens.grid, tokens.text_len, tokens.text_side, tokens.text_mask, perm)
            tiled.cache[_ORDER_KEY] = ("tiled", rule_key, self.tile_for(tokens.grid))
            return tiled

        if tokens.text_mask is None:  # depends on static sizes only: share across calls
            tiled = self._memo(("tiled_layout", tokens.static_key(), rule_key, self.tile_for(tokens.grid)), build)
        else:
            tiled = build()
        tokens.cache[(_TILED, id(self))] = tiled
        return tiled

    # ------------------------------------------------------------------ reporting
    def describe(self, grid, *, text_len: int = 0, heads: int = 1, head_dim: int = 128, batch: int = 1,
                 file=sys.stdout) -> dict:
        """Print and return what this method computes at one resolution.

        Args:
            grid: ``(T, H, W)`` latent token grid (e.g. ``(33, 45, 80)`` for HunyuanVideo 720p, 129
                frames), or a :class:`~accel.TokenLayout` (then ``text_len`` is taken from it).
            text_len: text tokens in the joint sequence (dense under the default text rule).
            heads: attention heads per call; head_dim: head dimension; batch: batch size (FLOPs scale).
            file: where to print (``None``: do not print).

        Returns:
            dict with ``grid``, ``tile`` (tile shape or None), ``video_density`` (fraction of the
            video x video pairs in visited blocks, tiled order when tiling is on),
            ``video_density_rowmajor`` (same in row-major order), ``mask_density`` (fraction of video
            pairs the rule allows), ``full_blocks``, ``partial_blocks``, ``video_blocks``
            (``NQ * NKV``), ``density`` (whole joint sequence, text rule included), ``flops`` and
            ``dense_flops`` (attention matmul FLOPs of one call: ``4 * batch * heads * head_dim *``
            computed pairs), ``speedup_bound`` (``dense_flops / flops``).
        """
        if isinstance(grid, TokenLayout):
            text_len = grid.text_len
            grid = grid.grid
        grid = tuple(int(g) for g in grid)
        rule = self._rule(grid)
        n = grid[0] * grid[1] * grid[2]
        perm = self.tile_permutation(grid)
        tl = TokenLayout(grid, permutation=perm)
        if perm is not None:
            tl.cache[_ORDER_KEY] = ("tiled", rule.key(), self.tile_for(grid))
        video = self.video_block_layout(tl, batch=1, heads=1, device="cpu")
        counts = video.block_counts()
        density = video.density()
        rowmajor = density if perm is None else block_kind_counts(
            rule, grid_coords(grid), self.block_size, self.block_size, granularity=self.granularity)["density"]
        s = n + text_len
        pairs_video = density * n * n
        pairs = pairs_video + n * text_len + text_len * s
        unit = 4.0 * batch * heads * head_dim
        info = {
            "grid": grid,
            "tile": self.tile_for(grid),
            "video_density": density,
            "video_density_rowmajor": rowmajor,
            "mask_density": video.mask_density(),
            "full_blocks": counts["full"],
            "partial_blocks": counts["partial"],
            "video_blocks": counts["blocks"],
            "density": pairs / (s * s),
            "flops": unit * pairs,
            "dense_flops": unit * s * s,
            "speedup_bound": (s * s) / pairs,
        }
        if file is not None:
            print(f"{self!r} on grid {grid} (+{text_len} text tokens), blocks of {self.block_size}:", file=file)
            print(f"  token order: {'tiles of ' + str(info['tile']) if info['tile'] else 'row-major'}", file=file)
            print(f"  video x video: {info['video_density']:.2%} of pairs in visited blocks "
                  f"(row-major: {info['video_density_rowmajor']:.2%}); the rule allows {info['mask_density']:.2%}",
                  file=file)
            print(f"  visited blocks: {info['full_blocks']} full + {info['partial_blocks']} partial "
                  f"of {info['video_blocks']}", file=file)
            print(f"  joint sequence: density {info['density']:.2%}; attention FLOPs per call "
                  f"{info['flops'] / 1e12:.3f} T vs dense {info['dense_flops'] / 1e12:.3f} T "
                  f"(at most {info['speedup_bound']:.2f}x)", file=file)
        return info
