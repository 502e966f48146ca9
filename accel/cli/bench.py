"""``accel bench kernels``: the block-sparse kernel benchmark (:mod:`accel.eval.kernel_bench`), JSON figures."""

from __future__ import annotations

__all__ = ["kernels"]


def kernels(argv: list[str] | None = None) -> int:
    """Run ``accel bench kernels`` with ``argv`` (its options: ``accel bench kernels --help``); returns the exit status."""
    from accel.eval.kernel_bench import main

    return main(argv)
