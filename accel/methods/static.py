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
from typing import NamedTuple

import torch

from accel.grid import TokenLayout
from accel.kernels.cost import H200
from accel.methods.base import AttentionMethod
from accel.patterns.blocks import GridRule, block_kind_counts, build_grid_layout, lru_memo, order_key
from accel.patterns.tiled import PaddedTiles, TileRule, build_tile_layout, tile_layout_counts
from accel.patterns.tiling import choose_tile, grid_coords, tile_order

__all__ = ["StaticPatternMethod", "check_tiling", "check_tile_size"]

_ORDER_KEY = "accel.methods.static.order_key"
_CACHE_SIZE = 32  # entries per method object (layouts, tile choices, permutations, tiled TokenLayouts)
_TILED = "accel.methods.static.tiled_layout"


def check_tile_size(tile: tuple[int, int, int], block_size: int) -> None:
    """A tile-aligned configuration's tile must hold exactly one block: ``tt * th * tw == block_size``."""
    if tile[0] * tile[1] * tile[2] != block_size:
        raise ValueError(f"tiling {tile!r} holds {tile[0] * tile[1] * tile[2]} tokens; a tile-aligned configuration "
                         f"needs tt * th * tw == block_size ({block_size})")


class _Order(NamedTuple):
    """A method's token order on one grid."""

    perm: torch.Tensor  # TokenLayout.permutation ([P], -1 at padding positions)
    src: torch.Tensor  # [P]: row-major token read by each position (padding: token 0)
    pos: torch.Tensor  # [T*H*W]: position of each row-major token
    key: tuple  # order_key(perm)


def _layout_order_key(tokens: TokenLayout) -> tuple:
    """``order_key`` of the layout's permutation, computed once per TokenLayout (kept in its cache)."""
    okey = tokens.cache.get(_ORDER_KEY)
    if okey is None:
        okey = order_key(tokens.permutation)
        tokens.cache[_ORDER_KEY] = okey
    return okey


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
    :class:`~accel.patterns.blocks.GridRule` for a grid), and optionally :attr:`granularity`,
    :meth:`tile_for` and, for configurations decided between whole tiles (tile-aligned modes,
    :mod:`accel.patterns.tiled`), :meth:`tile_rule_on` and :meth:`padded_tile`.
    """

    #: ``"token"``: exact rule with partial blocks; ``"block"``: rule rounded up to whole blocks;
    #: ``"tile"``: a rule decided between whole tiles (subclasses say which they accept)
    granularity = "token"

    def _memo(self, key, build):
        """Memoise ``build()`` under ``key`` in this method object's own LRU (no process-wide state)."""
        store = self.__dict__.setdefault("_pattern_cache", collections.OrderedDict())
        return lru_memo(store, key, build, size=_CACHE_SIZE)

    def clear_cache(self) -> None:
        """Forget the layouts, tile choices and permutations this method object has cached."""
        self.__dict__.pop("_pattern_cache", None)
        self.__dict__.pop("_rules", None)
        self.__dict__.pop("_tile_rules", None)
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

    # ------------------------------------------------------------------ tile-aligned configurations
    def tile_rule_on(self, tiles: PaddedTiles) -> TileRule | None:
        """The tile-level rule of this configuration on a padded tiling, or ``None`` when the configuration
        is decided token by token (the default). Subclasses with tile-aligned modes override it."""
        return None

    def padded_tile(self, grid: tuple[int, int, int]) -> tuple[int, int, int]:  # pragma: no cover - abstract
        """The tile of a tile-aligned configuration on ``grid`` (subclasses with tile-aligned modes)."""
        raise NotImplementedError

    @property
    def tile_aligned(self) -> bool:
        """True when this configuration is decided between whole tiles (every visited block full)."""
        return self._tile_mode()

    def _tile_mode(self) -> bool:
        """Whether :meth:`tile_rule_on` applies (subclasses: from their fields; no tiles are built)."""
        return False

    def tile_rule(self, grid: tuple[int, int, int]) -> TileRule | None:
        """The :class:`~accel.patterns.tiled.TileRule` of a tile-aligned configuration on ``grid`` (cached
        per grid), or ``None`` for token-decided configurations."""
        if not self._tile_mode():
            return None
        rules = self.__dict__.setdefault("_tile_rules", {})
        grid = tuple(grid)
        if grid not in rules:
            rules[grid] = self.tile_rule_on(PaddedTiles(grid, self.padded_tile(grid)))
        return rules[grid]

    def tile_for(self, grid: tuple[int, int, int]) -> tuple[int, int, int] | None:
        """The tile shape of the token order used on ``grid``, or ``None`` for row-major order.

        Tile-aligned configurations: their :meth:`padded_tile` (the grid is padded to whole tiles).
        Otherwise ``tiling=True`` picks one with :func:`~accel.patterns.tiling.choose_tile` (cached); a
        tuple is used as given; ``False`` (or no ``tiling`` field) gives ``None``; grids of at most one
        block are never tiled (nothing to gain).
        """
        if self._tile_mode():
            return self.padded_tile(tuple(grid))
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
        """int64 (CPU): this method's token order on ``grid`` as a ``TokenLayout.permutation`` -- ``[T*H*W]``
        for a tiled order, ``[P]`` with ``-1`` at padding positions for a tile-aligned configuration (the
        padded tile order of :class:`~accel.patterns.tiled.PaddedTiles`) -- or ``None`` for row-major
        order. The layouts of :meth:`video_block_layout` are built for this order."""
        order = self._order(tuple(grid))
        return None if order is None else order.perm

    def ordered_video_layout(self, grid: tuple[int, int, int]) -> TokenLayout:
        """A :class:`~accel.TokenLayout` of ``grid``'s video tokens (no text) in this method's own order
        (:meth:`tile_permutation`), ready for :meth:`video_block_layout` (its order key is precomputed)."""
        order = self._order(tuple(grid))
        if order is None:
            return TokenLayout(tuple(grid))
        tokens = TokenLayout(tuple(grid), permutation=order.perm)
        tokens.cache[_ORDER_KEY] = order.key
        return tokens

    def _order(self, grid) -> _Order | None:
        tile = self.tile_for(grid)
        if tile is None:
            return None
        rule = self.tile_rule(grid)
        key = ("order", grid, tile, rule is not None) + (() if rule is not None else (self._rule(grid).key(),))

        def build():
            if rule is not None:
                perm = rule.tiles.order()
            else:
                perm = tile_order(self._rule(grid).rule_coords(grid_coords(grid)), tile)
            real = perm >= 0
            src = torch.where(real, perm, 0)  # padding positions copy token 0 (any real token would do)
            pos = torch.empty(grid[0] * grid[1] * grid[2], dtype=torch.int64)
            pos[perm[real]] = torch.arange(perm.shape[0])[real]
            return _Order(perm, src, pos, order_key(perm))

        return self._memo(key, build)

    # ------------------------------------------------------------------ AttentionMethod hooks
    def video_block_layout(self, tokens: TokenLayout, *, batch: int, heads: int, device: torch.device):
        """Exact block layout of the rule over the video tokens in ``tokens``' order (cached).

        Arguments as in :meth:`AttentionMethod.video_block_layout`; the layout is batch- and
        head-independent (broadcast dimensions 1).
        """
        dev = torch.device(device)
        okey = _layout_order_key(tokens)
        tile_rule = self.tile_rule(tokens.grid)
        if tile_rule is not None:
            own = self._order(tokens.grid)
            if okey != own.key:
                raise ValueError(
                    f"{type(self).__name__}(granularity={self.granularity!r}) has block layouts only in its own padded "
                    "tile order (TokenLayout(grid, permutation=method.tile_permutation(grid))); calling the method "
                    "reorders other layouts itself"
                )
            return self._memo(("tile_layout", tile_rule.key(), self.block_size, str(dev)),
                              lambda: build_tile_layout(tile_rule, self.block_size, device=dev))
        rule = self._rule(tokens.grid)
        key = (rule.key(), okey, self.block_size, self.granularity, str(dev))
        return self._memo(("layout",) + key, lambda: build_grid_layout(
            rule, tokens.video_coords("cpu"), self.block_size, self.block_size, granularity=self.granularity,
            device=dev))

    def video_token_mask(self, tokens: TokenLayout, *, batch: int, heads: int, device="cpu") -> torch.Tensor:
        """The brute-force video x video rule, bool ``[1, 1, P, P]`` over the layout's video positions
        (padding positions attend and are attended by nothing; tests / tiny sizes only)."""
        coords = tokens.video_coords("cpu")
        tile_rule = self.tile_rule(tokens.grid)
        rule = tile_rule if tile_rule is not None else self._rule(tokens.grid)
        real = coords[:, 0] >= 0
        p = coords.shape[0]
        mask = torch.zeros(p, p, dtype=torch.bool)
        mask[real[:, None] & real[None, :]] = rule.token_mask(coords[real]).reshape(-1)
        if self.granularity == "block" and tile_rule is None:  # the rule rounded up to blocks of the order
            b = self.block_size
            nb = -(-p // b)
            padded = torch.zeros(nb * b, nb * b, dtype=torch.bool)
            padded[:p, :p] = mask
            blocks = padded.view(nb, b, nb, b).any(3).any(1)
            mask = blocks.repeat_interleave(b, 0).repeat_interleave(b, 1)[:p, :p]
        return mask[None, None].to(device)

    def forward(self, q, k, v, tokens: TokenLayout, *, scale=None):
        """Attention with the pattern, in this method's token order (see the module docstring).

        * A layout already in this method's order (a permuted forward, or the whole-model order of the
          processors) runs as is: one kernel call, no gather.
        * A layout in row-major order is gathered into the method's order (tiles; padded tiles for a
          tile-aligned configuration), run, and scattered back (one gather each way).
        * A layout in another order runs in that order for token-decided rules (their layouts exist in
          any order); tile-aligned configurations gather it into their own order.
        """
        plan = self.reorder_plan(tokens, q.device)
        if plan is None:
            return super().forward(q, k, v, tokens, scale=scale)
        ordered, src, back = plan
        vs, ts = tokens.video_slice, tokens.text_slice

        def to_order(x):
            video = x[:, vs].index_select(1, src)
            if tokens.text_len == 0:
                return video
            parts = (x[:, ts], video) if tokens.text_side == "first" else (video, x[:, ts])
            return torch.cat(parts, dim=1)

        out = super().forward(to_order(q), to_order(k), to_order(v), ordered, scale=scale)
        video = out[:, ordered.video_slice].index_select(1, back)
        if tokens.text_len == 0:
            return video
        parts = (out[:, ordered.text_slice], video) if tokens.text_side == "first" else (video, out[:, ordered.text_slice])
        return torch.cat(parts, dim=1)

    def reorder_plan(self, tokens: TokenLayout, device) -> tuple[TokenLayout, torch.Tensor, torch.Tensor] | None:
        """How a call on ``tokens`` is brought into this method's order, or ``None`` when it runs as given.

        ``None`` for row-major methods, for layouts already in the method's order, and for layouts in
        another order when the rule is token-decided (its layouts exist in any order). Otherwise
        ``(ordered, src, back)``: the :class:`~accel.TokenLayout` in the method's order (same text),
        int64 ``src [P]`` on ``device`` (video position ``p`` of the ordered sequence takes video
        position ``src[p]`` of ``tokens``; padding positions take any position) and ``back
        [num_video_positions]`` (the inverse: position ``i`` of ``tokens`` is read from ``back[i]``).
        Cached; the processors use it to reorder hidden states once per transformer call.
        """
        own = self._order(tokens.grid)
        if own is None:
            return None
        if tokens.permutation is not None:
            if _layout_order_key(tokens) == own.key or self.tile_rule(tokens.grid) is None:
                return None
        src, back = self._gather_indices(tokens, own, device)
        return self._ordered_layout(tokens, own), src, back

    def _gather_indices(self, tokens: TokenLayout, own: _Order, device) -> tuple[torch.Tensor, torch.Tensor]:
        """(src, back) on ``device``: own position ``p`` reads ``tokens``' video position ``src[p]``; ``tokens``' video
        position ``i`` reads own position ``back[i]`` (padding of either side reads any position)."""
        if tokens.permutation is None:
            key = ("gather", own.key, str(device))
            return self._memo(key, lambda: (own.src.to(device), own.pos.to(device)))
        cache_key = ("accel.methods.static.gather", id(self), str(device))
        hit = tokens.cache.get(cache_key)
        if hit is None:
            given = tokens.permutation.to("cpu")
            real = given >= 0
            at = torch.zeros(tokens.num_video_tokens, dtype=torch.int64)
            at[given[real]] = torch.arange(given.shape[0])[real]
            src = at[own.src]
            back = torch.where(real, own.pos[given.clamp_min(0)], 0)
            hit = (src.to(device), back.to(device))
            tokens.cache[cache_key] = hit
        return hit

    def _ordered_layout(self, tokens: TokenLayout, own: _Order) -> TokenLayout:
        """``tokens`` in this method's order (same text), shared by the layers of one call (and across calls
        when it has no text mask)."""
        cached = tokens.cache.get((_TILED, id(self)))
        if cached is not None:
            return cached

        def build():
            ordered = TokenLayout(tokens.grid, tokens.text_len, tokens.text_side, tokens.text_mask, own.perm)
            ordered.cache[_ORDER_KEY] = own.key
            return ordered

        if tokens.text_mask is None:  # depends on static sizes only: share across calls
            ordered = self._memo(("ordered_layout", tokens.grid, tokens.text_len, tokens.text_side, own.key), build)
        else:
            ordered = build()
        tokens.cache[(_TILED, id(self))] = ordered
        return ordered

    # ------------------------------------------------------------------ reporting
    def describe(self, grid, *, text_len: int = 0, heads: int = 1, head_dim: int = 128, batch: int = 1,
                 file=sys.stdout, compare_rowmajor: bool = True) -> dict:
        """Print and return what this method computes at one resolution, and what it should cost.

        Args:
            grid: ``(T, H, W)`` latent token grid (e.g. ``(33, 45, 80)`` for HunyuanVideo 720p, 129
                frames), or a :class:`~accel.TokenLayout` (then ``text_len`` is taken from it).
            text_len: text tokens in the joint sequence (dense under the default text rule).
            heads: attention heads per call; head_dim: head dimension; batch: batch size (FLOPs scale).
            file: where to print (``None``: do not print).
            compare_rowmajor: also build the row-major layout of a tiled token-decided configuration
                (``video_density_rowmajor``; seconds at 720p); False gives ``None`` there.

        Returns:
            dict with ``grid``, ``tile`` (tile shape or None), ``tile_aligned`` (bool), ``positions``
            (video positions in the method's order, padding included), ``video_density`` (fraction of
            the ``N^2`` video x video token pairs the kernel computes, in the method's order),
            ``video_density_rowmajor`` (same in row-major order; ``None`` for tile-aligned
            configurations, which only exist in their tile order, and without ``compare_rowmajor``),
            ``mask_density`` (fraction of video pairs the token rule allows, counted from the
            rule where it counts them exactly (Radial), else from the layout; the executed
            pairs are ``video_density``), ``full_blocks``,
            ``counted_blocks`` (blocks of a tile-aligned order whose key tile is cut by the grid
            border: every pair of its real keys is computed, the padding keys after them are not; the
            layout expresses that count as a key-prefix tile, which today's kernel runs as a partial
            block, while the cost model prices it as full), ``partial_blocks`` (any other per-token mask),
            ``video_blocks`` (``NQ * NKV``), ``full_fraction`` (``(full + counted) / visited``),
            ``text_blocks`` (full blocks of the text rows and columns in the joint call), ``density``
            (whole joint sequence, text rule included), ``flops`` and ``dense_flops`` (attention matmul
            FLOPs of one call: ``4 * batch * heads * head_dim *`` computed pairs), ``speedup_bound``
            (``dense_flops / flops``), ``predicted_kernel_ms`` and ``predicted_dense_ms`` (the
            :data:`accel.kernels.cost.H200` model for 128-token blocks and head dim 128: visited
            blocks only, no per-call constant; ``None`` for other block sizes) and ``cost_model``
            (its source).
        """
        if isinstance(grid, TokenLayout):
            text_len = grid.text_len
            grid = grid.grid
        grid = tuple(int(g) for g in grid)
        n = grid[0] * grid[1] * grid[2]
        perm = self.tile_permutation(grid)
        tl = self.ordered_video_layout(grid)
        tile_rule = self.tile_rule(grid)
        if tile_rule is not None:
            counts = tile_layout_counts(tile_rule)
            counts["allowed"] = counts["density"] * n * n
            rowmajor = None
        else:
            video = self.video_block_layout(tl, batch=1, heads=1, device="cpu")
            counts = video.block_counts()
            counts.update(density=video.density(), allowed=video.mask_density() * n * n, counted=0)
            rowmajor = counts["density"] if perm is None else None
            if perm is not None and compare_rowmajor:
                rowmajor = block_kind_counts(self._rule(grid), grid_coords(grid), self.block_size, self.block_size,
                                             granularity=self.granularity)["density"]
        positions = tl.num_video_positions
        b = self.block_size
        nqv = -(-positions // b)
        nt = -(-text_len // b)
        text_blocks = (nqv * nt + nt * (nqv + nt)) if text_len else 0
        allowed = self._rule(grid).allowed_pairs()  # exact where the rule can count
        if allowed is not None:
            counts["allowed"] = allowed
        visited = counts["full"] + counts["counted"] + counts["partial"]
        s = n + text_len
        pairs = counts["density"] * n * n + n * text_len + text_len * s
        unit = 4.0 * batch * heads * head_dim
        modelled = b == 128
        info = {
            "grid": grid,
            "tile": self.tile_for(grid),
            "tile_aligned": tile_rule is not None,
            "positions": positions,
            "video_density": counts["density"],
            "video_density_rowmajor": rowmajor,
            "mask_density": counts["allowed"] / (n * n),
            "full_blocks": counts["full"],
            "counted_blocks": counts["counted"],
            "partial_blocks": counts["partial"],
            "video_blocks": counts["blocks"],
            "full_fraction": (counts["full"] + counts["counted"]) / visited if visited else 1.0,
            "text_blocks": text_blocks,
            "density": pairs / (s * s),
            "flops": unit * pairs,
            "dense_flops": unit * s * s,
            "speedup_bound": (s * s) / pairs,
            "predicted_kernel_ms": H200.block_ms(counts["full"] + text_blocks, counts["partial"], counts["counted"],
                                                 heads=heads, batch=batch) if modelled else None,
            "predicted_dense_ms": H200.dense_ms((-(-s // b)) ** 2, heads=heads, batch=batch) if modelled else None,
            "cost_model": H200.source,
        }
        if file is not None:
            print(f"{self!r} on grid {grid} (+{text_len} text tokens), blocks of {b}:", file=file)
            order = "row-major"
            if info["tile"]:
                order = f"tiles of {info['tile']}"
                if tile_rule is not None:
                    order += f", grid padded to {tile_rule.tiles.padded_grid} ({positions} positions)"
            print(f"  token order: {order}", file=file)
            rm = "" if rowmajor is None else f"; row-major: {rowmajor:.2%}"
            print(f"  video x video: executed {info['video_density']:.2%} of pairs (visited blocks{rm}); "
                  f"the token rule allows {info['mask_density']:.2%}", file=file)
            strict = info["full_blocks"] / visited if visited else 1.0
            print(f"  visited blocks: {info['full_blocks']} full + {info['counted_blocks']} limited to a border tile's "
                  f"real keys + {info['partial_blocks']} partial of {info['video_blocks']} ({info['full_fraction']:.1%} "
                  f"without a per-token rule, {strict:.1%} full)", file=file)
            print(f"  joint sequence: density {info['density']:.2%}; attention FLOPs per call "
                  f"{info['flops'] / 1e12:.3f} T vs dense {info['dense_flops'] / 1e12:.3f} T "
                  f"(at most {info['speedup_bound']:.2f}x)", file=file)
            if modelled:
                print(f"  predicted kernel time (H200 cost model, blocks only): {info['predicted_kernel_ms']:.1f} ms vs "
                      f"dense {info['predicted_dense_ms']:.1f} ms", file=file)
        return info
