"""Static sparse attention patterns: exact token rules and analytic block layouts.

One module per pattern -- :mod:`~accel.patterns.radial`, :mod:`~accel.patterns.clear_local`,
:mod:`~accel.patterns.neighborhood` -- each with a rule class (validated parameters + the exact
token predicate), a brute-force token mask (tests) and a cached block-layout builder (production);
:mod:`~accel.patterns.blocks` holds the shared analytic builder and :mod:`~accel.patterns.tiling`
the tiled token orders. Each pattern module can be run (``python -m accel.patterns.radial``) to
draw a small mask (:mod:`~accel.patterns.draw`).

The names below are imported on first use, so that ``python -m accel.patterns.radial`` runs the
module once (as ``__main__``), not after an import by this package.
"""

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
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

# public name -> submodule that defines it
_EXPORTS = {
    "GridRule": "blocks",
    "block_kind_counts": "blocks",
    "build_grid_layout": "blocks",
    "lru_memo": "blocks",
    "ClearLocalRule": "clear_local",
    "build_clear_local_layout": "clear_local",
    "clear_local_token_mask": "clear_local",
    "NeighborhoodRule": "neighborhood",
    "build_neighborhood_layout": "neighborhood",
    "neighborhood_axis_bounds": "neighborhood",
    "neighborhood_token_mask": "neighborhood",
    "RadialRule": "radial",
    "build_radial_layout": "radial",
    "radial_half_widths": "radial",
    "radial_token_mask": "radial",
    "choose_tile": "tiling",
    "grid_coords": "tiling",
    "inverse_permutation": "tiling",
    "tile_order": "tiling",
}

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


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
