"""Executed attention density per (step, layer), recorded from the calls a model actually makes.

:class:`DensityRecorder` attaches to a model on which :func:`accel.apply` installed a method. It
lives on that model (a ``recorder`` attribute of the transformer's :class:`~accel.processors.state.RunState`
and PyTorch forward hooks on its bound self-attention modules) -- no global state, so two pipelines
in one process record independently. Per self-attention call it records the step, the layer and:

* a **routed** call (the accel method ran; reported by :func:`accel.processors.base.route_attention`):
  the (query, key) pairs the method's kernel calls compute, from the very
  :class:`~accel.kernels.BlockLayout`\\ s its ``forward`` passes to
  :func:`accel.kernels.block_sparse_attention` (see :func:`kernel_layouts`; Rectified's selection is
  re-planned from the same q/k/v, which is deterministic), summed over the kernel calls of the
  attention call, per batch element and head (``BlockLayout.density`` averages the broadcast
  dimensions);
* a call the schedule keeps **dense** (upstream's processor ran): ``seq_len**2`` pairs.

``density = pairs / seq_len**2`` and ``flops = 4 * batch * heads * head_dim * pairs`` (the two
attention matmuls; softmax and projections not counted).

Eager mode only: under ``torch.compile`` the report in ``route_attention`` is skipped
(``torch.compiler.is_compiling()``), and the module hooks would be traced -- detach the recorder
before compiling.
"""

from __future__ import annotations

import math

import torch

from accel.grid import TokenLayout
from accel.kernels import BlockLayout
from accel.methods.agent import Agent, agent_grid
from accel.methods.base import AttentionMethod, _padded_full_layout
from accel.methods.rectified import Rectified
from accel.methods.static import StaticPatternMethod
from accel.processors.base import BINDING_ATTR
from accel.processors.state import get_root_hook

__all__ = ["DensityRecorder", "kernel_layouts", "kernel_pairs"]


def _text_layouts(method: AttentionMethod, layout: TokenLayout, batch: int, device, *, video_text: bool) -> list:
    """The text parts of the default text rule: video queries x text keys (if ``video_text``), text queries x all."""
    out = []
    if not layout.text_len:
        return out
    shape = method.block_shape()
    if video_text:
        out.append(_padded_full_layout(layout.num_video_positions, layout.text_len, layout.text_mask, batch, device, shape,
                                       allow_empty_rows=True))
    out.append(_padded_full_layout(layout.text_len, layout.seq_len, layout.key_padding_mask(), batch, device, shape))
    return out


def kernel_layouts(method: AttentionMethod, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: TokenLayout,
                   *, scale: float | None = None) -> list[BlockLayout]:
    """The block layouts ``method(q, k, v, layout)`` passes to the kernel, one per kernel call.

    Mirrors the ``forward`` of :class:`~accel.methods.base.AttentionMethod` (one joint call, or video x
    video + video x text + text x all), of static patterns (tile order), of
    :class:`~accel.methods.rectified.Rectified` (selected blocks of its plan) and of
    :class:`~accel.methods.agent.Agent` (merged tokens: agents x keys and merged queries x agents, or the
    fallback's merged queries x keys; pooled agents: agents x keys, video queries x agents). The test suite
    checks the equality against intercepted kernel calls for every method.
    """
    batch, heads, dev = q.shape[0], q.shape[2], q.device
    if isinstance(method, Agent) and method.formation == "tome":
        shape = method.block_shape()
        _, m, agent_groups, n_agents = method.merge_plan(v, layout)
        kv_len = m + layout.text_len
        valid = layout.text_mask
        if valid is not None:
            valid = torch.cat([torch.ones(valid.shape[0], m, dtype=torch.bool, device=valid.device), valid], 1)
        if agent_groups is None:
            calls = [_padded_full_layout(m, kv_len, valid, batch, dev, shape)]
        else:
            calls = [_padded_full_layout(n_agents, kv_len, valid, batch, dev, shape),
                     BlockLayout.full(m, n_agents, q_block=shape[0], kv_block=shape[1], device=dev)]
        return calls + _text_layouts(method, layout, batch, dev, video_text=False)
    if isinstance(method, Agent):
        n_agents = math.prod(agent_grid(49 if method.agents is None else method.agents, layout.grid))
        shape = method.block_shape()
        keys = _padded_full_layout(n_agents, layout.seq_len, layout.key_padding_mask(), batch, dev, shape)
        bcast = BlockLayout.full(layout.num_video_tokens, n_agents, q_block=shape[0], kv_block=shape[1], device=dev)
        return [keys, bcast] + _text_layouts(method, layout, batch, dev, video_text=False)
    if isinstance(method, Rectified):
        q, k, v, layout = method.on_curve(q, k, v, layout)
        plan = method.plan(q, k, v, layout, scale=scale)
        n, bs = layout.num_video_tokens, method.block_size
        video = BlockLayout.from_block_mask(plan.selected, bs, bs, n, n)
        return [video] + _text_layouts(method, layout, batch, dev, video_text=True)
    if isinstance(method, StaticPatternMethod) and layout.permutation is None:
        perm = method.tile_permutation(layout.grid)
        if perm is not None:
            layout = TokenLayout(layout.grid, layout.text_len, layout.text_side, layout.text_mask, perm)
    joint = method.build_block_layout(layout, batch=batch, heads=heads, device=dev)
    if joint is not None:
        return [joint]
    video = method.video_block_layout(layout, batch=batch, heads=heads, device=dev)
    return [video] + _text_layouts(method, layout, batch, dev, video_text=True)


def kernel_pairs(method: AttentionMethod, q, k, v, layout: TokenLayout, *, scale: float | None = None
                 ) -> tuple[float, int]:
    """``(pairs, calls)``: (query, key) pairs computed per batch element and head by ``method`` on this
    call, summed over its kernel calls, and the number of kernel calls."""
    key = ("accel.eval.kernel_pairs", id(method), q.shape[0], q.shape[2], str(q.device))
    if not isinstance(method, Rectified) and key in layout.cache:  # static per TokenLayout (shared by layers)
        return layout.cache[key]
    lays = kernel_layouts(method, q, k, v, layout, scale=scale)
    result = (sum(lay.density() * lay.q_len * lay.kv_len for lay in lays), len(lays))
    if not isinstance(method, Rectified):
        layout.cache[key] = result
    return result


class DensityRecorder:
    """Records the executed density of every self-attention call of the models it is attached to.

    Attributes:
        records: list of dicts ``{"step", "layer", "name", "kind" ("sparse" | "dense"), "method",
            "grid", "seq_len", "pairs", "density", "flops", "kernel_calls"}``, in call order.

    Use::

        handle = accel.apply(pipe, method)
        rec = DensityRecorder().attach(handle)
        pipe(...)
        rec.detach()
        rec.per_layer_step()      # {(step, layer): mean density}
    """

    def __init__(self) -> None:
        self.records: list[dict] = []
        self._runs = []
        self._hooks = []
        self._current: dict | None = None

    def attach(self, target) -> DensityRecorder:
        """Attach to an :class:`~accel.processors.apply.AccelHandle` (all its transformers) or to one
        transformer carrying an accel root hook. Returns ``self``.

        Raises:
            ValueError: ``target`` has no accel installation.
        """
        transformers = getattr(target, "transformers", None) or [target]
        for t in transformers:
            hook = get_root_hook(t) if isinstance(t, torch.nn.Module) else None
            if hook is None:
                raise ValueError(f"DensityRecorder.attach: {type(t).__name__} has no accel installation; "
                                 "call accel.apply(...) first and pass its handle")
            hook.run.recorder = self
            self._runs.append(hook.run)
            for module in t.modules():
                if getattr(module, BINDING_ATTR, None) is not None:
                    self._hooks.append(module.register_forward_pre_hook(self._pre, with_kwargs=True))
                    self._hooks.append(module.register_forward_hook(self._post))
        return self

    def detach(self) -> None:
        """Remove the hooks and the ``recorder`` attributes (the records stay)."""
        for h in self._hooks:
            h.remove()
        for run in self._runs:
            if getattr(run, "recorder", None) is self:
                run.recorder = None
        self._hooks, self._runs = [], []

    def clear(self) -> None:
        """Forget the records."""
        self.records = []

    # ------------------------------------------------------------------ hooks
    def _pre(self, module, args, kwargs):
        hidden = args[0] if args else kwargs.get("hidden_states")
        self._current = {"module": module, "reported": False, "hidden": tuple(hidden.shape) if hidden is not None else None}

    def _post(self, module, args, output):
        cur, self._current = self._current, None
        if cur is None or cur["reported"] or cur["module"] is not module:
            return
        binding = getattr(module, BINDING_ATTR)
        layout = binding.run.layout
        s = layout.seq_len if layout is not None else (cur["hidden"][1] if cur["hidden"] else 0)
        batch = cur["hidden"][0] if cur["hidden"] else 1
        heads = int(getattr(module, "heads", 1))
        head_dim = int(getattr(module, "inner_dim", heads)) // heads
        grid = layout.grid if layout is not None else None
        self._add(binding, "dense", "upstream", grid, s, float(s) * s, 1, batch, heads, head_dim)

    def record_call(self, binding, method: AttentionMethod, q, k, v, layout: TokenLayout, scale) -> None:
        """Called by ``route_attention`` after an accel method ran (eager mode only)."""
        pairs, calls = kernel_pairs(method, q, k, v, layout, scale=scale)
        self._add(binding, "sparse", type(method).__name__, layout.grid, layout.seq_len, pairs, calls, q.shape[0], q.shape[2],
                  q.shape[3])
        if self._current is not None:
            self._current["reported"] = True

    def _add(self, binding, kind, method, grid, s, pairs, calls, batch, heads, head_dim) -> None:
        self.records.append({
            "step": binding.run.counter.step, "layer": binding.layer, "name": binding.name, "kind": kind,
            "method": method, "grid": list(grid) if grid is not None else None,
            "seq_len": s, "pairs": pairs, "density": pairs / (s * s) if s else 0.0,
            "flops": 4.0 * batch * heads * head_dim * pairs, "kernel_calls": calls,
        })

    # ------------------------------------------------------------------ summaries
    def per_layer_step(self) -> dict[tuple[int, int], float]:
        """``{(step, layer): mean density}`` over the calls of that step and layer (CFG calls included)."""
        acc: dict[tuple[int, int], list[float]] = {}
        for r in self.records:
            acc.setdefault((r["step"], r["layer"]), []).append(r["density"])
        return {key: sum(v) / len(v) for key, v in acc.items()}

    def mean_density(self) -> float | None:
        """Pair-weighted mean density over all recorded calls (``sum pairs / sum seq_len**2``)."""
        total = sum(r["seq_len"] ** 2 for r in self.records)
        return sum(r["pairs"] for r in self.records) / total if total else None

    def total_flops(self) -> float:
        """Attention matmul FLOPs of all recorded calls."""
        return sum(r["flops"] for r in self.records)
