"""Edit masks: from the source pass's attention to the edit words, or from a user mask.

**From attention** (:class:`EditMaskObserver`): for every observed call, the vision queries' attention
over the *text keys only* (a softmax over the valid text keys, so never an S x S matrix; padded keys
excluded) is summed over the edit words' token positions and averaged over heads; the maps are
averaged over layers, steps and the observed batch rows, normalised to ``[0, 1]`` per image (per
latent frame for video) and thresholded (default 0.1). FLUX and HunyuanVideo hold the text in their
joint self-attention; for Wan (no text in self-attention) the cross-attention (``attn2``) queries and
text keys are used.

**Token positions** (:func:`edit_token_positions`): the edit words are found in the prompt (whole words,
case-insensitive) and mapped to token positions through the tokenizer's character offsets; tokenizers
that give no offsets fall back to counting the tokens of the prompt prefix before/after the word
(exact for tokenizers that split at word boundaries, e.g. SentencePiece/metaspace and the tiny
character tokenizers).

**User masks** (:func:`resize_user_mask`): an image or array at the token grid or the pixel size,
resized to the token grid (a token is edited if any of its pixels is).
"""

from __future__ import annotations

import re

import numpy as np
import torch

from accel.control.controller import AttentionCall, Rule

__all__ = [
    "EditMaskObserver",
    "edit_token_positions",
    "find_word_spans",
    "normalise_per_frame",
    "resize_user_mask",
    "DEFAULT_THRESHOLD",
]

DEFAULT_THRESHOLD = 0.1


def find_word_spans(prompt: str, words) -> list[tuple[int, int]]:
    """Character spans ``(start, end)`` of every whole-word, case-insensitive occurrence of each of ``words``.

    Args:
        prompt: the text to search.
        words: a word (str) or a list of words/phrases.

    Raises:
        ValueError: ``words`` is empty or a word does not occur in ``prompt`` (naming both).
    """
    if isinstance(words, str):
        words = [words]
    words = list(words) if words is not None else []
    if not words or not all(isinstance(w, str) and w.strip() for w in words):
        raise ValueError(f"edit_words must be a non-empty word or list of non-empty words, got {words!r}")
    spans = []
    for word in words:
        found = [(m.start(), m.end()) for m in re.finditer(r"(?<!\w)" + re.escape(word.strip()) + r"(?!\w)", prompt,
                                                            flags=re.IGNORECASE)]
        if not found:
            raise ValueError(f"edit_words: {word!r} does not occur (as a whole word) in the source prompt {prompt!r}")
        spans.extend(found)
    return spans


def _ids(tokenizer, text: str, special: bool) -> list[int]:
    out = tokenizer(text, add_special_tokens=special)["input_ids"]
    return list(out[0] if out and isinstance(out[0], list) else out)


def edit_token_positions(tokenizer, prompt: str, words, *, template: str = "{}", crop_start: int = 0,
                         max_length: int | None = None) -> list[int]:
    """Token positions of ``words`` in the encoded prompt, as the text encoder sees them.

    Args:
        tokenizer: the pipeline's tokenizer for the text that the transformer attends (FLUX:
            ``tokenizer_2`` (T5); Wan: ``tokenizer``; HunyuanVideo: ``tokenizer`` (Llama)).
        prompt: the source prompt.
        words: the edit word(s) (see :func:`find_word_spans`).
        template: the pipeline's prompt template with ``{}`` for the prompt (HunyuanVideo wraps prompts).
        crop_start: leading template tokens the pipeline drops after encoding (HunyuanVideo).
        max_length: positions at or beyond it are dropped (the pipeline truncates there).

    Returns:
        Sorted token positions (indices into the text tokens the transformer sees).

    Raises:
        ValueError: a word is not in the prompt, or it maps to no token (truncated away).
    """
    spans = find_word_spans(prompt, words)
    offset = template.index("{}") if "{}" in template else 0
    text = template.format(prompt) if "{}" in template else prompt
    spans = [(a + offset, b + offset) for a, b in spans]
    positions: set[int] = set()
    try:
        enc = tokenizer(text, return_offsets_mapping=True)
        offsets = enc["offset_mapping"]
        if offsets and isinstance(offsets[0], list) and offsets[0] and isinstance(offsets[0][0], (list, tuple)):
            offsets = offsets[0]
        for i, (a, b) in enumerate(offsets):
            if b > a and any(a < end and b > start for start, end in spans):
                positions.add(i)
    except (NotImplementedError, TypeError, ValueError, KeyError):
        positions = set()
    if not positions:  # word-level fallback: count the tokens of the prefixes
        full, bare = _ids(tokenizer, text, True), _ids(tokenizer, text, False)
        lead = next((i for i in range(len(full) - len(bare) + 1) if full[i:i + len(bare)] == bare), 0)
        for start, end in spans:
            n0 = len(_ids(tokenizer, text[:start].rstrip(), False)) if text[:start].strip() else 0
            n1 = len(_ids(tokenizer, text[:end], False))
            positions.update(range(lead + n0, lead + max(n1, n0 + 1)))
    out = sorted(p - crop_start for p in positions if p >= crop_start)
    if max_length is not None:
        out = [p for p in out if p < max_length]
    if not out:
        raise ValueError(f"edit_words {words!r} map to no text token of the prompt the transformer sees "
                         f"(prompt {prompt!r}; truncated at max_length={max_length}?)")
    return out


def normalise_per_frame(heat: torch.Tensor) -> torch.Tensor:
    """Min-max normalise a ``[T, H, W]`` map to ``[0, 1]`` separately per frame (constant frames -> 0)."""
    flat = heat.reshape(heat.shape[0], -1).float()
    lo, hi = flat.amin(dim=1, keepdim=True), flat.amax(dim=1, keepdim=True)
    span = hi - lo
    out = torch.where(span > 0, (flat - lo) / torch.where(span > 0, span, torch.ones_like(span)), torch.zeros_like(flat))
    return out.reshape(heat.shape)


class EditMaskObserver(Rule):
    """Accumulates the vision queries' attention to the edit words' text keys (see the module docstring).

    Args:
        token_positions: positions of the edit words among the text tokens (:func:`edit_token_positions`).
        valid_text_len: number of valid (non-padding) text tokens per prompt, or ``None`` to use the
            token layout's ``text_mask`` (HunyuanVideo) or all text keys.
        rows: which batch rows to observe: ``"all"`` (a source-only pass) or ``"source"`` (rows
            0, 2, 4, ... of a paired batch).
        head_chunk: heads per softmax chunk, an int >= 1.
        query_chunk: vision queries per softmax chunk, an int >= 1; memory is bounded by
            ``B * head_chunk * query_chunk * L`` floats (L = text tokens).

    Calls in a cache context named ``"uncond"`` (classifier-free guidance's negative prompt) are skipped.
    After the pass, :meth:`heatmap` and :meth:`mask` give the results.
    """

    wants_cross_attention = True

    def __init__(self, token_positions, valid_text_len: int | None = None, *, rows: str = "all",
                 head_chunk: int = 8, query_chunk: int = 8192) -> None:
        positions = list(token_positions)
        if not positions or not all(isinstance(p, int) and p >= 0 for p in positions):
            raise ValueError(f"token_positions must be a non-empty list of ints >= 0, got {token_positions!r}")
        if rows not in ("all", "source"):
            raise ValueError(f"rows must be 'all' or 'source', got {rows!r}")
        self.token_positions = positions
        self.valid_text_len = valid_text_len
        self.rows = rows
        for name, value in (("head_chunk", head_chunk), ("query_chunk", query_chunk)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        self.head_chunk = head_chunk
        self.query_chunk = query_chunk
        self.reset()

    def reset(self) -> None:
        self._sum: torch.Tensor | None = None
        self._count = 0
        self._grid = None
        self._perm = None

    @property
    def count(self) -> int:
        """Number of (layer, step, call) attention maps accumulated."""
        return self._count

    def observe(self, call: AttentionCall, q, k, v) -> None:
        layout = call.layout
        if call.cross or layout.text_len == 0 or call.context == "uncond":
            return
        rows = slice(None) if self.rows == "all" else slice(0, None, 2)
        valid = layout.text_mask
        if valid is not None:
            valid = (valid.expand(q.shape[0], -1) if valid.shape[0] == 1 else valid)[rows]
        self._accumulate(call, q[rows, layout.video_slice], k[rows, layout.text_slice], valid)

    def observe_cross(self, call: AttentionCall, q, k) -> None:
        if call.context == "uncond":
            return
        rows = slice(None) if self.rows == "all" else slice(0, None, 2)
        self._accumulate(call, q[rows], k[rows], None)

    def _accumulate(self, call: AttentionCall, qv: torch.Tensor, kt: torch.Tensor, valid: torch.Tensor | None) -> None:
        b, s, h, d = qv.shape
        n_text = kt.shape[1]
        if valid is None:
            n = n_text if self.valid_text_len is None else min(self.valid_text_len, n_text)
            valid = torch.zeros(b, n_text, dtype=torch.bool, device=kt.device)
            valid[:, :n] = True
        pos = torch.tensor([p for p in self.token_positions if p < n_text], dtype=torch.long, device=kt.device)
        if pos.numel() == 0:
            raise ValueError(f"edit-word token positions {self.token_positions} are beyond the {n_text} text tokens "
                             f"of {call.name}")
        bias = torch.zeros(b, 1, 1, n_text, dtype=torch.float32, device=kt.device)
        bias.masked_fill_(~valid[:, None, None, :], float("-inf"))
        total = torch.zeros(b, s, dtype=torch.float32, device=qv.device)
        scale = d ** -0.5
        with torch.no_grad():
            for h0 in range(0, h, self.head_chunk):
                kh = kt[:, :, h0:h0 + self.head_chunk].float().transpose(1, 2)       # [b, hc, L, d]
                for s0 in range(0, s, self.query_chunk):
                    qh = qv[:, s0:s0 + self.query_chunk, h0:h0 + self.head_chunk].float().transpose(1, 2)
                    probs = torch.softmax(qh @ kh.transpose(-1, -2) * scale + bias, dim=-1)   # [b, hc, sc, L]
                    total[:, s0:s0 + self.query_chunk] += probs.index_select(-1, pos).sum(-1).sum(1)
        heat = (total / h).mean(0)
        if self._sum is None:
            self._sum = torch.zeros_like(heat)
            self._grid = call.layout.grid
            self._perm = call.layout.permutation
        elif call.layout.grid != self._grid:
            raise ValueError(f"the token grid changed during mask observation ({self._grid} -> {call.layout.grid})")
        self._sum += heat
        self._count += 1

    def heatmap(self) -> torch.Tensor:
        """The averaged attention to the edit words, ``[T, H, W]`` (grid order), normalised per frame to [0, 1].

        Raises:
            RuntimeError: nothing was observed (the observer's controller never ran).
        """
        if self._sum is None or self._count == 0:
            raise RuntimeError("EditMaskObserver observed no attention call: run the pipeline with its controller "
                               "installed first")
        avg = self._sum / self._count
        if self._perm is not None:
            grid_order = torch.empty_like(avg)
            grid_order[self._perm.to(avg.device)] = avg
            avg = grid_order
        return normalise_per_frame(avg.reshape(self._grid))

    def mask(self, threshold: float = DEFAULT_THRESHOLD) -> torch.Tensor:
        """The edit mask: bool ``[T, H, W]``, True where :meth:`heatmap` exceeds ``threshold`` (in [0, 1])."""
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be a number in [0, 1], got {threshold!r}")
        return self.heatmap() > threshold


def _to_array(mask) -> np.ndarray:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow ships with diffusers
        Image = None
    if Image is not None and isinstance(mask, Image.Image):
        return np.asarray(mask.convert("L"), dtype=np.float32) / 255.0
    if isinstance(mask, torch.Tensor):
        return mask.detach().float().cpu().numpy()
    if isinstance(mask, np.ndarray):
        return mask.astype(np.float32)
    if isinstance(mask, (list, tuple)) and mask and Image is not None and all(isinstance(m, Image.Image) for m in mask):
        return np.stack([np.asarray(m.convert("L"), dtype=np.float32) / 255.0 for m in mask])
    raise TypeError(f"mask must be a PIL image, a list of PIL images (frames), a numpy array or a torch tensor, "
                    f"got {type(mask).__name__}")


def resize_user_mask(mask, grid: tuple[int, int, int], *, pixel_size: tuple[int, int] | None = None,
                     num_frames: int | None = None, temporal_factor: int = 1) -> torch.Tensor:
    """A user's edit mask as a bool ``[T, H, W]`` token-grid mask.

    Args:
        mask: a PIL image (grey level > 0.5 = edit), a list of PIL frames, or an array/tensor ``[H, W]``
            or ``[F, H, W]`` (nonzero, or > 0.5 for floats, = edit).
        grid: the token grid ``(T, H, W)``.
        pixel_size: ``(height, width)`` in pixels of the output; a mask of that size is reduced to the grid
            (a token is edited if any pixel of its patch is).
        num_frames: pixel frame count of the video; a ``[num_frames, H, W]`` mask is reduced in time the way
            the VAE groups frames (latent frame 0 = frame 0, latent frame j = frames ``f*(j-1)+1 .. f*j``
            with ``f = temporal_factor``).
        temporal_factor: the VAE's temporal compression.

    A 2-D mask applies to every frame. Raises ``ValueError`` for any other size (naming the allowed ones).
    """
    arr = _to_array(mask)
    if arr.ndim == 3 and arr.shape[-1] in (3, 4) and arr.shape[0] not in (grid[0], num_frames):
        arr = arr.mean(-1)  # an RGB(A) array image
    t, h, w = grid
    allowed_hw = [(h, w)] + ([tuple(pixel_size)] if pixel_size is not None else [])
    allowed_t = [t] + ([num_frames] if num_frames is not None and num_frames != t else [])
    if arr.ndim == 2:
        arr = arr[None]
        frames_ok = True
    else:
        frames_ok = arr.ndim == 3 and arr.shape[0] in allowed_t
    if not frames_ok or tuple(arr.shape[1:]) not in allowed_hw:
        raise ValueError(
            f"mask has shape {tuple(np.shape(_to_array(mask)))}; allowed: [H, W] or [F, H, W] with (H, W) in "
            f"{allowed_hw} (token grid or pixels) and F in {allowed_t} (token frames or video frames)"
        )
    binary = arr > 0.5
    x = torch.from_numpy(binary.astype(np.float32))
    if x.shape[1:] != (h, w):
        x = torch.nn.functional.adaptive_max_pool2d(x[None], (h, w))[0]
    if x.shape[0] != t:
        if x.shape[0] == 1:
            x = x.expand(t, h, w)
        else:
            f = temporal_factor
            groups = [x[0:1]] + [x[max(0, f * (j - 1) + 1): f * j + 1] for j in range(1, t)]
            x = torch.stack([g.amax(0) for g in groups])
    return (x > 0.5).reshape(t, h, w).contiguous()
