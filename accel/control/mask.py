"""Edit masks: from the source pass's attention to the edit words, or from a user mask.

**From attention** (:class:`EditMaskObserver`), as ConsistEdit's release computes it (github.com/
zxYin/ConsistEdit_Code @ 0b73d6a, ``consistEdit/attention_map_controller.py``, read for its rules): for
every observed call, the vision queries' attention probabilities to the edit words' text tokens are
summed over those tokens and averaged over heads; the maps are averaged over layers, steps and the
observed batch rows, min-max normalised per image (per latent frame for video: ``(x - min) / (max - min
+ 1e-6)``) and thresholded (default: ``> 0.1`` is edited). The softmax runs over

* ``"joint"``: every valid key of the joint sequence, text and vision (the release's FLUX rule, observed
  in the single-stream blocks only), or
* ``"text"``: the valid text keys only (the release's CogVideoX rule, every layer; never an S x S
  matrix). For Wan (no text in self-attention) the cross-attention (``attn2``) queries and text keys are
  used, whose softmax is over the text keys anyway.

*Valid* keys are the ones the model's attention uses: a layout's ``text_mask`` (HunyuanVideo masks its
padded text) or ``valid_text_len``; without either, every text key. The release's models (FLUX,
CogVideoX) attend their padded T5 tokens, so its softmax includes them; ``accel.editing`` passes no
``valid_text_len`` on FLUX for that reason (on Wan it passes the prompt's token count: Wan attends its
zero-padded text keys, so this part differs from the release's rule).

**Token positions** (:func:`edit_token_positions`): the edit words are found in the prompt and mapped to
token positions through the tokenizer's character offsets (every token overlapping the word): with
``match="first"`` (the release's) the first case-sensitive occurrence of each word as a substring; with
``match="words"`` (ours) every whole-word, case-insensitive occurrence. Tokenizers that give no offsets
fall back to counting the tokens of the prompt prefix before/after the word (exact for tokenizers that
split at word boundaries, e.g. SentencePiece/metaspace and the tiny character tokenizers).

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
    "MASK_SOFTMAX",
    "WORD_MATCHES",
    "edit_token_positions",
    "find_word_spans",
    "normalise_per_frame",
    "resize_user_mask",
    "DEFAULT_THRESHOLD",
]

DEFAULT_THRESHOLD = 0.1
#: softmax domains of :class:`EditMaskObserver` (module docstring)
MASK_SOFTMAX = ("joint", "text")
#: word matching rules of :func:`find_word_spans` / :func:`edit_token_positions`
WORD_MATCHES = ("first", "words")


def find_word_spans(prompt: str, words, *, match: str = "first") -> list[tuple[int, int]]:
    """Character spans ``(start, end)`` of each of ``words`` in ``prompt``.

    Args:
        prompt: the text to search.
        words: a word (str) or a list of words/phrases.
        match: ``"first"`` (default, the ConsistEdit release's): the first case-sensitive occurrence of each
            word as a substring; ``"words"`` (ours): every whole-word, case-insensitive occurrence.

    Raises:
        ValueError: ``words`` is empty, ``match`` unknown, or a word does not occur in ``prompt`` (naming both).
    """
    if match not in WORD_MATCHES:
        raise ValueError(f"match must be one of {WORD_MATCHES}, got {match!r}")
    if isinstance(words, str):
        words = [words]
    words = list(words) if words is not None else []
    if not words or not all(isinstance(w, str) and w.strip() for w in words):
        raise ValueError(f"edit_words must be a non-empty word or list of non-empty words, got {words!r}")
    spans = []
    for word in words:
        if match == "first":
            start = prompt.find(word)
            if start < 0:
                raise ValueError(f"edit_words: {word!r} does not occur (case-sensitive) in the source prompt {prompt!r}")
            spans.append((start, start + len(word)))
            continue
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
                         max_length: int | None = None, match: str = "first") -> list[int]:
    """Token positions of ``words`` in the encoded prompt, as the text encoder sees them.

    Args:
        tokenizer: the pipeline's tokenizer for the text that the transformer attends (FLUX:
            ``tokenizer_2`` (T5); Wan: ``tokenizer``; HunyuanVideo: ``tokenizer`` (Llama)).
        prompt: the source prompt.
        words: the edit word(s) (see :func:`find_word_spans`).
        template: the pipeline's prompt template with ``{}`` for the prompt (HunyuanVideo wraps prompts).
        crop_start: leading template tokens the pipeline drops after encoding (HunyuanVideo).
        max_length: positions at or beyond it are dropped (the pipeline truncates there).
        match: how words are found in the prompt (:func:`find_word_spans`): ``"first"`` (default, the
            release's) or ``"words"`` (ours).

    Returns:
        Sorted token positions (indices into the text tokens the transformer sees).

    Raises:
        ValueError: a word is not in the prompt, or it maps to no token (truncated away).
    """
    spans = find_word_spans(prompt, words, match=match)
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
    """Min-max normalise a ``[T, H, W]`` map per frame as the release does: ``(x - min) / (max - min + 1e-6)``
    (a constant frame gives 0)."""
    flat = heat.reshape(heat.shape[0], -1).float()
    lo, hi = flat.amin(dim=1, keepdim=True), flat.amax(dim=1, keepdim=True)
    return ((flat - lo) / (hi - lo + 1e-6)).reshape(heat.shape)


class EditMaskObserver(Rule):
    """Accumulates the vision queries' attention to the edit words' text tokens (see the module docstring).

    Args:
        token_positions: positions of the edit words among the text tokens (:func:`edit_token_positions`).
        valid_text_len: number of valid (non-padding) text tokens per prompt, or ``None`` to use the
            token layout's ``text_mask`` (HunyuanVideo) or all text keys.
        rows: which batch rows to observe: ``"all"`` (a source-only pass) or ``"source"`` (rows
            0, 2, 4, ... of a paired batch).
        softmax: ``"joint"`` (the release's FLUX rule: over every valid key of the joint sequence) or
            ``"text"`` (over the valid text keys only: the release's rule for its video model); ``None``
            (default): ``"joint"`` on FLUX, ``"text"`` on Wan and HunyuanVideo. Wan's cross-attention is
            text-only either way.
        head_chunk: heads per softmax chunk, an int >= 1.
        query_chunk: vision queries per softmax chunk, an int >= 1; memory is bounded by
            ``B * head_chunk * query_chunk * L`` floats (L = keys in the softmax).

    Default layers (:class:`~accel.control.Controller` ``layers="auto"``): FLUX's single-stream blocks
    (where the release observes), every layer of Wan and HunyuanVideo. Calls in a cache context named
    ``"uncond"`` (classifier-free guidance's negative prompt) are skipped. After the pass,
    :meth:`heatmap` and :meth:`mask` give the results.
    """

    wants_cross_attention = True
    default_layers = {"flux": r"^single_transformer_blocks\.", "wan": None, "hunyuan_video": None}

    def __init__(self, token_positions, valid_text_len: int | None = None, *, rows: str = "all",
                 softmax: str | None = None, head_chunk: int = 8, query_chunk: int = 2048) -> None:
        positions = list(token_positions)
        if not positions or not all(isinstance(p, int) and p >= 0 for p in positions):
            raise ValueError(f"token_positions must be a non-empty list of ints >= 0, got {token_positions!r}")
        if rows not in ("all", "source"):
            raise ValueError(f"rows must be 'all' or 'source', got {rows!r}")
        if softmax is not None and softmax not in MASK_SOFTMAX:
            raise ValueError(f"softmax must be None or one of {MASK_SOFTMAX}, got {softmax!r}")
        self.token_positions = positions
        self.valid_text_len = valid_text_len
        self.rows = rows
        self.softmax = softmax
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

    def softmax_for(self, family: str) -> str:
        """The softmax domain used on a model family (``softmax``, or the default per family)."""
        if self.softmax is not None:
            return self.softmax
        return "joint" if family == "flux" else "text"

    def _text_valid(self, n_text: int, batch: int, valid, device) -> torch.Tensor:
        """bool ``[B, n_text]``: the text keys in the softmax (the layout's mask, else ``valid_text_len``)."""
        if valid is not None:
            return valid
        n = n_text if self.valid_text_len is None else min(self.valid_text_len, n_text)
        out = torch.zeros(batch, n_text, dtype=torch.bool, device=device)
        out[:, :n] = True
        return out

    def observe(self, call: AttentionCall, q, k, v) -> None:
        layout = call.layout
        if call.cross or layout.text_len == 0 or call.context == "uncond":
            return
        rows = slice(None) if self.rows == "all" else slice(0, None, 2)
        valid = layout.text_mask
        if valid is not None:
            valid = (valid.expand(q.shape[0], -1) if valid.shape[0] == 1 else valid)[rows]
        qv = q[rows, layout.video_slice]
        text_valid = self._text_valid(layout.text_len, qv.shape[0], valid, q.device)
        if self.softmax_for(call.family) == "text":
            self._accumulate(call, qv, k[rows, layout.text_slice], text_valid, 0)
            return
        keys = k[rows]  # every key of the joint sequence; padded text keys out of the softmax
        key_valid = torch.ones(keys.shape[0], keys.shape[1], dtype=torch.bool, device=q.device)
        key_valid[:, layout.text_slice] = text_valid
        self._accumulate(call, qv, keys, key_valid, layout.text_slice.start)

    def observe_cross(self, call: AttentionCall, q, k) -> None:
        if call.context == "uncond":
            return
        rows = slice(None) if self.rows == "all" else slice(0, None, 2)
        qv, kt = q[rows], k[rows]
        self._accumulate(call, qv, kt, self._text_valid(kt.shape[1], qv.shape[0], None, q.device), 0)

    def _accumulate(self, call: AttentionCall, qv: torch.Tensor, keys: torch.Tensor, key_valid: torch.Tensor,
                    text_start: int) -> None:
        """Add the head-averaged probability mass of ``qv`` on the edit tokens (at ``text_start + position``
        of ``keys``) under a softmax over the ``key_valid`` keys."""
        b, s, h, d = qv.shape
        n_text = keys.shape[1] - text_start if text_start else keys.shape[1]
        pos = torch.tensor([text_start + p for p in self.token_positions if p < n_text], dtype=torch.long,
                           device=keys.device)
        if pos.numel() == 0:
            raise ValueError(f"edit-word token positions {self.token_positions} are beyond the {n_text} text tokens "
                             f"of {call.name}")
        bias = torch.zeros(b, 1, 1, keys.shape[1], dtype=torch.float32, device=keys.device)
        bias.masked_fill_(~key_valid[:, None, None, :], float("-inf"))
        total = torch.zeros(b, s, dtype=torch.float32, device=qv.device)
        scale = d ** -0.5
        with torch.no_grad():
            for h0 in range(0, h, self.head_chunk):
                kh = keys[:, :, h0:h0 + self.head_chunk].float().transpose(1, 2)       # [b, hc, L, d]
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
