"""`TokenLayout`: where every token of the sequence an attention call sees sits.

A diffusion transformer attends over one joint sequence made of

* the **video (or image) tokens**: one per latent patch of a ``(T, H, W)`` grid (``T = 1`` for
  images), in row-major ``(t, y, x)`` order unless a permutation says otherwise, and
* optionally a **text span** of ``text_len`` tokens, placed before the video tokens
  (``text_side="first"``, FLUX) or after them (``text_side="last"``, HunyuanVideo), with an optional
  per-sample validity mask (HunyuanVideo pads its prompts).

Wan's self-attention has no text span (text enters by cross-attention). Sparse attention methods
read the layout to know which query/key pairs their pattern allows; the processors build one per
transformer call (see :mod:`accel.processors`), and users of the functional API build their own::

    layout = accel.TokenLayout(grid=(T, H, W), text_len=256, text_side="last", text_mask=mask)
    out = accel.Dense()(q, k, v, layout)
"""

from __future__ import annotations

import dataclasses

import torch

__all__ = ["TokenLayout", "TEXT_SIDES", "STEP_KEY", "HEAD_GROUP_KEY"]

#: key of :attr:`TokenLayout.cache` under which accel's root hook records ``(step, num_inference_steps)``
#: of the transformer call (``num_inference_steps`` may be ``None``); absent for direct calls on tensors
STEP_KEY = "accel.step"

#: key of :attr:`TokenLayout.cache` under which accel's Ulysses wrapper records the process group whose
#: ranks each hold a share of the heads of the call (absent without context parallelism): a method whose
#: rule reads all heads at once (Agent's token merging) gathers them over this group
HEAD_GROUP_KEY = "accel.head_group"

TEXT_SIDES = ("first", "last")


def is_int(value) -> bool:
    """True for a Python ``int`` that is not a ``bool`` (how accel's integer parameters are checked)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _compiling() -> bool:
    return torch.compiler.is_compiling()


@dataclasses.dataclass(frozen=True, eq=False)
class TokenLayout:
    """Where each token of a joint (text + video/image) attention sequence sits.

    Args:
        grid: ``(T, H, W)``, the latent patch grid of the video tokens: ``T`` frames (after temporal
            patching; 1 for images), ``H`` rows and ``W`` columns of patches. Three ints >= 1. The
            sequence holds ``T * H * W`` video tokens.
        text_len: number of text tokens in the joint sequence, an int >= 0 (default 0: no text).
        text_side: where the text span sits: ``"first"`` (text tokens ``[0, text_len)``, then video;
            FLUX), ``"last"`` (video tokens first, then text; HunyuanVideo) or ``None`` (no text).
            Must be ``None`` exactly when ``text_len == 0``.
        text_mask: optional bool tensor ``[B, text_len]``, True = the text token is valid (a real
            prompt token), False = padding that no query may attend. ``None`` means every text token
            is valid. Only allowed when ``text_len > 0``.
        permutation: optional int64 tensor ``[P]``, ``P >= T*H*W``: the order of the video tokens in
            the sequence. ``permutation[i]`` is the row-major ``(t, y, x)`` index of the video token at
            video position ``i``, or ``-1`` when position ``i`` is *padding*: a position that holds no
            token (tile-aligned patterns pad the grid to whole tiles, :mod:`accel.patterns.tiled`).
            Every index ``0 .. T*H*W-1`` appears exactly once, so there are ``P - T*H*W`` padding
            positions. Padding positions are never attended as keys (:meth:`key_padding_mask`) and
            their outputs are meaningless. ``None`` = identity (row-major order, no padding). Used by
            tiled patterns that reorder tokens so that grid neighbourhoods fall into contiguous blocks.

    Raises:
        ValueError / TypeError: naming the parameter, the value and what is allowed.

    The layout is immutable; :meth:`cache` gives a per-instance dict in which methods keep the block
    layouts they built for it, so the layers of one transformer call share them.
    """

    grid: tuple[int, int, int]
    text_len: int = 0
    text_side: str | None = None
    text_mask: torch.Tensor | None = None
    permutation: torch.Tensor | None = None
    _cache: dict = dataclasses.field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        grid = self.grid
        if isinstance(grid, torch.Size):
            grid = tuple(grid)
        if not isinstance(grid, (tuple, list)) or len(grid) != 3 or not all(is_int(g) and g >= 1 for g in grid):
            raise ValueError(f"grid must be a tuple of three ints >= 1 (T, H, W), got {self.grid!r}")
        object.__setattr__(self, "grid", tuple(int(g) for g in grid))
        if not is_int(self.text_len) or self.text_len < 0:
            raise ValueError(f"text_len must be an int >= 0, got {self.text_len!r}")
        if self.text_len == 0:
            if self.text_side is not None:
                raise ValueError(f"text_side must be None when text_len is 0, got {self.text_side!r}")
            if self.text_mask is not None:
                raise ValueError("text_mask must be None when text_len is 0")
        elif self.text_side not in TEXT_SIDES:
            raise ValueError(
                f"text_side must be 'first' or 'last' when text_len > 0 (got text_len={self.text_len}), "
                f"got {self.text_side!r}"
            )
        m = self.text_mask
        if m is not None:
            if not isinstance(m, torch.Tensor):
                raise TypeError(f"text_mask must be a torch.Tensor or None, got {type(m).__name__}")
            if m.dtype != torch.bool:
                raise ValueError(f"text_mask must have dtype torch.bool (True = valid token), got {m.dtype}")
            if m.dim() != 2 or m.shape[1] != self.text_len or m.shape[0] < 1:
                raise ValueError(
                    f"text_mask must have shape [B, text_len={self.text_len}], got {tuple(m.shape)}"
                )
        p = self.permutation
        if p is not None:
            if not isinstance(p, torch.Tensor):
                raise TypeError(f"permutation must be a torch.Tensor or None, got {type(p).__name__}")
            n = self.num_video_tokens
            if p.dtype != torch.int64 or p.dim() != 1 or p.shape[0] < n:
                raise ValueError(
                    f"permutation must be an int64 tensor [P >= T*H*W = {n}], got dtype={p.dtype}, "
                    f"shape={tuple(p.shape)}"
                )
            if not _compiling():
                real = p >= 0
                in_range = bool(((p >= -1) & (p < n)).all()) and int(real.sum()) == n
                if in_range:
                    seen = torch.zeros(n, dtype=torch.bool, device=p.device)
                    seen[p[real]] = True
                    in_range = bool(seen.all())
                if not in_range:
                    raise ValueError("permutation must hold every index 0 .. T*H*W-1 exactly once (and -1 for padding "
                                     "positions)")

    # ------------------------------------------------------------------ sizes and spans
    @property
    def num_video_tokens(self) -> int:
        """``T * H * W``, the number of video (image) tokens."""
        t, h, w = self.grid
        return t * h * w

    @property
    def num_video_positions(self) -> int:
        """Positions of the video span: ``len(permutation)`` (video tokens plus padding), else ``T * H * W``."""
        return self.num_video_tokens if self.permutation is None else int(self.permutation.shape[0])

    @property
    def has_video_padding(self) -> bool:
        """True when the video span holds padding positions (see ``permutation``)."""
        return self.num_video_positions > self.num_video_tokens

    @property
    def seq_len(self) -> int:
        """Length of the joint sequence: video positions (tokens and padding) plus text tokens."""
        return self.num_video_positions + self.text_len

    @property
    def video_start(self) -> int:
        """Index of the first video token in the joint sequence."""
        return self.text_len if self.text_side == "first" else 0

    @property
    def text_start(self) -> int:
        """Index of the first text token (``seq_len`` when there is no text)."""
        if self.text_side == "first":
            return 0
        return self.num_video_positions

    @property
    def video_slice(self) -> slice:
        """The video tokens' span of the joint sequence, as a slice."""
        return slice(self.video_start, self.video_start + self.num_video_positions)

    @property
    def text_slice(self) -> slice:
        """The text tokens' span of the joint sequence, as a slice (empty without text)."""
        return slice(self.text_start, self.text_start + self.text_len)

    @property
    def has_text_padding(self) -> bool:
        """True when a text mask is given (some text tokens may be padding)."""
        return self.text_mask is not None

    def video_valid(self) -> torch.Tensor | None:
        """bool ``[num_video_positions]``, False at padding positions; ``None`` without video padding."""
        return None if not self.has_video_padding else self.permutation >= 0

    def check_sequence(self, seq_len: int, *, name: str = "sequence", batch: int | None = None) -> None:
        """Raise ``ValueError`` unless ``seq_len`` equals :attr:`seq_len` (and, with a text mask, ``batch`` fits).

        Args:
            seq_len: the length of the tensor's sequence dimension.
            name: what the tensor is called in the error message (e.g. ``"q"``).
            batch: the tensor's batch size; with a ``text_mask`` of batch ``Bm`` it must equal ``Bm``
                or ``Bm`` must be 1.
        """
        if seq_len != self.seq_len:
            raise ValueError(
                f"{name} has {seq_len} tokens but the token layout describes {self.seq_len} "
                f"(grid {self.grid} = {self.num_video_tokens} video tokens"
                f"{f' in {self.num_video_positions} positions' if self.has_video_padding else ''} + text_len "
                f"{self.text_len}); "
                "the sequence does not match the recorded layout"
            )
        if batch is not None and self.text_mask is not None and self.text_mask.shape[0] not in (1, batch):
            raise ValueError(
                f"{name} has batch {batch} but text_mask has batch {self.text_mask.shape[0]} (allowed: 1 or {batch})"
            )

    def key_padding_mask(self, batch: int | None = None) -> torch.Tensor | None:
        """Validity of every key of the joint sequence: bool ``[B, seq_len]`` (True = valid), or ``None``.

        ``None`` when there is no ``text_mask`` and no video padding (every key valid). Video tokens
        are valid, video padding positions and padded text tokens are not.

        Args:
            batch: expand a batch-1 mask to this batch size (``None``: keep the text mask's batch, 1
                without a text mask).
        """
        m = self.text_mask
        video = self.video_valid()
        if m is None and video is None:
            return None
        device = m.device if m is not None else video.device
        if m is None:
            m = torch.ones(1, self.text_len, dtype=torch.bool, device=device)
        if batch is not None and m.shape[0] != batch:
            m = m.expand(batch, -1)
        if video is None:
            video = torch.ones(m.shape[0], self.num_video_tokens, dtype=torch.bool, device=device)
        else:
            video = video.to(device)[None].expand(m.shape[0], -1)
        parts = (m, video) if self.text_side == "first" else (video, m)
        return torch.cat(parts, dim=1)

    def video_coords(self, device: torch.device | str | None = None) -> torch.Tensor:
        """int64 ``[num_video_positions, 3]``: the ``(t, y, x)`` grid coordinate of the video token at
        each video position (``(-1, -1, -1)`` at padding positions).

        Follows :attr:`permutation` when given. ``device``: where to build it (default: the
        permutation's device, else CPU).
        """
        t, h, w = self.grid
        if device is None:
            device = self.permutation.device if self.permutation is not None else "cpu"
        idx = torch.arange(self.num_video_tokens, device=device)
        if self.permutation is not None:
            idx = self.permutation.to(device)
        coords = torch.stack((idx // (h * w), (idx // w) % h, idx % w), dim=1)
        return torch.where(idx[:, None] < 0, -1, coords) if self.has_video_padding else coords

    # ------------------------------------------------------------------ caching
    def static_key(self) -> tuple:
        """A hashable key of everything but tensor contents: grid, text_len, text_side, mask shape, and the
        number of video positions when a permutation is given (``None`` without one).

        Two layouts with the same key and no text mask and no permutation describe the same token
        positions; block layouts built from such a layout can be cached across calls under this key.
        """
        return (
            self.grid,
            self.text_len,
            self.text_side,
            None if self.text_mask is None else tuple(self.text_mask.shape),
            None if self.permutation is None else self.num_video_positions,
        )

    @property
    def cache(self) -> dict:
        """A dict private to this layout instance, for derived data (e.g. block layouts) built from it."""
        return self._cache

    def with_text_mask(self, text_mask: torch.Tensor | None) -> TokenLayout:
        """The same layout with another ``text_mask`` (validated like the constructor's)."""
        return TokenLayout(self.grid, self.text_len, self.text_side, text_mask, self.permutation)
