"""Block-sparse attention: the layout type, the Triton kernel, the FlexAttention and reference
backends, and the LSE merge. Importable with torch (and triton) alone, without diffusers."""

from .attention import (
    AUTO_FLEX_MIN_PAIRS,
    BACKENDS,
    MAX_HEAD_DIM,
    apply_block_affine,
    backends_used,
    block_sparse_attention,
    resolve_backend,
)
from .block_layout import PARTIAL_KINDS, BlockLayout, validate_block_size
from .flex import to_flex_block_mask
from .mask_kinds import EllipsoidPredicate, WindowPredicate, ellipsoid_form
from .merge import merge_attention

__all__ = [
    "AUTO_FLEX_MIN_PAIRS",
    "BACKENDS",
    "MAX_HEAD_DIM",
    "BlockLayout",
    "EllipsoidPredicate",
    "PARTIAL_KINDS",
    "WindowPredicate",
    "apply_block_affine",
    "backends_used",
    "block_sparse_attention",
    "ellipsoid_form",
    "merge_attention",
    "resolve_backend",
    "to_flex_block_mask",
    "validate_block_size",
]
