"""A cost model of the block-sparse kernel: predicted time of one call from its visited blocks.

``time = heads * batch * (full * full_ns + counted * full_ns + partial * partial_ns) + call_ms``

where ``full`` / ``partial`` are visited 128 x 128 blocks of the two kinds of
:class:`~accel.kernels.BlockLayout` and ``counted`` are blocks whose keys are limited by a valid-key
count (padding of a tile-aligned layout, :mod:`accel.patterns.tiled`), costed as full blocks: they
need no per-token mask, only the bounds test a ragged last block already pays. That last point is an
assumption until a GPU run measures it.

The constants are a least-squares fit over one H200 run (torch 2.11, Triton 3.6, bf16, head dim
128): ``benchmarks/cost_model_fit.py`` reads the method-call times of
``benchmarks/results/patterns_gpu_h200.log`` and the block counts of
``benchmarks/results/patterns_cpu.json`` and writes ``benchmarks/results/cost_model_h200.json``.
On the HunyuanVideo cases (six configurations, residuals <= 4.1 ms) it gives full 19.0 ns and
partial 45.8 ns per block and head, and 16.9 ms per call (mostly the text path: separate text
launches, an fp32 log-sum-exp merge, concatenation and gathers; see shared notes gpu-h200.md). The
Wan cases fit worse (one outlier configuration, residual 24.8 ms), so :data:`H200` uses the
HunyuanVideo fit. Dense SDPA costs 15.0 ns per block and head on the same run.
"""

from __future__ import annotations

import dataclasses

__all__ = ["KernelCostModel", "H200"]


@dataclasses.dataclass(frozen=True)
class KernelCostModel:
    """Per-block costs of the kernel on one device (see the module docstring).

    Attributes:
        full_ns: nanoseconds per visited full block (128 x 128) per head.
        partial_ns: nanoseconds per visited partial block per head.
        call_ms: fixed milliseconds per method call (launches, text path, merges, gathers).
        dense_ns: dense SDPA's nanoseconds per block per head on the same device (for speedups).
        source: where the numbers come from.
    """

    full_ns: float
    partial_ns: float
    call_ms: float
    dense_ns: float
    source: str

    def block_ms(self, full: int, partial: int, counted: int = 0, *, heads: int = 1, batch: int = 1) -> float:
        """Milliseconds of the blocks alone (no per-call constant) for ``heads * batch`` heads."""
        if min(full, partial, counted) < 0 or heads < 1 or batch < 1:
            raise ValueError(f"block counts must be >= 0 and heads/batch >= 1, got full={full}, partial={partial}, "
                             f"counted={counted}, heads={heads}, batch={batch}")
        return heads * batch * ((full + counted) * self.full_ns + partial * self.partial_ns) * 1e-6

    def call_ms_for(self, full: int, partial: int, counted: int = 0, *, heads: int = 1, batch: int = 1) -> float:
        """Predicted milliseconds of one call: :meth:`block_ms` plus :attr:`call_ms`."""
        return self.block_ms(full, partial, counted, heads=heads, batch=batch) + self.call_ms

    def dense_ms(self, blocks: int, *, heads: int = 1, batch: int = 1) -> float:
        """Dense SDPA's milliseconds for ``blocks`` block pairs (``ceil(S / 128) ** 2``)."""
        return heads * batch * blocks * self.dense_ns * 1e-6


#: the fit of benchmarks/results/cost_model_h200.json, HunyuanVideo cases (block size 128, head dim 128, bf16)
H200 = KernelCostModel(
    full_ns=19.0, partial_ns=45.8, call_ms=16.9, dense_ns=15.0,
    source="least-squares fit over the HunyuanVideo cases of benchmarks/results/patterns_gpu_h200.log "
           "(benchmarks/cost_model_fit.py -> benchmarks/results/cost_model_h200.json)",
)
