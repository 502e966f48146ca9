"""Text drawings of attention masks and block layouts.

Run ``python -m accel.patterns.draw PATTERN [options]`` (PATTERN: ``neighborhood``, ``clear_local``,
``radial``), or the pattern's own module (``python -m accel.patterns.radial [options]``), to print the
token mask of one query (``--query``), the whole token mask (small grids) and the block map of the
production layout (``#`` full, ``+`` partial, ``.`` skipped: :meth:`accel.kernels.BlockLayout.draw`), e.g.::

    python -m accel.patterns.neighborhood --grid 1 8 12 --window -1 3 5 --stride 1 1 2 --tile 1 4 4
    python -m accel.patterns.clear_local --grid 1 9 9 --radius 3 --query 40
    python -m accel.patterns.radial --grid 12 8 8 --decay 0.5 --block 16 --sink
"""

from __future__ import annotations

import argparse
import sys

import torch

__all__ = ["draw_mask", "main", "PATTERNS"]

#: the patterns this module draws (each also runs as ``python -m accel.patterns.<name>``)
PATTERNS = ("neighborhood", "clear_local", "radial")


def draw_mask(mask: torch.Tensor, *, on: str = "#", off: str = ".") -> str:
    """Render a bool ``[Q, K]`` mask as text: one line per query, one character per key."""
    m = mask.reshape(mask.shape[-2], mask.shape[-1]).cpu()
    return "\n".join("".join(on if bool(v) else off for v in row) for row in m)


def main(argv=None, *, pattern: str | None = None) -> int:
    """Command line: draw one pattern (see the module docstring).

    Args:
        argv: the arguments (default ``sys.argv[1:]``): the pattern name first unless ``pattern`` is given.
        pattern: the pattern to draw (one of :data:`PATTERNS`), as ``python -m accel.patterns.<name>`` passes it.
    """
    from .blocks import build_grid_layout
    from .clear_local import ClearLocalRule
    from .neighborhood import NeighborhoodRule
    from .radial import RadialRule, build_radial_layout
    from .tiling import grid_coords, tile_order

    prog = "python -m accel.patterns." + (pattern or "draw")
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    if pattern is None:
        p.add_argument("pattern", choices=PATTERNS)
    p.add_argument("--grid", type=int, nargs=3, default=None, metavar=("T", "H", "W"))
    p.add_argument("--window", type=int, nargs=3, default=[-1, 3, 3], metavar=("wT", "wH", "wW"))
    p.add_argument("--stride", type=int, nargs=3, default=[1, 1, 1])
    p.add_argument("--dilation", type=int, nargs=3, default=[1, 1, 1])
    p.add_argument("--causal", type=int, nargs=3, default=[0, 0, 0], help="0/1 per axis")
    p.add_argument("--radius", type=float, default=2.5)
    p.add_argument("--radius-t", type=float, default=None)
    p.add_argument("--decay", type=float, default=0.5)
    p.add_argument("--sink", action="store_true")
    p.add_argument("--granularity", choices=["token", "block", "cover"], default=None,
                   help="token (exact rule), block (radial only: the release's block selection; the default "
                        "there) or cover (every block holding an allowed pair)")
    p.add_argument("--block", type=int, default=16, help="block size of the drawn layout (default 16)")
    p.add_argument("--tile", type=int, nargs=3, default=None, help="draw the layout in this tile order")
    p.add_argument("--query", type=int, default=None, help="draw the neighbourhood of this row-major query")
    a = p.parse_args(argv)
    if pattern is not None:
        if pattern not in PATTERNS:
            raise ValueError(f"pattern must be one of {PATTERNS}, got {pattern!r}")
        a.pattern = pattern
    if a.pattern == "neighborhood":
        grid = tuple(a.grid or (1, 6, 8))
        rule = NeighborhoodRule(grid, tuple(a.window), tuple(a.stride), tuple(a.dilation),
                                tuple(bool(c) for c in a.causal))
    elif a.pattern == "clear_local":
        grid = tuple(a.grid or (1, 7, 7))
        rule = ClearLocalRule(grid, a.radius, a.radius_t)
    else:
        grid = tuple(a.grid or (12, 8, 8))
        rule = RadialRule(grid, a.decay, a.block, a.sink)
    granularity = a.granularity or ("block" if a.pattern == "radial" else "token")
    t, h, w = grid
    n = t * h * w
    mask = rule.token_mask(grid_coords(grid))
    print(f"{rule!r}")
    if a.query is not None:
        print(f"keys of query {a.query} (frames stacked top to bottom):")
        print(draw_mask(mask[a.query].reshape(t * h, w)))
    elif n <= 160:
        print("token mask (row-major; rows = queries, columns = keys):")
        print(draw_mask(mask))
    coords = grid_coords(grid)
    if a.tile is not None:
        coords = coords[tile_order(rule.rule_coords(coords), tuple(a.tile))]
    if a.pattern == "radial" and a.tile is None:
        layout = build_radial_layout(rule, granularity=granularity)
    else:
        layout = build_grid_layout(rule, coords, a.block, a.block,
                                   granularity="block" if granularity in ("block", "cover") else "token")
    order = f"tiles of {tuple(a.tile)}" if a.tile else "row-major"
    print(f"block map ({order}, blocks of {a.block}; # full, + partial, . skipped), density {layout.density():.3f}:")
    print(layout.draw())
    return 0


if __name__ == "__main__":
    sys.exit(main())
