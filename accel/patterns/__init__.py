"""Static sparse attention patterns: exact token rules and analytic block layouts.

One module per pattern -- :mod:`~accel.patterns.radial`, :mod:`~accel.patterns.clear_local`,
:mod:`~accel.patterns.neighborhood` -- each with a rule class (validated parameters + the exact
token predicate), a brute-force token mask (tests) and a cached block-layout builder (production);
:mod:`~accel.patterns.blocks` holds the shared analytic builder and :mod:`~accel.patterns.tiling`
the tiled token orders. Each pattern module can be run (``python -m accel.patterns.radial``) to
draw a small mask.
"""

from .blocks import GridRule, block_kind_counts, build_grid_layout, lru_memo
from .clear_local import ClearLocalRule, build_clear_local_layout, clear_local_token_mask
from .neighborhood import (
    NeighborhoodRule,
    build_neighborhood_layout,
    neighborhood_axis_bounds,
    neighborhood_token_mask,
)
from .radial import RadialRule, build_radial_layout, radial_half_widths, radial_token_mask
from .tiling import choose_tile, grid_coords, inverse_permutation, tile_order

__all__ = [
    "ClearLocalRule",
    "GridRule",
    "NeighborhoodRule",
    "RadialRule",
    "block_kind_counts",
    "build_clear_local_layout",
    "build_grid_layout",
    "build_neighborhood_layout",
    "build_radial_layout",
    "choose_tile",
    "clear_local_token_mask",
    "grid_coords",
    "inverse_permutation",
    "lru_memo",
    "neighborhood_axis_bounds",
    "neighborhood_token_mask",
    "radial_half_widths",
    "radial_token_mask",
    "tile_order",
]
