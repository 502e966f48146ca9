"""``accel eval``: evaluation reports.

* ``accel eval [e2e]``: dense vs sparse methods on a pipeline, PSNR/SSIM/speed (:mod:`accel.eval.e2e`);
* ``accel eval attention``: methods at matched densities on synthetic Q/K/V (:mod:`accel.eval.attention_bench`);
* ``accel eval kernels``: the block-sparse kernel benchmark (:mod:`accel.eval.kernel_bench`, = ``accel bench kernels``).
"""

from __future__ import annotations

__all__ = ["e2e", "attention", "kernels"]


def e2e(argv: list[str] | None = None) -> int:
    """Run ``accel eval e2e`` with ``argv`` (``--help`` lists the options); returns the exit status."""
    from accel.eval.e2e import main

    return main(argv)


def attention(argv: list[str] | None = None) -> int:
    """Run ``accel eval attention`` with ``argv`` (``--help`` lists the options); returns the exit status."""
    from accel.eval.attention_bench import main

    return main(argv)


def kernels(argv: list[str] | None = None) -> int:
    """Run ``accel eval kernels`` (= ``accel bench kernels``) with ``argv``; returns the exit status."""
    from accel.cli.bench import kernels as bench_kernels

    return bench_kernels(argv)
