"""PSNR/SSIM: scikit-image (what :mod:`accel.eval.metrics` calls) against our former implementation of the
papers' formulas (now the test reference ``tests/eval/ssim_reference.py``): the same numbers? how much faster?

Inputs: random frames with noise added, and real frames (the ten 256x256 frames of two clips of the embedded
model in ``docs/embedded_sample.png``: each clip against the other, and each clip against itself one frame
later). Figures: the largest absolute difference of the per-frame values, and the wall time of all frames
of a video at the embedded model's size (17 x 128 x 128) and at Wan 480p (9 frames of 480 x 832), medians of
``--repeats`` alternating runs in one process, with the machine's load average recorded.

Nothing here is a test; it writes JSON::

    .venv/bin/python benchmarks/metrics_library.py --out benchmarks/results/metrics_library.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from accel.eval import metrics  # noqa: E402
from tests.eval import ssim_reference  # noqa: E402


def _real_frames() -> np.ndarray:
    from PIL import Image

    strip = np.asarray(Image.open(ROOT / "docs" / "embedded_sample.png").convert("RGB"), dtype=np.float64) / 255.0
    return strip.reshape(2, 256, 5, 256, 3).transpose(0, 2, 1, 3, 4).reshape(10, 256, 256, 3)


def _max_difference(ref: np.ndarray, test: np.ndarray) -> dict:
    lib = metrics.compare_frames(ref, test)
    ours_ssim = ssim_reference.ssim_per_frame(ref, test)
    ours_psnr = [ssim_reference.psnr(r, t) for r, t in zip(ref, test, strict=True)]
    return {"frames": len(ref), "shape": list(ref.shape[1:]),
            "ssim_max_abs_difference": max(abs(a - b) for a, b in zip(lib["ssim_per_frame"], ours_ssim, strict=True)),
            "psnr_db_max_abs_difference": max(abs(a - b) for a, b in zip(lib["psnr_db_per_frame"], ours_psnr,
                                                                          strict=True)),
            "ssim_mean": lib["ssim"], "psnr_db_mean": lib["psnr_db"]}


def _timing(shape, repeats: int, rng) -> dict:
    ref = rng.random(shape)
    test = np.clip(ref + 0.05 * rng.standard_normal(shape), 0, 1)
    runs = {"skimage_ssim": lambda: metrics.video_ssim(ref, test),
            "ours_ssim": lambda: ssim_reference.ssim_per_frame(ref, test),
            "skimage_psnr": lambda: metrics.video_psnr(ref, test),
            "ours_psnr": lambda: [ssim_reference.psnr(r, t) for r, t in zip(ref, test, strict=True)]}
    times = {name: [] for name in runs}
    for _ in range(repeats):  # alternating, so machine noise hits every variant alike
        for name, fn in runs.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    med = {name: statistics.median(ts) for name, ts in times.items()}
    return {"shape": list(shape), **{f"{k}_s": v for k, v in med.items()},
            "ssim_speedup": med["ours_ssim"] / med["skimage_ssim"], "psnr_speedup": med["ours_psnr"] / med["skimage_psnr"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5, help="timing rounds (medians)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    p.add_argument("--out", type=Path, default=Path("bench-results/metrics_library.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    frames = _real_frames()
    noisy = rng.random((4, 64, 80, 3))
    equality = {
        "random_rgb": _max_difference(noisy, np.clip(noisy + 0.1 * rng.standard_normal(noisy.shape), 0, 1)),
        "random_grey": _max_difference(noisy[..., 0], np.clip(noisy[..., 0] + 0.02, 0, 1)),
        "real_clip_vs_other_clip": _max_difference(frames[:5], frames[5:]),
        "real_clip_vs_next_frames": _max_difference(frames[:4], frames[1:5]),
    }
    load_before = os.getloadavg()
    timing = [_timing((17, 128, 128, 3), args.repeats, rng), _timing((9, 480, 832, 3), args.repeats, rng)]
    out = {"benchmark": "metrics_library", "equality": equality, "timing": timing, "threads": args.threads,
           "load_average_before": load_before, "load_average_after": os.getloadavg(), "cpu_count": os.cpu_count(),
           "skimage": __import__("skimage").__version__, "torch": torch.__version__}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
