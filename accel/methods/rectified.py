"""`Rectified`: Rectified sparse attention (dynamic block selection from pooled Q/K, pooled compensation).

Reference: Liu et al., "Rectified SpaAttn: Revisiting Attention Sparsity for Efficient Video
Generation", 2025, and the authors' release (github.com/BienLuky/Rectified-SpaAttn at commit 4b0aa10,
``rectified_spaattn/*.py`` and ``scripts/main_*.py``, read for its rules; no code taken from it). The
exact semantics implemented here are stated in :class:`Rectified`; by default they are the release's.

Per call and per (batch, head) the method

1. orders the video tokens along a generalised Hilbert curve (the release's token order), pools them
   into blocks of ``block_size`` consecutive tokens and estimates the attention of every video query
   block over every video key block and over the text keys (*pooled attention*, IPAR), at
   ``O(S^2 / block^2)`` cost;
2. selects, per query block, the key blocks to compute exactly (the text column sorted with the video
   blocks, top-k floor, cumulative threshold, the curve neighbours; text keys always attended);
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
import math
from typing import NamedTuple

import torch

from accel.grid import TokenLayout
from accel.kernels import BlockLayout, block_sparse_attention, validate_block_size
from accel.kernels.block_pool import block_pool
from accel.methods.base import AttentionMethod, _padded_full_layout
from accel.methods.preset import Published
from accel.patterns.curves import hilbert_order, morton_order
from accel.schedule import Schedule

__all__ = ["Rectified", "RectifiedPlan", "ORDERS", "POOLINGS", "top_k_blocks", "morton_order", "hilbert_order",
           "neighbor_blocks"]

#: token orders of :class:`Rectified` (``order``)
ORDERS = ("hilbert", "morton", "sequence")
#: pooling of a ragged last block (``pooling``)
POOLINGS = ("padded", "exact")

_RELEASE = "Rectified SpaAttn release (github.com/BienLuky/Rectified-SpaAttn @4b0aa10, scripts/"
_WAN21_T2V = Published(dict(drop=0.75, dense_first_blocks=True), Schedule(dense_steps=5, dense_layers=2),
                       _RELEASE + "main_wan21t2v.py)")
_WAN21_I2V = Published(dict(drop=0.75, dense_first_blocks=True), Schedule(dense_layers=2), _RELEASE + "main_wan21i2v.py)")
#: model name -> the release's setting: ``sa_drop_rate`` -> drop, ``p_remain_rates`` 0.3 -> tau (the class
#: default, as are the 128-token blocks on the Hilbert curve and the curve neighbours); Wan scripts keep the
#: first floor(NB / T) blocks dense among themselves. Dense warm-ups (layer indices per transformer; the
#: release counts transformer calls, two per step with classifier-free guidance): HunyuanVideo none (every
#: layer but the token refiner, every step sparse); Wan 2.1 T2V and Wan 2.2 TI2V the first 2 layers and
#: 5 steps; Wan 2.1 I2V the first 2 layers; Wan 2.2 T2V the first 2 layers of each expert and the first 3
#: steps -- the release also runs the low-noise expert's first step dense, which a Schedule cannot say;
#: FLUX.1-dev its attention layers 37-56 of 57 (the last 20 single-stream blocks). The release's Wan 2.2
#: I2V setting (drop 0.85, 2 dense layers per expert) has no model here.
_RECTIFIED_PUBLISHED = {
    "hunyuan-video": Published(dict(drop=0.8), Schedule(), _RELEASE + "main_hunyuan.py)"),
    "wan2.1-t2v-1.3b": _WAN21_T2V,
    "wan2.1-t2v-14b": _WAN21_T2V,
    "wan2.1-i2v-14b-480p": _WAN21_I2V,
    "wan2.1-i2v-14b-720p": _WAN21_I2V,
    "wan2.2-t2v-a14b": Published(dict(drop=0.85, dense_first_blocks=True), Schedule(dense_steps=3, dense_layers=2),
                                 _RELEASE + "main_wan22t2v.py; its low-noise expert's first step also dense)"),
    "wan2.2-ti2v-5b": Published(dict(drop=0.75, dense_first_blocks=True), Schedule(dense_steps=5, dense_layers=2),
                                _RELEASE + "main_wan22ti2v.py)"),
    "flux.1-dev": Published(dict(drop=0.9), Schedule(dense_last_layers=20), _RELEASE + "main_upflux.py)"),
}


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


def top_k_blocks(drop: float, num_blocks: int) -> int:
    """``int((1 - drop) * num_blocks)``: the release's top-k floor (Python float arithmetic, truncated;
    e.g. ``drop=0.8`` on 900 blocks gives 179). Can be 0: at least one column is always kept."""
    return int((1 - drop) * num_blocks)


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
        counts: int64 ``[NB]``: the weight of each block in the pooled softmax (its token count with
            ``pooling="exact"``; ``block_size`` for every block with ``pooling="padded"``).
    """

    selected: torch.Tensor
    compensated: torch.Tensor
    p_hat: torch.Tensor
    p_text: torch.Tensor
    v_mean: torch.Tensor
    counts: torch.Tensor


def _block_pool(x: torch.Tensor, block: int, *, padded: bool, deviation: bool = True):
    """Block means and block-mean absolute deviations of ``x`` ``[B, N, H, D]`` over blocks of ``block``
    consecutive tokens: (mean ``[B, H, NB, D]``, dev ``[B, H, NB, D]`` or None, counts ``[NB]``), float32.
    ``padded``: a ragged last block is completed with zero tokens (its mean divides by ``block``, its
    deviation counts the zeros; count ``block``); otherwise its real tokens only. One pass over ``x`` (a
    Triton kernel on CUDA, :func:`accel.kernels.block_pool.block_pool`); with ``padded`` the ragged last
    block is pooled again with its zeros (PyTorch, one block).
    """
    mean, dev, counts = block_pool(x, block, deviation=deviation)
    n = x.shape[1]
    if not padded or n % block == 0:
        return mean, dev, counts
    start = (n // block) * block
    tail = torch.nn.functional.pad(x[:, start:].float(), (0, 0, 0, 0, 0, start + block - n))  # [B, block, H, D]
    tail_mean = tail.mean(1)  # [B, H, D]
    mean = mean.clone()
    mean[:, :, -1] = tail_mean
    if deviation:
        dev = dev.clone()
        dev[:, :, -1] = (tail - tail_mean[:, None]).abs().mean(1)
    counts = counts.clone()
    counts[-1] = block
    return mean, dev, counts


@dataclasses.dataclass(frozen=True, eq=False)
class Rectified(AttentionMethod):
    """Rectified sparse attention over the video tokens (text queries dense), selected per call from Q/K.

    Defaults compute what the authors' release computes; every option that differs is named below.
    Blocks are ``block_size`` consecutive video tokens in the token order of ``order``. For batch ``b``,
    head ``h``, with ``s = scale`` (default ``1/sqrt(D)``), ``q̄_i, k̄_j, v̄_j`` the block means and
    ``Δq_i, Δk_j`` the block-mean absolute deviations (``mean_t |q_t - q̄_i|`` per channel), ``n_j`` the
    block weights (``block_size``; the real token count of a ragged last block with ``pooling="exact"``):

    * **Pooled attention.** ``P̂_ij = n_j·exp(s·q̄_i·k̄_j) / Z_i`` for video key blocks and
      ``P̂_iT = Σ_t exp(s·q̄_i·k_t) / Z_i`` for the text column (valid text keys only, not pooled),
      ``Z_i = Σ_j n_j·exp(s·q̄_i·k̄_j) + Σ_t exp(s·q̄_i·k_t)``; so ``Σ_j P̂_ij + P̂_iT = 1``.
    * **Selection.** The columns of row ``i`` -- the video blocks and, with ``count_text=True`` and
      text present, the text column -- sorted by ``P̂`` in decreasing order, ``c_r`` their cumulative
      sums; the first ``n_i = max(top_k, 1 + #{r : c_r <= tau})`` columns are selected, ``top_k =``
      :func:`top_k_blocks` ``(drop, NB)`` (a selected text column takes one of the ``n_i`` places).
      Then, added: the curve neighbours (``keep_neighbors``, :func:`neighbor_blocks`, the own block
      included), the own block (``keep_own_block``), and with ``dense_first_blocks`` every pair among
      the first ``floor(NB / T)`` blocks. Valid text keys are always attended; text queries attend every
      valid key (dense).
    * **GAPR** (``gapr=True``). A non-selected block ``j`` is *compensated* iff
      ``|q̄_i·k̄_j| > |Δq_i·k̄_j| + |q̄_i·Δk_j|``; with ``gapr=False`` every non-selected block is.
      Blocks neither selected nor compensated are dropped (their mass goes to the exact part).
    * **Output** (``rectify=True``) for every video query token in block ``i``:
      ``O = R_i·O_sparse + Σ_{j compensated} P̂_ij·v̄_j`` with ``R_i = 1 - Σ_{j compensated} P̂_ij``,
      where ``O_sparse`` is exact softmax attention over the selected video blocks and the valid
      text keys. With ``rectify=False`` the output is ``O_sparse``.

    Args:
        drop: fraction of video key blocks the top-k floor may drop, a number in ``[0, 1)`` (default
            0.8, the release's HunyuanVideo setting; its scripts use 0.75-0.9). ``drop=0`` keeps every block.
        tau: cumulative pooled-mass threshold ``τ``, a number in ``[0, 1]`` (default 0.3, the release's).
        gapr: apply the gain-aware pooling test before compensating a block (default True).
        rectify: compensate non-selected blocks and rescale the exact part (default True).
        block_size: query and key block size, a power of two >= 16 (default 128, the release's).
        order: the token order blocks are cut in (when the token layout has no ``permutation``):
            ``"hilbert"`` (default, the release's: :func:`~accel.patterns.curves.hilbert_order` with
            axis order w, h, t, also for images), ``"morton"`` (ours: 3D Z-order), ``"sequence"`` (the
            caller's order). The output is returned in the caller's order.
        keep_neighbors: select the curve neighbours of each query block (default True, the release's).
        count_text: the text column is sorted with the video blocks and counts toward ``n_i`` (default
            True, the release's); False (ours): video blocks only, the text keys outside the count.
        keep_own_block: always select the query's own block (default False; with ``keep_neighbors`` it
            is selected anyway). Ours: True.
        dense_first_blocks: the first ``floor(NB / T)`` blocks in the order used (on the curve these
            are not frame 0's tokens) attend each other (default False; the release's Wan scripts: True).
        pooling: a ragged last block (``T·H·W`` not a multiple of ``block_size``): ``"padded"``
            (default, the release's Wan code: zero tokens complete it, weight ``block_size``) or
            ``"exact"`` (ours: its real tokens, weight = their count).
        backend: kernel backend, keyword-only (see :class:`accel.methods.base.AttentionMethod`).

    Per-model settings of the release: ``Rectified.preset(model)`` (e.g. ``Rectified.preset("wan2.1-t2v-1.3b")``,
    method and dense warm-up schedule; see :meth:`published`).

    Raises:
        ValueError: a parameter is out of range (the message names it, its value and the range).
    """

    drop: float = 0.8
    tau: float = 0.3
    gapr: bool = True
    rectify: bool = True
    block_size: int = 128
    order: str = "hilbert"
    keep_neighbors: bool = True
    count_text: bool = True
    keep_own_block: bool = False
    dense_first_blocks: bool = False
    pooling: str = "padded"

    def __post_init__(self) -> None:
        d = self.drop
        if isinstance(d, bool) or not isinstance(d, (int, float)) or not (0 <= d < 1):
            raise ValueError(f"drop must be a number in [0, 1), got {d!r}")
        t = self.tau
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not (0 <= t <= 1):
            raise ValueError(f"tau must be a number in [0, 1], got {t!r}")
        for name in ("gapr", "rectify", "keep_neighbors", "count_text", "keep_own_block", "dense_first_blocks"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")
        if self.order not in ORDERS:
            raise ValueError(f"order must be one of {ORDERS}, got {self.order!r}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        validate_block_size("block_size", self.block_size)
        super().__post_init__()

    @classmethod
    def published(cls, model: str) -> Published | None:
        """The release's setting for one model name (``Rectified.preset(model)``; see
        :meth:`~accel.methods.base.AttentionMethod.preset`): ``drop`` 0.8 (HunyuanVideo), 0.75 (Wan 2.1
        T2V and I2V, Wan 2.2 TI2V), 0.85 (Wan 2.2 T2V), 0.9 (FLUX.1-dev); Wan models with
        ``dense_first_blocks``; the scripts' dense warm-ups as the schedule (HunyuanVideo: none; Wan 2.1
        T2V / Wan 2.2 TI2V: ``Schedule(dense_steps=5, dense_layers=2)``; Wan 2.1 I2V:
        ``Schedule(dense_layers=2)``; Wan 2.2 T2V: ``Schedule(dense_steps=3, dense_layers=2)``, the
        low-noise expert's extra dense first step not reproduced; FLUX.1-dev:
        ``Schedule(dense_last_layers=20)``). No setting for FLUX.1-schnell or the offline models."""
        return _RECTIFIED_PUBLISHED.get(model)

    # ------------------------------------------------------------------ selection
    def plan(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, tokens: TokenLayout, *,
             scale: float | None = None) -> RectifiedPlan:
        """The pooled attention, selection and compensation of one call (see the class docstring).

        Args as in :meth:`__call__` (``[B, S, H, D]`` tensors of the joint sequence and its token layout).
        Blocks are taken in the given sequence order (``order`` is applied by :meth:`forward`, not here).
        Cost ``O(S·D + NB·(NB + text_len)·D)`` with ``NB = ceil(T*H*W / block_size)``.
        """
        batch, _, heads, dim = q.shape
        s = 1.0 / math.sqrt(dim) if scale is None else float(scale)
        vs = tokens.video_slice
        bs = self.block_size
        padded = self.pooling == "padded"
        q_mean, q_dev, counts = _block_pool(q[:, vs], bs, padded=padded)
        k_mean, k_dev, _ = _block_pool(k[:, vs], bs, padded=padded)
        v_mean, _, _ = _block_pool(v[:, vs], bs, padded=padded, deviation=False)
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

        columns = torch.cat([p_hat, p_text[..., None]], -1) if self.count_text and tokens.text_len else p_hat
        width = columns.shape[-1]
        vals, ranked = torch.sort(columns, dim=-1, descending=True, stable=True)
        cum = vals.cumsum(-1)
        n_keep = (1 + (cum <= self.tau).sum(-1)).clamp(min=top_k_blocks(self.drop, nb), max=width)  # [B, H, NB]
        keep_ranked = torch.arange(width, device=q.device) < n_keep[..., None]
        selected = torch.zeros_like(keep_ranked).scatter(-1, ranked, keep_ranked)[..., :nb]
        if self.keep_own_block:
            selected |= torch.eye(nb, dtype=torch.bool, device=q.device)
        if self.keep_neighbors and tokens.num_video_tokens > 1:
            key = ("accel.rectified.neighbors", bs, str(q.device))
            near = tokens.cache.get(key)
            if near is None:  # shared by the layers of one transformer call
                near = neighbor_blocks(tokens, bs, q.device)
                tokens.cache[key] = near
            selected |= near
        if self.dense_first_blocks:
            first = nb // tokens.grid[0]
            selected[..., :first, :first] = True

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
    def curve(self, grid: tuple[int, int, int], device: torch.device | str = "cpu") -> torch.Tensor | None:
        """The ``TokenLayout.permutation`` of ``order`` on ``grid`` (``None`` for ``"sequence"``)."""
        if self.order == "hilbert":
            return hilbert_order(grid, device=device)
        if self.order == "morton":
            return morton_order(grid, device)
        return None

    def on_curve(self, q, k, v, tokens: TokenLayout):
        """The inputs in the token order the selection runs in: ``(q, k, v, tokens)`` unchanged, or -- with
        ``order`` other than ``"sequence"``, a token layout without ``permutation`` and more than one video token --
        copies whose video tokens are gathered along the curve (text tokens stay in place) and the
        TokenLayout with that permutation (kept in ``tokens.cache``, shared by the layers of one call)."""
        if self.order == "sequence" or tokens.permutation is not None or tokens.num_video_tokens <= 1:
            return q, k, v, tokens
        key = ("accel.rectified.curve", self.order, str(q.device))
        curve = tokens.cache.get(key)
        if curve is None:
            perm = self.curve(tokens.grid, q.device)
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
        # a query block may select the text column only (count_text): its video part is then empty
        video = BlockLayout.from_block_mask(plan.selected, bs, bs, n, n, allow_empty_rows=tokens.text_len > 0)
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
