"""accel methods under diffusers' context parallelism (one video split over several GPUs).

diffusers (``ContextParallelConfig``, ``model.enable_parallelism``) splits the token sequence of a
transformer over the ranks of a context-parallel group: the model's ``_cp_plan`` hooks give each
rank a contiguous share of the video tokens (and, for FLUX and HunyuanVideo, of the text tokens),
and every attention call re-distributes the shares inside diffusers' attention dispatcher.

**Ulysses** (``ContextParallelConfig(ulysses_degree=N)``). An all-to-all turns each rank's
``[B, S/N, H, D]`` queries, keys and values into ``[B, S, H/N, D]``: the whole sequence for a share
of the heads. Every accel method is per head, so it runs unchanged there, with the *global* token
layout (the root hook reads the grid from the unsplit inputs). accel hands diffusers' own template
(``_templated_context_parallel_attention``, the engine behind every CP-capable diffusers backend) a
forward op that runs the method; the all-to-alls before and after are diffusers'. Layers and steps
that the schedule keeps dense run the upstream processor, i.e. diffusers' Ulysses with the
processor's attention backend.

Token order after the all-to-all: rank ``r``'s local sequence is the processor's joint sequence
built from its shares, e.g. ``[text_r, image_r]`` for FLUX (text first) or ``[video_r, text_r]`` for
HunyuanVideo (text last); the all-to-all concatenates them by rank, ``[text_0, image_0, text_1,
image_1, ...]``. :func:`gathered_positions` maps that order to the layout's sequence order and the
forward op permutes q/k/v into it (and the output back); with no text (Wan) the order is already the
layout's and nothing is copied. Radial attention's release keeps the same global order by running
separate all-to-alls for the video and the text parts (github.com/mit-han-lab/radial-attention,
``radial_attn/models/hunyuan/attention.py``, read 2026-12): a block pattern over an interleaved
order would be a different pattern.

**Ring** (``ring_degree > 1``, alone or with Ulysses). Each rank keeps its own query share and meets
the keys one rank's share at a time, merging partial results by log-sum-exp. accel's block layouts
are built over the whole sequence; the shares end at token offsets that are not block boundaries at
real sizes (Wan 480p: 32,760 tokens, 16,380 per rank on 2 GPUs, not a multiple of 128) and, with
text, each share is two separate spans of the sequence, so the methods would need layouts cut at
arbitrary token ranges. accel refuses ring attention with a message naming Ulysses (:func:`check_ulysses`),
at :func:`accel.apply` or at the first transformer call when parallelism was enabled afterwards.

Token order and reordering modes: the positions are those of the sequence the layout describes, in
the order diffusers' split hooks receive it. A mode that reorders the tokens once per forward (e.g.
tiles of neighbouring tokens made contiguous) composes with this as long as it reorders before
diffusers' split (each rank's share is then a contiguous range of the reordered sequence) and the
layout describes that order (``TokenLayout.permutation``).

Other limits: attention controllers (editing) are not supported under context parallelism (refused
at the call); the backward pass is not implemented (inference only).
"""

from __future__ import annotations

import torch

from accel.grid import HEAD_GROUP_KEY, TokenLayout
from accel.processors.upstream import DISPATCH_SETTINGS, ContextParallelConfig, templated_context_parallel_attention

__all__ = [
    "context_parallel_config",
    "check_ulysses",
    "chunk_sizes",
    "gathered_positions",
    "ulysses_method_attention",
    "adopt_parallel_config",
    "carry_dispatch_settings",
    "check_same_inputs",
    "RING_REFUSAL",
]

RING_REFUSAL = (
    "accel attention methods do not run under diffusers' ring attention ({what}): their block layouts "
    "cover the whole token sequence, which ring attention never holds on one GPU. Use Ulysses instead, "
    "ContextParallelConfig(ulysses_degree=N) (N GPUs per video; the model's head count must be divisible "
    "by N)"
)


def context_parallel_config(model: torch.nn.Module):
    """The ``ContextParallelConfig`` of a transformer on which diffusers' context parallelism is
    enabled (``enable_parallelism`` or ``from_pretrained(parallel_config=...)``), else ``None``."""
    config = getattr(model, "_parallel_config", None)
    if config is None:
        return None
    if isinstance(config, ContextParallelConfig):
        return config
    return getattr(config, "context_parallel_config", None)


def check_ulysses(model: torch.nn.Module, cp) -> None:
    """Raise unless accel methods can run under ``cp`` (the model's ``ContextParallelConfig``).

    Raises:
        ValueError: ring attention (``ring_degree > 1``), or a head count that Ulysses cannot split
            (``num_attention_heads`` not divisible by ``ulysses_degree`` without ``ulysses_anything``).
    """
    name = type(model).__name__
    if cp.ring_degree > 1:
        what = f"ring_degree={cp.ring_degree}, ulysses_degree={cp.ulysses_degree} on {name}"
        raise ValueError(RING_REFUSAL.format(what=what))
    heads = getattr(getattr(model, "config", None), "num_attention_heads", None)
    if isinstance(heads, int) and heads % cp.ulysses_degree and not cp.ulysses_anything:
        raise ValueError(
            f"{name} has {heads} attention heads, which ulysses_degree={cp.ulysses_degree} does not divide; "
            f"use a degree dividing {heads} or ContextParallelConfig(..., ulysses_anything=True)"
        )


def chunk_sizes(n: int, world: int, uneven: bool) -> list[int]:
    """Token counts of the ``world`` shares diffusers cuts a span of ``n`` tokens into.

    ``uneven=False`` (diffusers' default sharder, ``tensor.chunk``): ``n`` must be divisible by
    ``world``; ``uneven=True`` (``ulysses_anything``, ``tensor.tensor_split``): the first ``n % world``
    shares hold one token more.
    """
    if not uneven:
        if n % world:
            raise ValueError(
                f"a span of {n} tokens cannot be split evenly over {world} context-parallel ranks; choose a "
                "size whose token count is divisible by the degree, or use ulysses_anything=True"
            )
        return [n // world] * world
    return [n // world + (1 if r < n % world else 0) for r in range(world)]


def gathered_positions(tokens: TokenLayout, world: int, uneven: bool, device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(positions, order)``, int64 ``[S]`` each: ``positions[g]`` is the position, in the sequence that
    ``tokens`` describes, of the all-to-all's output token ``g``; ``order = argsort(positions)``.

    The output order is rank 0's local joint sequence, then rank 1's, ...; rank ``r``'s is its share of
    the text and its share of the video tokens, on the layout's text side. Cached on ``tokens``.
    """
    key = ("cp_positions", world, uneven, str(device))
    cached = tokens.cache.get(key)
    if cached is not None:
        return cached
    text = chunk_sizes(tokens.text_len, world, uneven) if tokens.text_len else [0] * world
    video = chunk_sizes(tokens.num_video_tokens, world, uneven)
    parts, t_off, v_off = [], tokens.text_start, tokens.video_start
    for r in range(world):
        t = torch.arange(t_off, t_off + text[r])
        v = torch.arange(v_off, v_off + video[r])
        parts += [t, v] if tokens.text_side == "first" else [v, t]
        t_off += text[r]
        v_off += video[r]
    positions = torch.cat(parts).to(device)
    tokens.cache[key] = (positions, torch.argsort(positions))
    return tokens.cache[key]


class _MethodForwardOp:
    """The forward op diffusers' context-parallel template calls on the gathered q/k/v."""

    def __init__(self, run, positions: tuple[torch.Tensor, torch.Tensor] | None):
        self.run = run
        self.positions = positions

    def __call__(self, ctx, query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                 enable_gqa=False, return_lse=False, _save_ctx=True, _parallel_config=None):
        if return_lse:  # only ring attention asks for it, and ring is refused before
            raise NotImplementedError("accel methods under context parallelism do not return the log-sum-exp")
        if self.positions is None:
            return self.run(query, key, value)
        positions, order = self.positions
        query, key, value = (x.index_select(1, order) for x in (query, key, value))
        return self.run(query, key, value).index_select(1, positions)


def _no_backward(ctx, grad_out, *args, **kwargs):
    raise NotImplementedError("accel methods under diffusers' context parallelism run inference only (no backward)")


def ulysses_method_attention(run, query, key, value, tokens: TokenLayout, scale, parallel_config) -> torch.Tensor:
    """``run(q, k, v)`` (an accel method call on the whole sequence) inside diffusers' Ulysses attention.

    Args:
        run: ``(q, k, v) -> out`` on ``[B, S, H/N, D]`` tensors in the layout's sequence order.
        query, key, value: this rank's local ``[B, S/N, H, D]`` tensors (the processor's joint sequence).
        tokens: the global :class:`~accel.grid.TokenLayout` of the call.
        scale: softmax scale (passed through diffusers' template; ``run`` already carries it).
        parallel_config: the processor's ``_parallel_config`` (a diffusers ``ParallelConfig``).

    Raises:
        ValueError: ring attention, or a local sequence that is not this rank's share of the layout.
    """
    cp = parallel_config.context_parallel_config
    if cp.ring_degree > 1:
        raise ValueError(RING_REFUSAL.format(what=f"ring_degree={cp.ring_degree}"))
    world, uneven = cp.ulysses_degree, bool(cp.ulysses_anything)
    rank = torch.distributed.get_rank(cp._ulysses_mesh.get_group())
    text = chunk_sizes(tokens.text_len, world, uneven)[rank] if tokens.text_len else 0
    expected = text + chunk_sizes(tokens.num_video_tokens, world, uneven)[rank]
    if query.shape[1] != expected:
        raise ValueError(
            f"context-parallel rank {rank} of {world} holds {query.shape[1]} tokens but its share of the token "
            f"layout (grid {tokens.grid}, text_len {tokens.text_len}) is {expected}: accel supports diffusers' "
            "own context-parallel plans (Wan, FLUX) and accel's HunyuanVideo plan "
            "(accel.processors.enable_context_parallel)"
        )
    # methods whose rule reads every head (Agent's merge metric) gather this rank's heads over the group
    tokens.cache[HEAD_GROUP_KEY] = cp._ulysses_mesh.get_group() if world > 1 else None
    positions = None
    if tokens.text_len and world > 1:
        positions = gathered_positions(tokens, world, uneven, query.device)
    return templated_context_parallel_attention(
        query, key, value, None, 0.0, False, scale, False, False,
        forward_op=_MethodForwardOp(run, positions), backward_op=_no_backward, _parallel_config=parallel_config,
    )


def adopt_parallel_config(model: torch.nn.Module, modules) -> None:
    """Give every processor of ``modules`` that keeps a ``_parallel_config`` the model's own, as
    ``enable_parallelism`` does for the processors it finds (processors installed afterwards would
    otherwise attend to their rank's share of the sequence only)."""
    config = getattr(model, "_parallel_config", None)
    if context_parallel_config(model) is None:
        return
    for module in modules:
        processor = getattr(module, "processor", None)
        if hasattr(processor, "_parallel_config") and processor._parallel_config is not config:
            processor._parallel_config = config



def carry_dispatch_settings(source, target) -> None:
    """Copy the attention backend and parallel config of processor ``source`` to processor ``target``
    (each attribute only where both processors keep it), so that replacing a processor changes neither
    the backend nor the context parallelism of the calls it passes on to diffusers."""
    for name in DISPATCH_SETTINGS:
        if hasattr(source, name) and hasattr(target, name):
            setattr(target, name, getattr(source, name))


def check_same_inputs(cp, hidden_states: torch.Tensor) -> None:
    """Raise unless every rank of the context-parallel group passed the same ``hidden_states``.

    diffusers splits the transformer's inputs assuming every rank holds the same ones (the same noise:
    the same seed on every rank); ranks drawing different noise would each keep a share of a different
    video, and the gathered output would silently mix them. One all-reduce of a 3-number fingerprint
    (sum, sum of squares, max |x|) per transformer call, eager mode only.

    Raises:
        ValueError: the fingerprints differ between ranks.
    """
    x = hidden_states.detach().float()
    fingerprint = torch.stack((x.sum(), x.square().sum(), x.abs().amax()))
    both = torch.cat((fingerprint, -fingerprint))
    torch.distributed.all_reduce(both, op=torch.distributed.ReduceOp.MAX, group=cp._flattened_mesh.get_group())
    if not torch.equal(both[:3], -both[3:]):
        raise ValueError(
            "the ranks of a context-parallel group called the transformer with different inputs; every rank must "
            "run the same pipeline call with the same seed (e.g. generator=torch.Generator('cpu').manual_seed(s) "
            "on every rank)"
        )
