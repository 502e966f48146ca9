"""Reports of evaluation runs: ``report.md`` tables and PNG plots (matplotlib, Agg backend).

Plots: density vs error (attention benchmark), speedup vs PSNR with each method's Pareto front,
per-layer executed density heat maps, block-layout pictures, and side-by-side frames dense vs method
(end-to-end runs).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

__all__ = [
    "markdown_table", "save_layout_picture", "write_attention_report", "pareto_front", "plot_speedup_vs_psnr",
    "plot_density_heatmap", "save_side_by_side", "fmt", "e2e_summary", "write_e2e_report",
]


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def fmt(value, digits: int = 3) -> str:
    """A table cell: ``n/a`` for None, ``inf`` for infinities, floats with ``digits`` significant digits."""
    if value is None:
        return "n/a"
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        if math.isinf(value):
            return "inf"
        if math.isnan(value):
            return "nan"
        return f"{value:.{digits}g}"
    return str(value)


def markdown_table(header: list[str], rows: list[list]) -> str:
    """A GitHub-flavoured markdown table (cells through :func:`fmt`)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def save_layout_picture(directory: Path, method, grid, name: str) -> Path:
    """PNG of the video x video block map of ``method`` on ``grid`` (white skipped, black full, grey partial),
    in the method's own token order (tiled when tiling is on)."""
    import torch

    from accel.grid import TokenLayout

    perm = method.tile_permutation(tuple(grid)) if hasattr(method, "tile_permutation") else None
    layout = method.video_block_layout(TokenLayout(tuple(grid), permutation=perm), batch=1, heads=1,
                                       device=torch.device("cpu"))
    kinds = layout.block_kinds()[0, 0].numpy()
    img = np.choose(kinds, [1.0, 0.0, 0.55])
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4, 4), dpi=120)
    ax.imshow(img, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_title(f"{type(method).__name__} on {tuple(grid)}\n{layout.density():.1%} of pairs, block {layout.q_block}",
                 fontsize=8)
    ax.set_xlabel("key block")
    ax.set_ylabel("query block")
    fig.tight_layout()
    path = Path(directory) / name
    fig.savefig(path)
    plt.close(fig)
    return path


def write_attention_report(run_dir, *, draw: bool = True) -> None:
    """``report.md`` (one table per size) and ``density_vs_error.png`` of an attention-benchmark run."""
    data = run_dir.data
    recs = data["records"]
    s = data["settings"]
    lines = ["# Attention-level benchmark", "",
             f"Synthetic structured Q/K/V ({s['data']}), {s['heads']} heads x {s['head_dim']} dims, seed {s['seed']}. "
             f"Error: relative L2 of the output vs dense attention; recall: share of the dense softmax mass on the "
             f"computed keys; density: executed video x video pairs. A target marked not reachable is one the "
             f"method cannot get within 15% of on that grid; the row shows the density it ran at.", ""]
    for size in dict.fromkeys(r["size"] for r in recs):
        rs = [r for r in recs if r["size"] == size]
        sampled = rs[0]["rows_sampled"]
        lines += [f"## {size}: grid {tuple(rs[0]['grid'])}, {rs[0]['tokens']:,} tokens", "",
                  (f"Evaluated on {rs[0]['rows_evaluated']} query rows sampled uniformly (seeded), all heads."
                   if sampled else "Evaluated on every query row."), ""]
        rows = [[r["method"], _target_cell(r["target_density"], r.get("matched_density", r["density"])),
                 f"{r['density']:.3f}", r["rel_l2_error"], r["recall"], _fraction(r.get("full_fraction")),
                 _ms(r.get("predicted_kernel_ms_per_head")), _param_str(r["parameter"])] for r in rs]
        lines += [markdown_table(["method", "target", "density", "rel. L2 error", "recall", "full blocks",
                                  "predicted ms / head (H200)", "parameter"], rows), ""]
    if draw and recs:
        plt = _plt()
        fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
        for size in dict.fromkeys(r["size"] for r in recs):
            for name in dict.fromkeys(r["method"] for r in recs):
                rs = sorted((r for r in recs if r["size"] == size and r["method"] == name), key=lambda r: r["density"])
                if rs:
                    ax.plot([r["density"] for r in rs], [r["rel_l2_error"] for r in rs], marker="o",
                            label=f"{name} ({size})")
        ax.set_xlabel("executed density")
        ax.set_ylabel("relative L2 error vs dense")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
        fig.tight_layout()
        fig.savefig(run_dir.path / "density_vs_error.png")
        plt.close(fig)
        lines += ["![density vs error](density_vs_error.png)", ""]
        pics = sorted(p.name for p in run_dir.path.glob("layout_*.png"))
        if pics:
            lines += ["Block layouts (black: full block, grey: partial, white: skipped):", ""]
            lines += [f"![{p}]({p})" for p in pics] + [""]
    run_dir.write_text("report.md", "\n".join(lines))


def _fraction(value) -> str:
    return "-" if value is None else f"{value:.1%}"


def _ms(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def _target_cell(target: float, matched: float) -> str:
    """``"30%"``, or ``"30% (not reachable: 62.5%)"`` when the matched density misses it
    (:func:`accel.eval.matching.reached`)."""
    from accel.eval.matching import reached

    return f"{target:.0%}" if reached(target, matched) else f"{target:.0%} (not reachable: {matched:.1%})"


def _param_str(params: dict) -> str:
    parts = []
    for k, v in params.items():
        parts.append(f"{k}={fmt(v, 3) if isinstance(v, float) else v}")
    return ", ".join(parts)


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points (x, y) not dominated by another (larger x and larger y are better), sorted by x."""
    front = []
    for x, y in sorted(points, key=lambda p: (-p[0], -p[1])):
        if not front or y > front[-1][1]:
            front.append((x, y))
    return sorted(front)


def plot_speedup_vs_psnr(records: list[dict], path: Path, *, speed_key: str = "speedup_transformer") -> None:
    """Scatter of speedup vs PSNR per method (one point per record, e.g. per configuration) with each
    method's Pareto front (infinite PSNR is drawn at the largest finite PSNR + 5 dB). A record whose
    ``object_lost`` is true (or a fraction > 0) is drawn as a cross and left out of the front: PSNR can rank
    a clip that lost the object above one that kept it."""
    plt = _plt()
    finite = [r["psnr_db"] for r in records if isinstance(r.get("psnr_db"), float) and math.isfinite(r["psnr_db"])]
    cap = (max(finite) + 5) if finite else 60.0
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for index, name in enumerate(dict.fromkeys(r["method"] for r in records)):
        rs = [r for r in records if r["method"] == name and r.get(speed_key) is not None]
        pts = [(r[speed_key], r["psnr_db"] if math.isfinite(r["psnr_db"]) else cap) for r in rs]
        if not pts:
            continue
        colour = f"C{index % 10}"
        lost = [bool(r.get("object_lost")) for r in rs]
        kept = [pt for pt, gone in zip(pts, lost, strict=True) if not gone]
        gone = [pt for pt, g in zip(pts, lost, strict=True) if g]
        if kept:
            ax.scatter(*zip(*kept, strict=True), color=colour, label=name)
            front = pareto_front(kept)
            ax.plot(*zip(*front, strict=True), color=colour, alpha=0.6)
        if gone:
            ax.scatter(*zip(*gone, strict=True), marker="x", s=60, color=colour,
                       label=f"{name} (object lost)" if not kept else None)
    ax.set_xlabel("speedup vs dense (" + speed_key.replace("speedup_", "") + ")")
    ax.set_ylabel("PSNR vs dense (dB)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_density_heatmap(matrix: np.ndarray, path: Path, title: str) -> None:
    """Heat map of executed density, ``matrix[step, layer]`` (NaN where the layer did not run)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    im = ax.imshow(matrix, vmin=0, vmax=1, cmap="viridis", aspect="auto", interpolation="nearest")
    ax.set_xlabel("self-attention layer")
    ax.set_ylabel("denoising step")
    ax.set_title(title, fontsize=8)
    fig.colorbar(im, ax=ax, label="executed density")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def save_side_by_side(reference: np.ndarray, others: dict[str, np.ndarray], path: Path, *, frames: int = 3) -> None:
    """PNG grid: rows = dense and each method, columns = evenly spaced frames of ``[F, H, W, 3]`` clips
    (an image ``[H, W, 3]`` counts as one frame)."""
    plt = _plt()
    clips = {"dense": reference, **others}
    clips = {k: (v[None] if v.ndim == 3 else v) for k, v in clips.items()}
    f = reference.shape[0] if reference.ndim == 4 else 1
    idx = sorted(set(np.linspace(0, f - 1, min(frames, f)).round().astype(int).tolist()))
    fig, axes = plt.subplots(len(clips), len(idx), figsize=(1.6 * len(idx), 1.6 * len(clips)), dpi=100, squeeze=False)
    for row, (name, clip) in enumerate(clips.items()):
        for col, i in enumerate(idx):
            ax = axes[row][col]
            ax.imshow(np.clip(clip[i], 0, 1))
            ax.set_xticks([])
            ax.set_yticks([])
            if col == 0:
                ax.set_ylabel(name, fontsize=6)
            if row == 0:
                ax.set_title(f"frame {i}", fontsize=6)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _mean(values):
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    if any(isinstance(v, float) and math.isinf(v) for v in vals):
        return math.inf
    return float(np.mean(vals))


def e2e_summary(records: list[dict]) -> list[dict]:
    """Per configuration: means over prompts of the per-prompt figures (adherence as fractions)."""
    out = []
    for label in dict.fromkeys(r["config"] for r in records):
        rs = [r for r in records if r["config"] == label]
        row = {"config": label, "method": rs[0]["method"], "target_density": rs[0]["target_density"], "prompts": len(rs)}
        for key in ("density", "psnr_db", "ssim", "lpips", "pipeline_s", "transformer_s", "speedup_pipeline",
                    "speedup_transformer", "attention_flops", "peak_rss_mib", "peak_mem_mib"):
            row[key] = _mean([r.get(key) for r in rs])
        if "colour_ok" in rs[0]:
            row["colour_acc"] = _mean([float(r["colour_ok"]) for r in rs])
            row["direction_acc"] = _mean([float(r["direction_ok"]) for r in rs])
            row["both_acc"] = _mean([float(r["colour_ok"] and r["direction_ok"]) for r in rs])
            row["object_lost"] = _mean([None if r.get("object_lost") is None else float(r["object_lost"]) for r in rs])
        row["timing_warnings"] = list(dict.fromkeys(w for r in rs for w in r.get("timing_warnings") or []))
        out.append(row)
    return out


def write_e2e_report(run_dir, *, dense_frames, samples: dict, configs, grid, draw: bool = True) -> None:
    """``report.md`` and the PNGs of an end-to-end run (see :mod:`accel.eval.e2e`)."""
    data = run_dir.data
    recs = data["records"]
    summary = e2e_summary(recs)
    run_dir.set("summary", summary)
    env = data["environment"]
    mem_key = "peak_mem_mib" if any(r.get("peak_mem_mib") is not None for r in summary) else "peak_rss_mib"
    adher = "colour_acc" in summary[0]
    lines = ["# End-to-end comparison", "",
             f"Pipeline `{data['pipeline']}` on {env.get('device')}, token grid {tuple(grid)}, "
             f"{len(data['prompts'])} prompt(s), seeds {data['seed']}..{data['seed'] + len(data['prompts']) - 1}, "
             f"call {data.get('call_kwargs', {})}. Reference: upstream dense attention, same seeds and scheduler.",
             "", "PSNR/SSIM vs dense per frame, averaged (SSIM: Gaussian window 11, sigma 1.5). " + data["lpips"] + ".",
             "Density: executed (query, key) pairs / dense pairs, measured from the kernel calls of every self-attention "
             "call. Speedups: dense time / method time (transformer: sum of its forward calls). Memory: "
             + ("torch.cuda.max_memory_allocated." if mem_key == "peak_mem_mib" else
                "process max RSS after the call (CPU high-water mark; it never decreases)."), ""]
    if adher:
        lines += ["Fidelity that a blank or objectless clip cannot win: PSNR and SSIM can rank a clip that lost the "
                  "object above one that kept it, so the embedded model's clips are also read by the adherence check "
                  "(`accel.embedded.adherence`): colour / direction / both as the prompt says (fractions of prompts), "
                  "and **object lost**: the share of prompts whose clip shows another dominant colour than the dense "
                  f"clip, or none, or fewer than {data.get('object_lost_ratio', 0.5):g} times its object pixels. "
                  "Rows with a lost object are flagged and drawn as crosses, outside the Pareto fronts.", ""]
        dense_row = next((r for r in summary if r["config"] == "dense"), None)
        if dense_row is not None and dense_row["both_acc"] is not None and dense_row["both_acc"] < 1:
            lines += [f"The dense reference itself matches its prompt on {dense_row['colour_acc']:.0%} (colour) and "
                      f"{dense_row['direction_acc']:.0%} (direction) of the prompts: the embedded model's own adherence "
                      "(README: colour 94%, direction 12% on 50 held-out prompts at 20 steps; fewer steps draw fainter "
                      "objects), not a fault of the comparison. Judge a method by the columns against dense (PSNR, "
                      "SSIM, object lost), and by colour/direction only relative to the dense row.", ""]
    header = ["config", "density", "PSNR dB", "SSIM"] + (["LPIPS"] if any(r["lpips"] is not None for r in summary) else [])
    header += (["colour ok", "direction ok", "both ok", "object lost"] if adher else [])
    header += ["pipeline s", "transformer s", "speedup (pipe)", "speedup (transf.)", "attn GFLOPs", "mem MiB", "flags"]
    rows = []
    for r in summary:
        row = [r["config"], r["density"], r["psnr_db"], r["ssim"]]
        if "LPIPS" in header:
            row.append(r["lpips"])
        if adher:
            row += [r["colour_acc"], r["direction_acc"], r["both_acc"], r["object_lost"]]
        flops = r["attention_flops"]
        flags = []
        if adher and r["object_lost"]:
            flags.append("OBJECT LOST")
        if any("exceeds 1 / executed density" in w for w in r["timing_warnings"]):
            flags.append("speedup implausible")
        row += [r["pipeline_s"], r["transformer_s"], r["speedup_pipeline"], r["speedup_transformer"],
                None if flops is None else flops / 1e9, r[mem_key], ", ".join(flags)]
        rows.append(row)
    lines += [markdown_table(header, rows), ""]
    first = recs[0] if recs else {}
    if first.get("timing"):
        lines += ["Timing: " + first["timing"] + " (per prompt: dense and every configuration run once untimed, then "
                  "alternate; see `accel.eval.timing`).", ""]
    warnings = list(dict.fromkeys(w for r in summary for w in r["timing_warnings"]))
    if warnings:
        lines += ["Timing warnings:", ""] + [f"- {w}" for w in warnings] + [""]
    lines += ["Configurations (labelled by the density they reached):", ""]
    for c in data["configs"]:
        note = ""
        targets = c.get("targets") or []
        if targets:
            note = "; target(s) " + ", ".join(f"{x:.0%}" for x in targets)
            missed = c.get("unreached_targets") or []
            if missed and c.get("matched_density") is not None:
                note += (f" ({', '.join(f'{x:.0%}' for x in missed)} not reachable on this grid: the closest density "
                         f"found is {c['matched_density']:.1%})")
        lines.append(f"- `{c['label']}`: `{c['method']}`, {c['schedule']}{note}")
    lines.append("")
    if draw:
        path = run_dir.path
        plot_speedup_vs_psnr([r for r in summary if r["config"] != "dense"], path / "speedup_vs_psnr.png")
        if adher:
            lines += ["Crosses: configurations that lost the object on some prompt (left out of the fronts).", ""]
        lines += ["![speedup vs PSNR](speedup_vs_psnr.png)", ""]
        maps = [(r["config"], r["density_map"]) for r in recs if r.get("density_map") and r["prompt_index"] == 0]
        if maps:
            _plot_density_maps(maps, path / "density_heatmaps.png")
            lines += ["Executed density per step and layer (first prompt):", "", "![density](density_heatmaps.png)", ""]
        pics = []
        for cfg in configs:
            if hasattr(cfg.method, "tile_permutation"):
                name = "layout_" + cfg.label.replace("@", "_").replace("%", "") + ".png"
                save_layout_picture(path, cfg.method, grid, name)
                pics.append(name)
        if pics:
            lines += ["Block layouts at this grid:", ""] + [f"![{p}]({p})" for p in pics] + [""]
        if samples:
            save_side_by_side(dense_frames, samples, path / "side_by_side.png")
            lines += ["Dense vs each configuration, first prompt:", "", "![frames](side_by_side.png)", ""]
    run_dir.write_text("report.md", "\n".join(lines))


def _plot_density_maps(maps, path: Path) -> None:
    plt = _plt()
    n = len(maps)
    cols = min(5, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols + 1, 2.0 * rows), dpi=110, squeeze=False,
                             layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    for ax, (label, entries) in zip(axes.flat, maps, strict=False):
        steps = max(e[0] for e in entries) + 1
        layers = max(e[1] for e in entries) + 1
        m = np.full((steps, layers), np.nan)
        for s, layer, d in entries:
            m[s, layer] = d
        ax.axis("on")
        im = ax.imshow(m, vmin=0, vmax=1, cmap="viridis", aspect="auto", interpolation="nearest")
        ax.set_title(label, fontsize=7)
        ax.set_xticks(range(layers))
        ax.set_yticks(range(0, steps, max(1, steps // 5)))
        ax.set_xlabel("layer", fontsize=6)
        ax.set_ylabel("step", fontsize=6)
        ax.tick_params(labelsize=5)
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8, label="executed density")
    fig.savefig(path)
    plt.close(fig)
