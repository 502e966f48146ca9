"""``accel train-embedded``: retrain the embedded text-to-video model (:mod:`accel.embedded.train`;
``python -m accel.embedded.train`` is the same command)."""

from __future__ import annotations

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Run ``accel train-embedded`` with ``argv`` (``--help`` lists the options); returns the exit status."""
    from accel.embedded.train import main as train_main

    return train_main(argv, prog="accel train-embedded")
