"""Permute once per forward: run a whole transformer call in the attention method's token order.

Tiled and tile-aligned patterns (:mod:`accel.methods.static`) run their kernel on the video tokens in
their own order (tiles; tiles of a grid padded to whole tiles). Per attention call that costs a
gather of q, k and v and a scatter of the output. Every other part of a diffusion transformer block
(projections, norms, modulation, MLPs, cross-attention over text) works token by token, so when all
self-attention layers of a forward use the same order the hidden states can be gathered *once* at
the first transformer block and scattered back after the last: the attention calls then find their
inputs in order and do no gather or scatter (:meth:`StaticPatternMethod.reorder_plan` returns
``None`` for them). The rotary embedding (a per-token table) and Wan 2.2's per-token timestep
embedding are gathered the same way. Padding positions of a padded order hold copies of a real
token; they are never attended as keys and are dropped at the end.

A forward runs this way (*whole-model mode*) only when

* the method has an order on this grid (:meth:`tile_permutation` is not ``None``),
* every self-attention layer of the model has the method (``accel.apply`` without ``layers``), none
  runs dense at this step (:class:`~accel.Schedule`), no attention controller or density recorder
  is installed, and ``permute_once`` was not turned off,
* the call is eager (not traced by ``torch.compile``), without context parallelism, and the family
  knows how its blocks take hidden states (no ControlNet residuals for FLUX, no token-replace
  blocks for HunyuanVideo I2V);

otherwise each attention call permutes on its own (*per-layer mode*, same result). Tests check that
both modes give the same pipeline output on the tiny Wan, HunyuanVideo and FLUX pipelines.
"""

from __future__ import annotations

import dataclasses

import torch

from accel.grid import TokenLayout

__all__ = ["BlockSpec", "BLOCK_SPECS", "WholeModelOrder"]


@dataclasses.dataclass(frozen=True)
class BlockSpec:
    """How the transformer blocks of one family take and return the video hidden states.

    Attributes:
        blocks: the block lists of the model, in the order ``forward`` runs them.
        hidden: ``(position, name)`` of the video hidden states ``[B, S, C]`` among the block's arguments
            (:data:`accel.processors.upstream.BLOCK_PARAMETERS`, checked at import).
        rotary: ``(position, name or names)`` of the rotary embedding, a ``(cos, sin)`` pair.
        rotary_dim: the sequence dimension of the rotary tables.
        rotary_text_first: the rotary tables cover ``[text, video]`` (FLUX): the video rows start after
            the text.
        per_token: ``(position, name, ndim)`` of arguments that are per token when they have ``ndim``
            dimensions (sequence dimension 1): Wan 2.2's timestep embedding ``[B, S, 6, C]``.
        blockers: ``(position, name)`` of arguments that must be ``None`` (HunyuanVideo I2V's token
            replacement addresses the first frame's tokens by position).
        output_hidden: index of the hidden states in the block's output tuple (``None``: the output is
            the hidden states).
        forward_blockers: forward arguments of the model that rule the mode out when given (FLUX's
            ControlNet residuals are added between blocks in row-major order).
    """

    blocks: tuple[str, ...]
    hidden: tuple[int, str]
    rotary: tuple[int, str | tuple[str, ...]]
    rotary_dim: int
    rotary_text_first: bool = False
    per_token: tuple[tuple[int, str, int], ...] = ()
    blockers: tuple[tuple[int, str], ...] = ()
    output_hidden: int | None = None
    forward_blockers: tuple[str, ...] = ()


BLOCK_SPECS = {
    "wan": BlockSpec(("blocks",), (0, "hidden_states"), (3, "rotary_emb"), 1, per_token=((2, "temb", 4),)),
    "hunyuan_video": BlockSpec(("transformer_blocks", "single_transformer_blocks"), (0, "hidden_states"),
                               (4, ("image_rotary_emb", "freqs_cis")), 0, blockers=((5, "token_replace_emb"),),
                               output_hidden=0),
    "flux": BlockSpec(("transformer_blocks", "single_transformer_blocks"), (0, "hidden_states"),
                      (3, "image_rotary_emb"), 0, rotary_text_first=True, output_hidden=1,
                      forward_blockers=("controlnet_block_samples", "controlnet_single_block_samples")),
}


def _names(name) -> tuple[str, ...]:
    return (name,) if isinstance(name, str) else tuple(name)


def _get(args, kwargs, where):
    pos, name = where
    if len(args) > pos:
        return args[pos]
    return next((kwargs[n] for n in _names(name) if n in kwargs), None)


def _set(args, kwargs, where, value):
    pos, name = where
    if len(args) > pos:
        args = args[:pos] + (value,) + args[pos + 1:]
    else:
        key = next((n for n in _names(name) if n in kwargs), _names(name)[0])
        kwargs = {**kwargs, key: value}
    return args, kwargs


class _Call:
    """State of one forward in whole-model mode."""

    def __init__(self, original: TokenLayout, ordered: TokenLayout, src: torch.Tensor, back: torch.Tensor) -> None:
        self.original = original
        self.ordered = ordered
        self.src = src
        self.back = back
        self.cache: dict = {}  # id(original tensor) -> (original, reordered), valid for this forward


class WholeModelOrder:
    """Forward hooks on a transformer's blocks that run a forward in the method's token order.

    Args:
        model: the transformer.
        spec: its family's :class:`BlockSpec`.
        run: its :class:`~accel.processors.state.RunState` (token layout, dense layers, controller).
        method: the installed attention method.
        covers_all_layers: the method is installed on every self-attention layer of the model.
    """

    def __init__(self, model: torch.nn.Module, spec: BlockSpec, run, method, *, covers_all_layers: bool) -> None:
        self.model = model
        self.spec = spec
        self.run = run
        self.method = method
        self.covers_all_layers = covers_all_layers
        self.blocked_by_inputs = False  # set by the root hook from the forward's arguments
        self._call: _Call | None = None
        blocks = [b for name in spec.blocks for b in getattr(model, name, ())]
        self._handles = []
        if blocks and hasattr(method, "reorder_plan"):
            for i, block in enumerate(blocks):
                self._handles.append(block.register_forward_pre_hook(self._make_pre_hook(i == 0), with_kwargs=True))
            self._handles.append(blocks[-1].register_forward_hook(self._after_last))

    @property
    def active(self) -> bool:
        """True while a forward runs in whole-model mode."""
        return self._call is not None

    def remove(self) -> None:
        """Remove the hooks."""
        for h in self._handles:
            h.remove()
        self._handles = []
        self._call = None

    def observe_inputs(self, inputs: dict) -> None:
        """Called by the root hook with the forward's arguments (name -> value)."""
        self._call = None
        self.blocked_by_inputs = any(inputs.get(name) is not None for name in self.spec.forward_blockers)

    # ------------------------------------------------------------------ decision
    def _eligible(self, args, kwargs) -> bool:
        run = self.run
        if not self.covers_all_layers or self.blocked_by_inputs or run.layout is None:
            return False
        if run.dense_layers or run.control is not None or getattr(run, "recorder", None) is not None:
            return False
        if not getattr(run, "permute_once", True) or torch.compiler.is_compiling():
            return False
        if getattr(self.model, "_parallel_config", None) is not None:
            return False
        if any(_get(args, kwargs, where) is not None for where in self.spec.blockers):
            return False
        hidden = _get(args, kwargs, self.spec.hidden)
        return isinstance(hidden, torch.Tensor) and hidden.shape[1] == run.layout.num_video_positions

    # ------------------------------------------------------------------ hooks
    def _make_pre_hook(self, first: bool):
        def hook(module, args, kwargs):
            if first:
                self._call = None
                if self._eligible(args, kwargs):
                    layout = self.run.layout
                    hidden = _get(args, kwargs, self.spec.hidden)
                    plan = self.method.reorder_plan(layout, hidden.device)
                    if plan is not None:
                        ordered, src, back = plan
                        self._call = _Call(layout, ordered, src, back)
                        self.run.layout = ordered
                        args, kwargs = _set(args, kwargs, self.spec.hidden, hidden.index_select(1, src))
            call = self._call
            if call is None:
                return None
            args, kwargs = self._reorder_tables(call, args, kwargs)
            return args, kwargs

        return hook

    def _reorder_tables(self, call: _Call, args, kwargs):
        """Replace the rotary tables and per-token arguments by their reordered copies (made once per forward)."""
        spec = self.spec
        rot = _get(args, kwargs, spec.rotary)
        if rot is not None:
            args, kwargs = _set(args, kwargs, spec.rotary, self._reordered(call, rot, self._reorder_rotary))
        for pos, name, ndim in spec.per_token:
            value = _get(args, kwargs, (pos, name))
            if isinstance(value, torch.Tensor) and value.dim() == ndim:
                args, kwargs = _set(args, kwargs, (pos, name),
                                    self._reordered(call, value, lambda t: t.index_select(1, call.src)))
        return args, kwargs

    @staticmethod
    def _reordered(call: _Call, value, make):
        hit = call.cache.get(id(value))
        if hit is None or hit[0] is not value:
            hit = (value, make(value))
            call.cache[id(value)] = hit
        return hit[1]

    def _reorder_rotary(self, rot):
        call, spec = self._call, self.spec
        offset = call.original.text_len if spec.rotary_text_first else 0
        d = spec.rotary_dim

        def one(t):
            video = t.narrow(d, offset, t.shape[d] - offset).index_select(d, call.src)
            return torch.cat([t.narrow(d, 0, offset), video], dim=d) if offset else video

        return tuple(one(t) for t in rot)

    def _after_last(self, module, args, output):
        call = self._call
        if call is None:
            return None
        self._call = None
        self.run.layout = call.original
        idx = self.spec.output_hidden
        if idx is None:
            return output.index_select(1, call.back)
        out = list(output)
        out[idx] = out[idx].index_select(1, call.back)
        return tuple(out)
