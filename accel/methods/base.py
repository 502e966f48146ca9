"""The attention-method protocol: a frozen dataclass callable as ``method(q, k, v, tokens)``.

Every attention method (``accel.Dense`` here; the sparse ones later) subclasses
:class:`AttentionMethod`. A method turns queries, keys and values of one self-attention call,
``[B, S, H, D]`` each (diffusers' layout), plus the :class:`~accel.grid.TokenLayout` of the sequence,
into the attention output ``[B, S, H, D]``. The processors call exactly that; users with their own
models call it directly.

How a subclass describes its sparsity (pick the smallest hook that fits):

* :meth:`AttentionMethod.video_block_layout` -- the block layout of **video queries x video keys**
  (a :class:`~accel.kernels.BlockLayout` over the ``T*H*W`` video tokens, aligned to the first
  video token), or ``None`` for dense. The base class adds the **default text rule**: text queries
  attend to every valid key, video queries attend to every valid text key plus their pattern over
  video keys; padded text keys (``tokens.text_mask``) are never attended.
* :meth:`AttentionMethod.build_block_layout` -- the block layout of the whole joint sequence, to
  fuse text and video into one kernel call (the default fuses when the video part is dense or there
  is no text, and otherwise returns ``None`` so that :meth:`forward` runs the text and video parts as
  separate kernel calls merged exactly by log-sum-exp).
* :meth:`AttentionMethod.forward` -- the whole computation (for methods that are not block-sparse,
  e.g. linear/agent attention).

:meth:`AttentionMethod.token_mask` is the brute-force token-level definition (tests only).

Under ``torch.compile`` a method call is one opaque custom op (``accel::method_attention``), so layout
construction (which reads tensor values) never breaks a ``fullgraph=True`` graph.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import threading
import weakref

import torch

from accel.grid import TokenLayout
from accel.kernels import BACKENDS, BlockLayout, block_sparse_attention, merge_attention
from accel.kernels.renamed import renamed_argument
from accel.methods.preset import Preset, Published, resolve_preset
from accel.patterns.joint import joint_text_layout, with_key_validity

__all__ = ["AttentionMethod", "DEFAULT_BLOCK"]

DEFAULT_BLOCK = 128
_LRU_SIZE = 64

# Under torch.compile a method call is a custom op that receives an int key and finds the method
# here. Weak values: an entry lives exactly as long as its method object (held by the processors or
# the caller), so the table never keeps methods alive and never grows without bound.
_METHODS: weakref.WeakValueDictionary[int, AttentionMethod] = weakref.WeakValueDictionary()
_KEYS = itertools.count(1)
_KEYS_LOCK = threading.Lock()

_SIDE_CODES = {None: 0, "first": 1, "last": 2}
_SIDE_NAMES = {v: k for k, v in _SIDE_CODES.items()}


def _register(method: AttentionMethod) -> int:
    with _KEYS_LOCK:
        key = next(_KEYS)
        _METHODS[key] = method
    object.__setattr__(method, "_method_key", key)
    return key


def text_padding_interval(tokens: TokenLayout, batch: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The padded text keys of ``tokens`` as one interval per batch element, or ``None``.

    When every row of ``tokens.text_mask`` is its valid tokens followed by its padding (a prefix of
    True, as the pipelines' tokenizers pad), the padding of batch element ``b`` is the key interval
    ``[start[b], end[b])`` of the joint sequence: int32 tensors ``[batch]``. ``None`` without a text
    mask, or when some row has a padded token before a valid one (then the padding is not one interval).
    """
    m = tokens.text_mask
    if m is None:
        return None
    m = m.cpu()
    counts = m.sum(1)
    if not bool((m == (torch.arange(m.shape[1])[None, :] < counts[:, None])).all()):
        return None
    counts = counts.expand(batch) if counts.shape[0] != batch else counts
    start = (tokens.text_start + counts).to(torch.int32)
    return start, torch.full_like(start, tokens.text_start + tokens.text_len)


def _without_invalid_keys(static: BlockLayout, tokens: TokenLayout, batch: int) -> BlockLayout:
    """``static`` with the invalid keys of ``tokens`` removed: padded text by the kernel's key padding
    (blocks stay full) when it is one interval per batch element (:func:`text_padding_interval`), video
    padding positions and any other text padding block by block (:func:`with_key_validity`)."""
    interval = text_padding_interval(tokens, batch)
    if interval is None:
        return with_key_validity(static, tokens.key_padding_mask(batch))
    start, end = interval
    # key blocks made only of padded text are dropped (the kernel would skip them; dropped, the layout's
    # figures count what is computed); blocks holding some valid key stay as they are
    b, n = static.kv_block, static.kv_len
    lo = torch.arange(n) // b * b
    hi = (lo + b).clamp(max=n)
    valid = ~((lo[None, :] >= start[:, None]) & (hi[None, :] <= end[:, None]))
    video = tokens.with_text_mask(None).key_padding_mask(batch)
    if video is not None:
        valid &= video.cpu()
    kept = with_key_validity(static, None if bool(valid.all()) else valid)
    return kept.with_key_padding(start.to(kept.device), end.to(kept.device))


@dataclasses.dataclass(frozen=True, eq=False)
class AttentionMethod:
    """Base class of attention-method configurations; instances are callable on tensors.

    Args:
        backend: which block-sparse kernel runs the attention: ``"auto"`` (default: Triton on CUDA,
            FlexAttention or the dense reference on CPU by size), ``"triton"``, ``"flex"`` or
            ``"reference"``; see :func:`accel.kernels.block_sparse_attention`. Keyword-only.

    Subclasses are frozen dataclasses; a subclass that defines ``__post_init__`` must call
    ``super().__post_init__()``.
    """

    backend: str = dataclasses.field(default="auto", kw_only=True)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        # layouts that depend only on static sizes, per method object: key -> BlockLayout (LRU)
        object.__setattr__(self, "_static_layouts", collections.OrderedDict())
        _register(self)

    # ------------------------------------------------------------------ published settings
    @classmethod
    def preset(cls, model: str, **overrides) -> Preset:
        """This method's published setting for ``model``: the configured method, its dense schedule, the source.

        Args:
            model: a model name -- the preset names of :mod:`accel.pipelines.presets` (``"hunyuan-video"``,
                ``"wan2.1-t2v-1.3b"``, ``"wan2.2-t2v-a14b"``, ``"flux.1-dev"``, ...; listed in
                :data:`accel.methods.preset.MODEL_FAMILIES`) -- or a family (``"hunyuan_video"``, ``"wan"``,
                ``"flux"``) when every model of the family has the same setting for this method.
            overrides: method fields that replace the published ones.

        Returns:
            A :class:`~accel.methods.preset.Preset`; ``accel.apply(pipe, preset)`` installs it.

        Raises:
            ValueError: an unknown model name (the message lists them); no published setting of this
                method for that model (e.g. the tiny and embedded models, or Radial on FLUX images); a
                family whose models have different settings.
            TypeError: an override that is not a field of the method.
        """
        return resolve_preset(cls, model, cls.published, overrides)

    @classmethod
    def published(cls, model: str) -> Published | None:
        """The published setting of this class for one model name of
        :data:`~accel.methods.preset.MODEL_FAMILIES`, or ``None``; subclasses with published settings
        override it (and may raise ``ValueError`` saying why a model has none)."""
        return None

    # ------------------------------------------------------------------ public call
    def __call__(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        tokens: TokenLayout | None = None,
        *,
        scale: float | None = None,
        layout: TokenLayout | None = None,
    ) -> torch.Tensor:
        """Attention output ``[B, S, H, D]`` of one self-attention call.

        Args:
            q: queries ``[B, S, H, D]`` (any strides with a contiguous last axis), float32/16 or bf16.
            k: keys ``[B, S, H, D]``, same dtype, device and shape as ``q``.
            v: values ``[B, S, H, D]``, same as ``k``.
            tokens: the :class:`~accel.grid.TokenLayout` of the sequence; ``S`` must equal
                ``tokens.seq_len``, and a ``tokens.text_mask`` must have batch 1 or ``B``. (The old
                keyword ``layout=`` still works and warns: it is deprecated.)
            scale: softmax scale; ``None`` (default) means ``1 / sqrt(D)``.

        Returns:
            ``[B, S, H, D]`` in q's dtype.

        Raises:
            TypeError: an argument has the wrong type.
            ValueError: shapes do not match each other or the token layout (naming the tensor, its size
                and the layout's).
        """
        if layout is not None:
            tokens = renamed_argument(type(self).__name__, "tokens", tokens, "layout", layout)
        elif tokens is None:
            raise TypeError(f"{type(self).__name__}() missing required argument: 'tokens' (the accel.TokenLayout)")
        _check_call(q, k, v, tokens)
        if scale is not None and (not isinstance(scale, (int, float)) or isinstance(scale, bool) or scale <= 0):
            raise ValueError(f"scale must be a positive float or None, got {scale!r}")
        if torch.compiler.is_compiling():
            key = getattr(self, "_method_key", None)
            if key is None:
                raise RuntimeError(
                    f"{type(self).__name__}.__post_init__ did not call super().__post_init__(); the method "
                    "cannot run under torch.compile"
                )
            return _method_attention_op(
                q, k, v, tokens.text_mask, tokens.permutation, key, list(tokens.grid), tokens.text_len,
                _SIDE_CODES[tokens.text_side], None if scale is None else float(scale),
            )
        return self.forward(q, k, v, tokens, scale=scale)

    # ------------------------------------------------------------------ computation
    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, tokens: TokenLayout, *, scale: float | None = None
    ) -> torch.Tensor:
        """Compute the attention (inputs already validated by :meth:`__call__`; never traced by dynamo).

        Default: one kernel call with :meth:`build_block_layout` when it returns a layout; otherwise
        the default text rule in three kernel calls -- text queries over all keys, video queries over
        video keys (:meth:`video_block_layout`) and over text keys -- the two video parts merged
        exactly with :func:`accel.kernels.merge_attention`. Arguments as in :meth:`__call__`.
        """
        batch, _, heads, _ = q.shape
        joint = self.build_block_layout(tokens, batch=batch, heads=heads, device=q.device)
        if joint is not None:
            return block_sparse_attention(q, k, v, joint, scale=scale, backend=self.backend)
        vs, ts = tokens.video_slice, tokens.text_slice
        video = self._cached_video_layout(tokens, batch, heads, q.device)
        text_keys = self._cached(
            tokens, ("text_keys",), batch, heads, q.device,
            lambda: _padded_full_layout(tokens.num_video_positions, tokens.text_len, tokens.text_mask, batch, q.device,
                                        self.block_shape(), allow_empty_rows=True),
        )
        o_vv, l_vv = block_sparse_attention(q[:, vs], k[:, vs], v[:, vs], video, scale=scale, backend=self.backend,
                                            return_lse=True)
        o_vt, l_vt = block_sparse_attention(q[:, vs], k[:, ts], v[:, ts], text_keys, scale=scale,
                                            backend=self.backend, return_lse=True)
        o_video, _ = merge_attention([(o_vv, l_vv), (o_vt, l_vt)])
        return self._with_dense_text_queries(o_video, q, k, v, tokens, scale=scale)

    def _with_dense_text_queries(self, o_video, q, k, v, tokens: TokenLayout, *, scale: float | None):
        """The whole output: ``o_video`` (video queries) joined, on the token layout's text side, with the text
        queries' attention over every valid key (the default text rule). Returns ``o_video`` when there
        is no text."""
        if not tokens.text_len:
            return o_video
        batch, heads = q.shape[0], q.shape[2]
        text_queries = self._cached(
            tokens, ("text_queries",), batch, heads, q.device,
            lambda: _padded_full_layout(tokens.text_len, tokens.seq_len, tokens.key_padding_mask(), batch, q.device,
                                        self.block_shape()),
        )
        o_text = block_sparse_attention(q[:, tokens.text_slice], k, v, text_queries, scale=scale, backend=self.backend)
        parts = (o_text, o_video) if tokens.text_side == "first" else (o_video, o_text)
        return torch.cat(parts, dim=1)

    # ------------------------------------------------------------------ layout hooks
    def block_shape(self) -> tuple[int, int]:
        """``(q_block, kv_block)`` used for the layouts this method builds (default 128 x 128).

        Subclasses with a ``block_size`` field return it here.
        """
        size = getattr(self, "block_size", DEFAULT_BLOCK)
        return (size, size)

    def video_block_layout(
        self, tokens: TokenLayout, *, batch: int, heads: int, device: torch.device
    ) -> BlockLayout | None:
        """Block layout of video queries over video keys, or ``None`` for dense (the base class).

        Args:
            tokens: the :class:`~accel.grid.TokenLayout`; the returned block layout must have
                ``q_len == kv_len == tokens.num_video_positions`` (video position ``i`` holds the token
                ``tokens.permutation[i]``, or padding; padding keys must not be attended).
            batch: the batch size ``B`` of the call (the layout's batch dimension may be 1 or B).
            heads: the number of heads ``H`` (the layout's head dimension may be 1 or H).
            device: the device of q/k/v; the returned layout must live there.
        """
        return None

    def build_block_layout(
        self, tokens: TokenLayout, *, batch: int, heads: int, device: torch.device
    ) -> BlockLayout | None:
        """Block layout of the whole joint sequence, or ``None`` to run text and video parts separately.

        The default builds one block layout -- one kernel call -- whenever it can: a dense video
        pattern (every query attends to every valid key), no text (the video layout itself), or the
        video layout with the text span added under the default text rule
        (:func:`accel.patterns.joint.joint_text_layout`: text last, or text first filling whole
        blocks). Padded text that is one interval per batch element (valid tokens first, as tokenizers
        pad) becomes the kernel's key padding (the blocks stay full); padding positions of a padded
        video order, and other text padding, are removed block by block. It returns
        ``None`` only for text placed first whose length is not a multiple of the block size.
        Arguments as in :meth:`video_block_layout`; the returned layout has ``q_len == kv_len ==
        tokens.seq_len``.
        """
        video = self._cached_video_layout(tokens, batch, heads, device)
        if video is None:
            return self._cached(
                tokens, ("joint_dense",), batch, heads, device,
                lambda: _padded_full_layout(tokens.seq_len, tokens.seq_len, tokens.key_padding_mask(), batch, device,
                                            self.block_shape()),
            )
        if tokens.text_len == 0:
            return video
        static = self._cached(tokens.with_text_mask(None) if tokens.permutation is None else tokens, ("joint_static",),
                              batch, heads, device,
                              lambda: joint_text_layout(video, tokens.text_len, tokens.text_side))
        if static is None:
            return None
        return self._cached(tokens, ("joint",), batch, heads, device, lambda: _without_invalid_keys(static, tokens, batch))

    def token_mask(self, tokens: TokenLayout, *, batch: int, heads: int, device: torch.device | str = "cpu"
                   ) -> torch.Tensor:
        """The exact token-level rule as a bool ``[B|1, H|1, S, S]`` mask (tests and tiny sizes only).

        ``mask[b, h, i, j]`` is True when query ``i`` attends key ``j``: key ``j`` is valid (not
        padded text) and (``i`` is text, or ``j`` is text, or :meth:`video_token_mask` allows the
        video pair). Arguments as in :meth:`video_block_layout`.
        """
        device = torch.device(device)
        s = tokens.seq_len
        vv = self.video_token_mask(tokens, batch=batch, heads=heads, device=device)
        mask = torch.ones(vv.shape[0], vv.shape[1], s, s, dtype=torch.bool, device=device)
        vs = tokens.video_slice
        mask[:, :, vs, vs] = vv
        valid = tokens.key_padding_mask(batch)
        if valid is not None:
            mask = mask & valid.to(device)[:, None, None, :]
        return mask

    def video_token_mask(self, tokens: TokenLayout, *, batch: int, heads: int, device: torch.device | str = "cpu"
                         ) -> torch.Tensor:
        """bool ``[B|1, H|1, N, N]`` (``N = T*H*W``): the token-level video-video rule (tests only).

        The default materialises :meth:`video_block_layout` (all True when it is ``None``). Patterns
        with an independent brute-force definition override this so tests compare the two.
        """
        device = torch.device(device)
        video = self.video_block_layout(tokens, batch=batch, heads=heads, device=device)
        n = tokens.num_video_positions
        if video is None:
            return torch.ones(1, 1, n, n, dtype=torch.bool, device=device)
        return video.to_dense_mask()

    # ------------------------------------------------------------------ caching
    def _cached_video_layout(self, tokens, batch, heads, device):
        return self._cached(
            tokens, ("video",), batch, heads, device,
            lambda: self.video_block_layout(tokens, batch=batch, heads=heads, device=device),
        )

    def _cached(self, tokens: TokenLayout, role: tuple, batch: int, heads: int, device, build):
        """Build once per (method, role, layout, batch, heads, device).

        Layouts without text mask and permutation depend only on static sizes and go to a small
        LRU on this method object; others are kept in the TokenLayout instance (shared by the layers
        of one transformer call).
        """
        device = torch.device(device)
        key = (getattr(self, "_method_key", id(self)), role, batch, heads, str(device))
        if tokens.text_mask is None and tokens.permutation is None:
            lru = getattr(self, "_static_layouts", None)
            if lru is None:  # a subclass whose __post_init__ skipped ours
                lru = collections.OrderedDict()
                object.__setattr__(self, "_static_layouts", lru)
            full_key = key + (tokens.static_key(),)
            hit = lru.get(full_key, _MISSING)
            if hit is not _MISSING:
                lru.move_to_end(full_key)
                return hit
            value = build()
            lru[full_key] = value
            while len(lru) > _LRU_SIZE:
                lru.popitem(last=False)
            return value
        cache = tokens.cache
        if key not in cache:
            cache[key] = build()
        return cache[key]


_MISSING = object()


def _padded_full_layout(q_len, kv_len, key_valid, batch, device, block_shape, *, allow_empty_rows=False):
    """Every query attends every key, except keys marked False in ``key_valid`` ``[B|1, kv_len]``."""
    q_block, kv_block = block_shape
    if key_valid is None:
        return BlockLayout.full(q_len, kv_len, q_block=q_block, kv_block=kv_block, device=device)
    key_valid = key_valid.to(device)
    if key_valid.shape[0] != batch:
        key_valid = key_valid.expand(batch, -1)
    nq, nkv = -(-q_len // q_block), -(-kv_len // kv_block)
    ones = torch.ones(1, 1, nq, nkv, dtype=torch.bool, device=device)
    return BlockLayout.from_block_mask(ones, q_block, kv_block, q_len, kv_len, key_padding_mask=key_valid.contiguous(),
                                       allow_empty_rows=allow_empty_rows)


def _check_call(q, k, v, tokens) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"{name} must be 4-D [B, S, H, D] (diffusers' layout), got shape {tuple(t.shape)}")
    if not isinstance(tokens, TokenLayout):
        raise TypeError(f"tokens must be an accel.TokenLayout, got {type(tokens).__name__}")
    if k.shape != v.shape:
        raise ValueError(f"k and v must have the same shape, got k={tuple(k.shape)}, v={tuple(v.shape)}")
    if q.shape != k.shape:
        raise ValueError(
            f"q and k must have the same shape [B, S, H, D] (self-attention), got q={tuple(q.shape)}, k={tuple(k.shape)}"
        )
    tokens.check_sequence(q.shape[1], name="q", batch=q.shape[0])


# ---------------------------------------------------------------------- torch.compile boundary
@torch.library.custom_op("accel::method_attention", mutates_args=())
def _method_attention_op(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    text_mask: torch.Tensor | None,
    permutation: torch.Tensor | None,
    method_key: int,
    grid: list[int],
    text_len: int,
    text_side: int,
    scale: float | None,
) -> torch.Tensor:
    method = _METHODS.get(method_key)
    if method is None:
        raise RuntimeError(
            f"accel: the attention method (key {method_key}) this compiled graph was traced with no longer exists; "
            "keep the method object (or the apply() handle) alive while the compiled model is used"
        )
    tokens = TokenLayout(tuple(grid), text_len, _SIDE_NAMES[text_side], text_mask, permutation)
    return method.forward(q, k, v, tokens, scale=scale).contiguous()


@_method_attention_op.register_fake
def _(q, k, v, text_mask, permutation, method_key, grid, text_len, text_side, scale):
    return q.new_empty(q.shape)
