"""`Dense`: full softmax attention through accel's block-sparse kernels with a full layout."""

from __future__ import annotations

import dataclasses

from accel.kernels import validate_block_size
from accel.methods.base import AttentionMethod

__all__ = ["Dense"]


@dataclasses.dataclass(frozen=True, eq=False)
class Dense(AttentionMethod):
    """Dense attention: every query attends every valid key (padded text keys excluded).

    The baseline method: installed with :func:`accel.apply`, a model's output equals upstream
    diffusers' (bit-exact on CPU without a text mask, where the reference backend calls the same
    SDPA as diffusers' native backend; within floating-point tolerance otherwise).

    Args:
        block_size: query and key block size of the full layout, a power of two >= 16 (default 128).
            Only affects speed and rounding, never which pairs are attended.
        backend: kernel backend, keyword-only: ``"auto"`` (default), ``"triton"``, ``"flex"`` or
            ``"reference"`` (see :func:`accel.kernels.block_sparse_attention`).

    Example::

        out = accel.Dense()(q, k, v, accel.TokenLayout(grid=(1, 64, 64), text_len=512, text_side="first"))
    """

    block_size: int = 128

    def __post_init__(self) -> None:
        validate_block_size("block_size", self.block_size)
        super().__post_init__()
