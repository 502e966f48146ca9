"""`Rectified`: Rectified sparse attention (dynamic block selection from pooled Q/K, pooled compensation).

Reference: Liu et al., "Rectified SpaAttn: Revisiting Attention Sparsity for Efficient Video
Generation", 2025. This module implements the method from the paper's description (no code taken
from its release); the exact semantics implemented here are stated in :class:`Rectified`.

Per call and per (batch, head) the method

1. pools the video tokens into blocks of ``block_size`` consecutive tokens (in sequence order, i.e.
   following the :class:`~accel.grid.TokenLayout`'s ``permutation`` when one is given; the last block
   may be ragged) and estimates the attention of every video query block over every video key block
   and over the text keys (*pooled attention*, IPAR), at ``O(S^2 / block^2)`` cost;
2. selects, per query block, the key blocks to compute exactly (top-k floor, cumulative threshold,
   own block always; text keys always);
3. runs block-sparse attention on the selected blocks through :func:`accel.kernels.block_sparse_attention`
   (text queries run dense), and
4. *rectifies* the output: the non-selected blocks that pass the gain-aware pooling test (GAPR) are
   added back from their pooled estimate, and the exact part is scaled down by the mass they take.

Step 4 is fused into the kernel: the per-block scale ``R_i`` and compensation vector (``O(NB^2·D)`` to
form) are the ``affine`` epilogue of :func:`accel.kernels.block_sparse_attention`, and the text keys'
partial result enters the same kernel call as its ``prior`` -- no pass over the full output in PyTorch
on the Triton backend (the flex and reference backends apply the same two steps after their call).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import NamedTuple

import torch

from accel.grid import TokenLayout
from accel.kernels import BlockLayout, block_sparse_attention, validate_block_size
from accel.kernels.block_pool import block_pool
from accel.methods.base import AttentionMethod, _padded_full_layout
from accel.methods.preset import Published
from accel.schedule import Schedule

__all__ = ["Rectified", "RectifiedPlan", "keep_floor", "morton_order", "neighbor_blocks"]

# Per-model settings of the authors' released inference scripts (github.com/BienLuky/Rectified-SpaAttn,
# scripts/Inference.md and scripts/main_*.py, read 2026-11): ``sa_drop_rate`` -> drop, ``p_remain_rates``
# (0.3 everywhere) -> tau, 128-token blocks, video tokens on a 3D space-filling curve (theirs: a
# generalised Hilbert curve; ours: Morton, ``reorder=True``) with the blocks that are spatial neighbours
# on that curve always kept (``keep_neighbors=True``). The dense warm-up of their Wan 2.1 processors is
# the first 2 layers always and the first 5 steps (``Schedule(dense_steps=5, dense_layers=2)`` for T2V,
# ``Schedule(dense_layers=2)`` for I2V). For the other models only ``drop`` was checked; their
# schedules are not stated here (``Schedule()``; use ``accel.Schedule`` as you see fit). The release also
# keeps the first frame's blocks dense among themselves, which is not implemented here. Its Wan 2.2 I2V
# setting (drop 0.85) has no model here (no Wan 2.2 image-to-video preset). Keys: the model names of
# accel.methods.preset.MODEL_FAMILIES; the release's script each row comes from is named in its source.
_RELEASE = "Rectified SpaAttn release (github.com/BienLuky/Rectified-SpaAttn scripts)"
_CURVE = dict(tau=0.3, block_size=128, reorder=True, keep_neighbors=True)
_WAN21_T2V = Published(dict(drop=0.75, **_CURVE), Schedule(dense_steps=5, dense_layers=2), f"{_RELEASE}, Wan 2.1 T2V")
_WAN21_I2V = Published(dict(drop=0.75, **_CURVE), Schedule(dense_layers=2), f"{_RELEASE}, Wan 2.1 I2V")
_RECTIFIED_PUBLISHED = {
    "hunyuan-video": Published(dict(drop=0.8, **_CURVE), Schedule(), f"{_RELEASE}, HunyuanVideo"),
    "wan2.1-t2v-1.3b": _WAN21_T2V,
    "wan2.1-t2v-14b": _WAN21_T2V,
    "wan2.1-i2v-14b-480p": _WAN21_I2V,
    "wan2.1-i2v-14b-720p": _WAN21_I2V,
    "wan2.2-t2v-a14b": Published(dict(drop=0.85, **_CURVE), Schedule(), f"{_RELEASE}, Wan 2.2 T2V"),
    "wan2.2-ti2v-5b": Published(dict(drop=0.75, **_CURVE), Schedule(), f"{_RELEASE}, Wan 2.2 TI2V"),
    "flux.1-dev": Published(dict(drop=0.9, tau=0.3, block_size=128, reorder=False, keep_neighbors=True), Schedule(),
                            f"{_RELEASE}, FLUX.1-dev"),
}


@functools.lru_cache(maxsize=64)
def _morton_order_cpu(grid: tuple[int, int, int]) -> torch.Tensor:
    t, h, w = grid
    idx = torch.arange(t * h * w)
    coords = (idx // (h * w), (idx // w) % h, idx % w)
    key = torch.zeros_like(idx)
    bits = max(max(grid) - 1, 1).bit_length()
    for bit in range(bits):
        for axis, c in enumerate(coords):  # bit-interleave t, y, x (t most significant at each level)
            key |= ((c >> bit) & 1) << (3 * bit + 2 - axis)
    return torch.argsort(key, stable=True)


def morton_order(grid: tuple[int, int, int], device: torch.device | str = "cpu") -> torch.Tensor:
    """int64 ``[T*H*W]``: the row-major ``(t, y, x)`` indices of the video tokens in 3D Morton (Z-order)
    space-filling-curve order -- a ``TokenLayout.permutation``. Coordinates are bit-interleaved
    (``t`` most significant at each bit level); the grid need not be a power of two."""
    return _morton_order_cpu(tuple(grid)).to(device)


def neighbor_blocks(tokens: TokenLayout, block_size: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """bool ``[NB, NB]``: key block ``j`` holds a video token within one step (Chebyshev distance 1 in
    ``(t, y, x)``, so up to 26 neighbours) of some token of query block ``i``; blocks are ``block_size``
    consecutive video tokens in sequence order (following ``tokens.permutation``). Always includes
    ``i == j``. Cost ``O(27·T·H·W)``, no ``S x S`` tensor."""
    t, h, w = tokens.grid
    n = t * h * w
    nb = -(-n // block_size)
    block_of_seq = torch.arange(n, device=device) // block_size
    if tokens.permutation is None:
        block_of_cell = block_of_seq
    else:
        block_of_cell = torch.empty(n, dtype=torch.int64, device=device)
        block_of_cell[tokens.permutation.to(device)] = block_of_seq
    cells = block_of_cell.reshape(t, h, w)
    adjacent = torch.zeros(nb * nb, dtype=torch.bool, device=device)
    for dt in (-1, 0, 1):
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                src = cells[max(0, -dt):t - max(0, dt), max(0, -dy):h - max(0, dy), max(0, -dx):w - max(0, dx)]
                dst = cells[max(0, dt):t + min(0, dt), max(0, dy):h + min(0, dy), max(0, dx):w + min(0, dx)]
                adjacent[(src * nb + dst).reshape(-1)] = True
    return adjacent.reshape(nb, nb)


def keep_floor(drop: float, num_blocks: int) -> int:
    """``top_k = ceil((1 - drop) * num_blocks)``, the minimum number of key blocks kept per query block.

    The product is rounded to 9 decimals before the ceiling so that e.g. ``drop=0.7`` on 10 blocks
    keeps 3 (not 4 through the float error of ``1 - 0.7``). Always at least 1 for ``drop < 1`` and at
    most ``num_blocks``.
    """
    return max(1, min(num_blocks, math.ceil(round((1.0 - drop) * num_blocks, 9))))


class RectifiedPlan(NamedTuple):
    """What :meth:`Rectified.plan` decides for one call (video query blocks x video key blocks).

    Attributes:
        selected: bool ``[B, H, NB, NB]``: key block ``j`` is computed exactly for query block ``i``.
        compensated: bool ``[B, H, NB, NB]``: key block ``j`` is not selected and is added back from its
            pooled estimate (all False when ``rectify=False``).
        p_hat: float32 ``[B, H, NB, NB]``: pooled attention ``P̂_ij`` of every video key block.
        p_text: float32 ``[B, H, NB]``: pooled attention of the text column (all valid text keys
            together; 0 without text).
        v_mean: float32 ``[B, H, NB, D]``: block means of the values.
        counts: int64 ``[NB]``: number of tokens in each block (``block_size`` except a ragged last one).
    """

    selected: torch.Tensor
    compensated: torch.Tensor
    p_hat: torch.Tensor
    p_text: torch.Tensor
    v_mean: torch.Tensor
    counts: torch.Tensor


def _block_pool(x: torch.Tensor, block: int, *, deviation: bool = True):
    """Block means and block-mean absolute deviations of ``x`` ``[B, N, H, D]`` over blocks of ``block``
    consecutive tokens: (mean ``[B, H, NB, D]``, dev ``[B, H, NB, D]`` or None, counts ``[NB]``), float32.
    One pass over ``x`` (a Triton kernel on CUDA): :func:`accel.kernels.block_pool.block_pool`."""
    return block_pool(x, block, deviation=deviation)


@dataclasses.dataclass(frozen=True, eq=False)
class Rectified(AttentionMethod):
    """Rectified sparse attention over the video tokens (text queries dense), selected per call from Q/K.

    Blocks are ``block_size`` consecutive video tokens in sequence order (the last may be ragged,
    with ``n_j < block_size`` tokens). For batch ``b``, head ``h``, with ``s = scale`` (default
    ``1/sqrt(D)``), ``q̄_i, k̄_j, v̄_j`` the block means and ``Δq_i, Δk_j`` the block-mean absolute
    deviations (``mean_t |q_t - q̄_i|`` per channel):

    * **Pooled attention.** ``P̂_ij = n_j·exp(s·q̄_i·k̄_j) / Z_i`` for video key blocks and
      ``P̂_iT = Σ_t exp(s·q̄_i·k_t) / Z_i`` for the text column (valid text keys only, not pooled),
      ``Z_i = Σ_j n_j·exp(s·q̄_i·k̄_j) + Σ_t exp(s·q̄_i·k_t)``; so ``Σ_j P̂_ij + P̂_iT = 1``.
    * **Selection.** Sort the video ``P̂_ij`` of row ``i`` in decreasing order, ``c_r`` their
      cumulative sums; keep the first ``n_i = min(NB, max(top_k, 1 + #{r : c_r <= tau}))`` blocks,
      ``top_k =`` :func:`keep_floor` ``(drop, NB)``, plus the query's own block ``j = i``. Valid text
      keys are always attended; text queries attend every valid key (dense).
    * **GAPR** (``gapr=True``). A non-selected block ``j`` is *compensated* iff
      ``|q̄_i·k̄_j| > |Δq_i·k̄_j| + |q̄_i·Δk_j|``; with ``gapr=False`` every non-selected block is.
      Blocks neither selected nor compensated are dropped (their mass goes to the exact part).
    * **Output** (``rectify=True``) for every video query token in block ``i``:
      ``O = R_i·O_sparse + Σ_{j compensated} P̂_ij·v̄_j`` with ``R_i = 1 - Σ_{j compensated} P̂_ij``,
      where ``O_sparse`` is exact softmax attention over the selected video blocks and the valid
      text keys. With ``rectify=False`` the output is ``O_sparse`` (plain dynamic block-sparse
      attention, top-k/threshold over pooled scores).

    Args:
        drop: fraction of video key blocks the top-k floor may drop, a number in ``[0, 1)`` (default
            0.8; the paper uses 0.75-0.9). ``drop=0`` keeps every block (dense).
        tau: cumulative pooled-mass threshold ``τ``, a number in ``[0, 1]`` (default 0.3, the paper's).
            ``0`` leaves the top-k floor alone; ``1`` keeps every block.
        gapr: apply the gain-aware pooling test before compensating a block (default True). Only
            matters when ``rectify`` is True.
        rectify: compensate non-selected blocks and rescale the exact part (default True).
        block_size: query and key block size, a power of two >= 16 (default 128, the paper's).
        reorder: if True, video tokens are first reordered along a 3D Morton (Z-order) space-filling
            curve (:func:`morton_order`) so that each block is a compact 3D region; the output is put
            back in the caller's order. Ignored when the layout already has a ``permutation``.
            Default False (blocks of consecutive tokens in the caller's order).
        keep_neighbors: if True, every key block that is a spatial neighbour of the query block
            (:func:`neighbor_blocks`: holds a token within one step in ``t``, ``y`` or ``x`` of one of
            its tokens, in the order actually used, i.e. after ``reorder``) is selected too, as in the
            authors' release. Default False.
        backend: kernel backend, keyword-only (see :class:`accel.methods.base.AttentionMethod`).

    Per-model settings of the authors' release: ``Rectified.preset(model)`` (e.g.
    ``Rectified.preset("wan2.1-t2v-1.3b")``, method and dense warm-up schedule; see :meth:`published`).

    Raises:
        ValueError: a parameter is out of range (the message names it, its value and the range).
    """

    drop: float = 0.8
    tau: float = 0.3
    gapr: bool = True
    rectify: bool = True
    block_size: int = 128
    reorder: bool = False
    keep_neighbors: bool = False

    def __post_init__(self) -> None:
        d = self.drop
        if isinstance(d, bool) or not isinstance(d, (int, float)) or not (0 <= d < 1):
            raise ValueError(f"drop must be a number in [0, 1), got {d!r}")
        t = self.tau
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not (0 <= t <= 1):
            raise ValueError(f"tau must be a number in [0, 1], got {t!r}")
        for name in ("gapr", "rectify", "reorder", "keep_neighbors"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")
        validate_block_size("block_size", self.block_size)
        super().__post_init__()

    @classmethod
    def published(cls, model: str) -> Published | None:
        """The authors' released setting for one model name (``Rectified.preset(model)``; see
        :meth:`~accel.methods.base.AttentionMethod.preset`): ``drop`` 0.8 (HunyuanVideo), 0.75 (Wan 2.1
        T2V and I2V, Wan 2.2 TI2V), 0.85 (Wan 2.2 T2V), 0.9 (FLUX.1-dev, no token reordering); ``tau``
        0.3, 128-token blocks, Morton order and neighbour blocks kept; Wan 2.1's dense warm-up
        (T2V: ``Schedule(dense_steps=5, dense_layers=2)``, I2V: ``Schedule(dense_layers=2)``), no
        stated schedule for the others. No setting for FLUX.1-schnell or the offline models."""
        return _RECTIFIED_PUBLISHED.get(model)

    # ------------------------------------------------------------------ selection
    def plan(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, tokens: TokenLayout, *,
             scale: float | None = None) -> RectifiedPlan:
        """The pooled attention, selection and compensation of one call (see the class docstring).

        Args as in :meth:`__call__` (``[B, S, H, D]`` tensors of the joint sequence and its layout).
        Blocks are taken in the given sequence order (``reorder`` is applied by :meth:`forward`, not here).
        Cost ``O(S·D + NB·(NB + text_len)·D)`` with ``NB = ceil(T*H*W / block_size)``.
        """
        batch, _, heads, dim = q.shape
        s = 1.0 / math.sqrt(dim) if scale is None else float(scale)
        vs = tokens.video_slice
        bs = self.block_size
        q_mean, q_dev, counts = _block_pool(q[:, vs], bs)
        k_mean, k_dev, _ = _block_pool(k[:, vs], bs)
        v_mean, _, _ = _block_pool(v[:, vs], bs, deviation=False)
        nb = counts.shape[0]
        dots = torch.einsum("bhid,bhjd->bhij", q_mean, k_mean)  # [B, H, NB, NB]
        logw = s * dots + counts.float().log()
        if tokens.text_len:
            kt = k[:, tokens.text_slice].float().permute(0, 2, 1, 3)  # [B, H, T, D]
            st = s * torch.einsum("bhid,bhtd->bhit", q_mean, kt)
            if tokens.text_mask is not None:
                valid = tokens.text_mask.to(q.device).expand(batch, -1)[:, None, None, :]
                st = st.masked_fill(~valid, float("-inf"))
            text_lse = torch.logsumexp(st, -1)  # [B, H, NB]
        else:
            text_lse = torch.full((batch, heads, nb), float("-inf"), device=q.device)
        log_z = torch.logaddexp(torch.logsumexp(logw, -1), text_lse)
        p_hat = torch.exp(logw - log_z[..., None])
        p_text = torch.exp(text_lse - log_z)

        vals, order = torch.sort(p_hat, dim=-1, descending=True, stable=True)
        cum = vals.cumsum(-1)
        n_keep = (1 + (cum <= self.tau).sum(-1)).clamp(min=keep_floor(self.drop, nb), max=nb)  # [B, H, NB]
        keep_sorted = torch.arange(nb, device=q.device) < n_keep[..., None]
        selected = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
        selected |= torch.eye(nb, dtype=torch.bool, device=q.device)
        if self.keep_neighbors and tokens.num_video_tokens > 1:
            key = ("accel.rectified.neighbors", bs, str(q.device))
            near = tokens.cache.get(key)
            if near is None:  # shared by the layers of one transformer call
                near = neighbor_blocks(tokens, bs, q.device)
                tokens.cache[key] = near
            selected |= near

        if self.rectify:
            compensated = ~selected
            if self.gapr:
                gain = dots.abs()
                noise = (torch.einsum("bhid,bhjd->bhij", q_dev, k_mean).abs()
                         + torch.einsum("bhid,bhjd->bhij", q_mean, k_dev).abs())
                compensated &= gain > noise
        else:
            compensated = torch.zeros_like(selected)
        return RectifiedPlan(selected, compensated, p_hat, p_text, v_mean, counts)

    # ------------------------------------------------------------------ computation
    def on_curve(self, q, k, v, tokens: TokenLayout):
        """The inputs in the token order the selection runs in: ``(q, k, v, tokens)`` unchanged, or -- with
        ``reorder=True``, a token layout without ``permutation`` and more than one video token -- copies whose video
        tokens are gathered along :func:`morton_order` (text tokens stay in place) and the TokenLayout with
        that permutation (kept in ``tokens.cache``, shared by the layers of one transformer call)."""
        if not (self.reorder and tokens.permutation is None and tokens.num_video_tokens > 1):
            return q, k, v, tokens
        key = ("accel.rectified.morton", str(q.device))
        curve = tokens.cache.get(key)
        if curve is None:
            perm = morton_order(tokens.grid, q.device)
            curve = TokenLayout(tokens.grid, tokens.text_len, tokens.text_side, tokens.text_mask, perm)
            tokens.cache[key] = curve
        vs = tokens.video_slice
        gathered = []
        for x in (q, k, v):
            y = x.clone()
            y[:, vs] = x[:, vs][:, curve.permutation]
            gathered.append(y)
        return (*gathered, curve)

    def forward(self, q, k, v, tokens, *, scale=None):
        """Pooled selection, then block-sparse attention with the rectification fused in (see the class)."""
        qc, kc, vc, curve = self.on_curve(q, k, v, tokens)
        if curve is tokens:
            return self._forward(q, k, v, tokens, scale=scale)
        out = self._forward(qc, kc, vc, curve, scale=scale)
        vs, perm = tokens.video_slice, curve.permutation
        result = out.clone()
        result[:, vs] = torch.empty_like(out[:, vs]).index_copy_(1, perm, out[:, vs])
        return result

    def _forward(self, q, k, v, tokens, *, scale=None):
        batch, _, heads, _ = q.shape
        plan = self.plan(q, k, v, tokens, scale=scale)
        n = tokens.num_video_tokens
        bs = self.block_size
        vs, ts = tokens.video_slice, tokens.text_slice
        video = BlockLayout.from_block_mask(plan.selected, bs, bs, n, n)
        if tokens.text_len:
            text_keys = self._cached(
                tokens, ("text_keys",), batch, heads, q.device,
                lambda: _padded_full_layout(n, tokens.text_len, tokens.text_mask, batch, q.device,
                                            self.block_shape(), allow_empty_rows=True),
            )
            prior = block_sparse_attention(q[:, vs], k[:, ts], v[:, ts], text_keys, scale=scale,
                                           backend=self.backend, return_lse=True)
            o_video = block_sparse_attention(q[:, vs], k[:, vs], v[:, vs], video, scale=scale, backend=self.backend,
                                             prior=prior, affine=self.rectification(plan))
        else:
            o_video = block_sparse_attention(q, k, v, video, scale=scale, backend=self.backend,
                                             affine=self.rectification(plan))
        return self._with_dense_text_queries(o_video, q, k, v, tokens, scale=scale)

    def rectification(self, plan: RectifiedPlan) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The rectification of ``plan`` as the kernel's ``affine`` epilogue, or None with ``rectify=False``.

        Args:
            plan: the :class:`RectifiedPlan` of the call (from :meth:`plan`).

        Returns:
            ``(R [B, H, NB], C [B, H, NB, D])`` float32 with ``R_i = 1 - Σ_{j compensated} P̂_ij`` and
            ``C_i = Σ_{j compensated} P̂_ij·v̄_j``; every video query token of block ``i`` gets
            ``R_i·O_sparse + C_i`` (:func:`accel.kernels.apply_block_affine`).
        """
        if not self.rectify:
            return None
        weights = plan.p_hat * plan.compensated  # [B, H, NB, NB]
        return 1.0 - weights.sum(-1), torch.einsum("bhij,bhjd->bhid", weights, plan.v_mean)

    def video_token_mask(self, tokens, *, batch, heads, device="cpu"):
        """Not defined: Rectified's selection depends on the values of Q and K (use :meth:`plan`)."""
        raise TypeError("Rectified is a dynamic method: its mask depends on q and k; use Rectified.plan(q, k, v, tokens)")
