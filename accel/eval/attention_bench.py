"""Attention-level benchmark: every method at matched densities on structured synthetic Q/K/V.

No model: :func:`accel.eval.synthetic.synthetic_qkv` gives queries, keys and values on a real
(T, H, W) grid (e.g. HunyuanVideo 720p 129 frames: 33 x 45 x 80 = 118,800 tokens). For each method
and target density (:func:`accel.eval.matching.method_at_density`) the benchmark reports, over a
set of query rows:

* ``rel_l2_error``: ``||O_method - O_dense||_F / ||O_dense||_F`` over the evaluated rows and all heads;
* ``recall``: attention-mass recall, the mean over evaluated rows and heads of ``sum_{j allowed}
  P_dense[i, j]`` -- the share of the dense softmax mass on the keys the method computes exactly
  (``None`` for Agent, which is not a masked softmax);
* ``density``: the executed video x video density of the layout (Rectified: of its selected blocks);
* the visited blocks by kind (full, limited to a border tile's real keys, partial) and the kernel time they
  predict per head on the H200 (:func:`block_figures`, :mod:`accel.kernels.cost`).

Rows. With ``rows=None`` every query row is evaluated; otherwise ``rows`` query rows are sampled
uniformly without replacement (seeded) and the report says so. Each row's output is computed
exactly as the method defines it (masked softmax over the keys of its layout's row for block-sparse
methods; Rectified's rectification from its pooled plan; Agent's two softmaxes), in chunks of rows,
never an S x S tensor; tests check these row outputs against the methods' own forward at small sizes.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch

from accel.eval.matching import (
    METHOD_NAMES,
    TILE_VARIANTS,
    check_method_names,
    command_line_names,
    method_at_density,
    method_names_from_command_line,
    reached,
)
from accel.eval.rundir import open_run_dir
from accel.eval.synthetic import synthetic_qkv
from accel.grid import TokenLayout
from accel.kernels import BlockLayout
from accel.kernels.cost import H200
from accel.methods.agent import Agent
from accel.methods.dense import Dense
from accel.methods.rectified import Rectified, top_k_blocks

__all__ = ["SIZES", "layout_row_mask", "method_rows", "dense_rows", "evaluate_method", "block_figures", "run", "main"]

# name -> (T, H, W) latent token grid
SIZES = {
    "hunyuan_720p": (33, 45, 80),  # HunyuanVideo 1280x720, 129 frames (4x temporal, 8x spatial VAE, patch 2)
    "wan_720p": (21, 45, 80),  # Wan 2.1 1280x720, 81 frames
    "wan_480p": (21, 30, 52),  # Wan 2.1 832x480, 81 frames
    "small": (4, 12, 16),
}
_CHUNK = 64


def layout_row_mask(layout: BlockLayout, rows: torch.Tensor, head: int = 0, batch: int = 0) -> torch.Tensor:
    """bool ``[R, kv_len]``: the keys query row ``rows[r]`` visits (full blocks, and partial blocks'
    tile rows), for one batch element and head of ``layout``. Never materialises ``q_len x kv_len``."""
    kinds = layout.block_kinds()
    tmap = layout.tile_map()
    kinds = kinds[min(batch, kinds.shape[0] - 1), min(head, kinds.shape[1] - 1)]
    tmap = tmap[min(batch, tmap.shape[0] - 1), min(head, tmap.shape[1] - 1)]
    qb, off = rows // layout.q_block, rows % layout.q_block
    k_rows, t_rows = kinds[qb], tmap[qb].long()  # [R, NKV]
    part = layout.tiles[t_rows.clamp_min(0), off[:, None]]  # [R, NKV, kv_block]
    mask = ((k_rows == 1)[..., None] | (part & (k_rows == 2)[..., None]))
    return mask.reshape(len(rows), -1)[:, : layout.kv_len]


def _softmax_rows(scores: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    p = torch.softmax(scores, dim=-1)
    return torch.nan_to_num(p, nan=0.0)  # rows without any allowed key: output 0


class _Rows:
    """Per-method row evaluator: ``out(h, rows)`` and ``mask(h, rows)`` (``None`` = not a masked softmax)."""

    def __init__(self, method, q, k, v, grid, scale):
        self.method, self.q, self.k, self.v, self.grid, self.scale = method, q, k, v, grid, scale
        self.layout = TokenLayout(tuple(grid))
        self.perm = self.inv = None
        self.block_layout = None
        self.plan = self.rectification = None
        self.agents = self.v_agents = None
        self.density = 1.0
        if isinstance(method, Dense):
            return
        if isinstance(method, Rectified):
            qc, kc, vc, curve = method.on_curve(q, k, v, self.layout)  # blocks along the method's token order
            self.plan = method.plan(qc, kc, vc, curve, scale=scale)
            self.rectification = method.rectification(self.plan)  # (R [1, H, NB], C [1, H, NB, D]) or None
            n = self.layout.num_video_tokens
            bs = method.block_size
            self.density = BlockLayout.from_block_mask(self.plan.selected, bs, bs, n, n).density()
            if curve.permutation is not None:  # perm[position] = row-major index; inv: the reverse
                self.perm = curve.permutation.cpu()
                self.inv = torch.empty_like(self.perm)
                self.inv[self.perm] = torch.arange(len(self.perm))
            return
        if isinstance(method, Agent):
            if method.formation != "pool":
                raise ValueError("the attention benchmark evaluates Agent(formation='pool') (pooled agents); "
                                 f"got formation={method.formation!r}")
            self.agents = method.agent_tokens(q, self.layout)  # [1, n, H, D]
            n_agents = self.agents.shape[1]
            self.density = min(1.0, 2 * n_agents / self.layout.num_video_tokens)
            self.v_agents = self._aggregate()
            return
        perm = method.tile_permutation(tuple(grid))
        tl = TokenLayout(tuple(grid), permutation=perm)
        self.block_layout = method.video_block_layout(tl, batch=1, heads=1, device=q.device)
        self.density = method.describe(tuple(grid), file=None, compare_rowmajor=False)["video_density"]  # real tokens
        if perm is not None:  # the method's order, possibly padded (-1 = padding position)
            real = perm >= 0
            self.perm = perm[real]  # token at each real position, in position order
            self.real_pos = torch.nonzero(real)[:, 0]
            self.inv = torch.empty(self.layout.num_video_tokens, dtype=torch.int64)
            self.inv[self.perm] = self.real_pos

    def _aggregate(self) -> torch.Tensor:
        """Agent's ``V_A = softmax(s A K^T) V`` per head, ``[H, n, D]``, in chunks of agents."""
        a, k, v = self.agents[0].float(), self.k[0], self.v[0]
        out = []
        for h in range(a.shape[1]):
            parts = [_softmax_rows(self.scale * a[i:i + _CHUNK, h] @ k[:, h].T, None) @ v[:, h]
                     for i in range(0, a.shape[0], _CHUNK)]
            out.append(torch.cat(parts))
        return torch.stack(out)

    def _positions(self, rows: torch.Tensor) -> torch.Tensor:
        """Sequence positions of row-major token indices in the order Rectified's blocks are cut in."""
        return rows if self.perm is None else self.inv[rows]

    def mask(self, h: int, rows: torch.Tensor) -> torch.Tensor | None:
        if isinstance(self.method, Agent):
            return None
        n = self.layout.num_video_tokens
        if isinstance(self.method, Dense):
            return torch.ones(len(rows), n, dtype=torch.bool)
        if self.plan is not None:
            bs = self.method.block_size
            sel = self.plan.selected[0, h][self._positions(rows) // bs]  # [R, NB]
            on_curve = sel.repeat_interleave(bs, dim=1)[:, :n]
            if self.perm is None:
                return on_curve
            out = torch.empty_like(on_curve)
            out[:, self.perm] = on_curve
            return out
        if self.perm is None:
            return layout_row_mask(self.block_layout, rows)
        tiled = layout_row_mask(self.block_layout, self.inv[rows])  # [R, positions]
        out = torch.empty(len(rows), n, dtype=torch.bool)
        out[:, self.perm] = tiled[:, self.real_pos]
        return out

    def out(self, h: int, rows: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """Method output ``[R, D]`` of head ``h`` for ``rows`` (``scores``: their dense scaled scores)."""
        v = self.v[0, :, h]
        if isinstance(self.method, Agent):
            m = self.method
            s2 = self.scale ** m.k_scale2
            p = _softmax_rows(s2 * self.q[0, rows, h] @ self.agents[0, :, h].float().T, None)
            return p @ self.v_agents[h] + m.k_shortcut * v[rows]
        o = _softmax_rows(scores, self.mask(h, rows)) @ v
        if self.rectification is not None:
            ratio, comp = self.rectification
            qb = self._positions(rows) // self.method.block_size
            o = ratio[0, h, qb, None] * o + comp[0, h, qb]
        return o


def dense_rows(q, k, v, rows: torch.Tensor, scale: float) -> torch.Tensor:
    """Dense attention output ``[R, H, D]`` for the query ``rows`` (chunked; the reference)."""
    out = torch.empty(len(rows), q.shape[2], q.shape[3])
    for h in range(q.shape[2]):
        for i in range(0, len(rows), _CHUNK):
            r = rows[i:i + _CHUNK]
            out[i:i + _CHUNK, h] = _softmax_rows(scale * q[0, r, h] @ k[0, :, h].T, None) @ v[0, :, h]
    return out


def method_rows(method, q, k, v, grid, rows: torch.Tensor, *, scale: float | None = None) -> dict:
    """The method's output rows and mass recall against dense attention.

    Args:
        method: an accel method (Dense, a static pattern, Rectified or Agent).
        q, k, v: ``[1, N, H, D]`` video-only tensors in row-major grid order.
        grid: ``(T, H, W)`` with ``T*H*W == N``.
        rows: int64 query rows to evaluate.
        scale: softmax scale (``None``: ``1/sqrt(D)``).

    Returns:
        ``{"out": [R, H, D], "dense": [R, H, D], "recall": float | None, "density": float}``.
    """
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    ev = _Rows(method, q, k, v, grid, scale)
    heads = q.shape[2]
    out = torch.empty(len(rows), heads, q.shape[3])
    dense = torch.empty_like(out)
    mass, count = 0.0, 0
    for h in range(heads):
        for i in range(0, len(rows), _CHUNK):
            r = rows[i:i + _CHUNK]
            scores = scale * q[0, r, h] @ k[0, :, h].T
            p = _softmax_rows(scores, None)
            dense[i:i + _CHUNK, h] = p @ v[0, :, h]
            out[i:i + _CHUNK, h] = ev.out(h, r, scores)
            m = ev.mask(h, r)
            if m is not None:
                mass += float((p * m).sum())
                count += len(r)
    return {"out": out, "dense": dense, "recall": mass / count if count else None, "density": ev.density}


def block_figures(method, grid) -> dict:
    """Visited 128-token blocks of ``method``'s video x video layout on ``grid`` and the predicted kernel time
    of one head (:data:`accel.kernels.cost.H200`, blocks only): ``full_blocks``, ``counted_blocks`` (limited to
    a border tile's real keys: a key-prefix tile in today's kernel, priced as full), ``partial_blocks``,
    ``full_fraction`` (``(full + counted) / visited``),
    ``predicted_kernel_ms_per_head`` and ``predicted_dense_ms_per_head``. ``None`` values for Agent (not
    block-sparse) and block sizes other than 128 (the model's); Rectified's figures are those of its
    top-k floor (a lower bound: the selection adds blocks per call)."""
    n = math.prod(grid)
    bs = getattr(method, "block_size", 128)
    nb = -(-n // bs)
    none = {"full_blocks": None, "counted_blocks": None, "partial_blocks": None, "full_fraction": None,
            "predicted_kernel_ms_per_head": None, "predicted_dense_ms_per_head": None}
    if isinstance(method, Agent):
        return none
    if isinstance(method, (Dense, Rectified)):
        full = nb * nb if isinstance(method, Dense) else nb * top_k_blocks(method.drop, nb)
        counts = {"full_blocks": full, "counted_blocks": 0, "partial_blocks": 0, "full_fraction": 1.0}
    else:
        info = method.describe(tuple(grid), file=None, compare_rowmajor=False)
        counts = {"full_blocks": info["full_blocks"], "counted_blocks": info["counted_blocks"],
                  "partial_blocks": info["partial_blocks"], "full_fraction": info["full_fraction"]}
    if bs != 128:
        return none | counts
    return counts | {
        "predicted_kernel_ms_per_head": H200.block_ms(counts["full_blocks"], counts["partial_blocks"],
                                                      counts["counted_blocks"]),
        "predicted_dense_ms_per_head": H200.dense_ms(nb * nb),
    }


def evaluate_method(method, q, k, v, grid, rows: torch.Tensor) -> dict:
    """Relative L2 error, recall and density of ``method`` on the given rows (see the module docstring),
    with its :func:`block_figures`."""
    t0 = time.perf_counter()
    res = method_rows(method, q, k, v, grid, rows)
    err = float((res["out"] - res["dense"]).norm() / res["dense"].norm())
    return {"rel_l2_error": err, "recall": res["recall"], "density": res["density"],
            "eval_s": time.perf_counter() - t0, **block_figures(method, tuple(grid))}


def sample_rows(n: int, rows: int | None, seed: int) -> torch.Tensor:
    """All ``n`` rows (``rows=None`` or ``rows >= n``) or ``rows`` sampled without replacement, sorted."""
    if rows is None or rows >= n:
        return torch.arange(n)
    gen = torch.Generator().manual_seed(seed + 1)
    return torch.randperm(n, generator=gen)[:rows].sort().values


def run(out_dir, *, sizes=("hunyuan_720p", "wan_720p"), methods=METHOD_NAMES + TILE_VARIANTS, densities=(0.1, 0.2, 0.3),
        heads: int = 2, head_dim: int = 64, rows: int | None = 256, seed: int = 0, progress: bool = True,
        draw: bool = True) -> Path:
    """Run the benchmark and write ``out_dir/results.json`` (incrementally), ``report.md`` and plots.

    Args:
        out_dir: the run directory (created; must be writable).
        sizes: names from :data:`SIZES` or ``(T, H, W)`` tuples.
        methods: method names (:data:`accel.eval.matching.METHOD_NAMES`, ``TILE_VARIANTS``, or ``"dense"``).
        densities: target densities in (0, 1].
        heads, head_dim: shape of the synthetic heads.
        rows: query rows evaluated per size (``None``: all).
        seed: seed of the synthetic data and of the row sample.
        progress: show a progress bar (tqdm).
        draw: write PNG plots and layout pictures.

    Returns:
        the run directory's path.

    Raises:
        ValueError: unknown size or method name, empty method list, densities outside (0, 1], or an
            unwritable output directory.
    """
    from accel.eval import report
    from accel.eval.kernel_bench import environment

    methods = check_method_names(methods)
    grids = {}
    for s in sizes:
        if isinstance(s, str):
            if s not in SIZES:
                raise ValueError(f"unknown size {s!r}; allowed: {', '.join(SIZES)} or a (T, H, W) tuple")
            grids[s] = SIZES[s]
        else:
            grids["x".join(map(str, s))] = tuple(s)
    for d in densities:
        if not 0 < d <= 1:
            raise ValueError(f"densities must be in (0, 1], got {d!r}")
    run_dir = open_run_dir(out_dir, {
        "benchmark": "attention",
        "units": {"rel_l2_error": "||O - O_dense||_F / ||O_dense||_F (ratio)", "recall": "fraction of dense softmax mass",
                  "predicted_kernel_ms_per_head": "ms, H200 cost model (accel.kernels.cost), visited blocks of one head",
                  "full_fraction": "(full + counted) / visited video x video blocks",
                  "density": "fraction of video x video (query, key) pairs computed", "eval_s": "seconds (CPU, row eval)",
                  "search_s": "seconds (parameter search from layouts)"},
        "environment": environment(),
        "settings": {"heads": heads, "head_dim": head_dim, "rows": rows, "seed": seed, "sizes": grids,
                     "densities": list(densities), "methods": methods,
                     "data": "accel.eval.synthetic.synthetic_qkv (smooth fields + 3D RoPE), defaults"},
    })
    jobs = [(s, m, d) for s in grids for m in methods for d in ([1.0] if m == "dense" else densities)]
    bar = _bar(len(jobs), progress)
    data = {}
    for size, name, target in jobs:
        grid = grids[size]
        if size not in data:
            q, k, v = synthetic_qkv(grid, heads=heads, head_dim=head_dim, seed=seed)
            n = q.shape[1]
            r = sample_rows(n, rows, seed)
            data = {size: (q, k, v, r)}
        q, k, v, r = data[size]
        bar.set_description(f"{size} {name} {target:.0%}")
        t0 = time.perf_counter()
        matched = method_at_density(name, target, grid)
        search_s = time.perf_counter() - t0
        res = evaluate_method(matched.method, q, k, v, grid, r)
        rec = {"size": size, "grid": list(grid), "tokens": math.prod(grid), "method": name, "target_density": target,
               "parameter": matched.parameter, "config": repr(matched.method), "matched_density": matched.density,
               "target_reached": reached(target, matched.density),
               "rows_evaluated": len(r), "rows_sampled": len(r) < q.shape[1], "search_s": search_s, **res}
        run_dir.add(rec)
        if draw and name not in ("rectified", "agent", "dense"):
            report.save_layout_picture(run_dir.path, matched.method, grid, f"layout_{size}_{name}_{round(target * 100)}.png")
        bar.update(1)
    bar.close()
    report.write_attention_report(run_dir, draw=draw)
    run_dir.finish()
    return run_dir.path


def _bar(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, disable=not enabled, unit="run")


def main(argv=None) -> int:
    """Command line: ``accel eval attention`` (see ``--help``)."""
    from accel.kernels.renamed import renamed_option

    p = argparse.ArgumentParser(prog="accel eval attention", description=__doc__.splitlines()[0])
    p.add_argument("--sizes", nargs="+", default=["hunyuan_720p", "wan_720p"],
                   help=f"grid names ({', '.join(SIZES)}) or T,H,W triples like 4,12,16")
    p.add_argument("--method", dest="methods", nargs="+", default=command_line_names(METHOD_NAMES + TILE_VARIANTS),
                   metavar="NAME",
                   help=f"methods, from dense {' '.join(command_line_names(METHOD_NAMES + TILE_VARIANTS))} (default: "
                        "all but dense; the *-tile / *-block names are the tile-aligned variants)")
    p.add_argument("--methods", dest="methods", nargs="+", action=renamed_option("--method"), help=argparse.SUPPRESS)
    p.add_argument("--densities", nargs="+", type=float, default=[0.1, 0.2, 0.3])
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--rows", type=int, default=256, help="query rows sampled per size (0: all rows)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("eval-results/attention"), help="run directory")
    p.add_argument("--no-plots", action="store_true")
    args = p.parse_args(argv)
    sizes = [tuple(int(x) for x in s.split(",")) if "," in s else s for s in args.sizes]
    try:
        methods = method_names_from_command_line(args.methods)
        path = run(args.out, sizes=sizes, methods=methods, densities=args.densities, heads=args.heads,
                   head_dim=args.head_dim, rows=args.rows or None, seed=args.seed, draw=not args.no_plots)
    except ValueError as exc:
        p.error(str(exc))
    print(f"wrote {path / 'results.json'} and {path / 'report.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
