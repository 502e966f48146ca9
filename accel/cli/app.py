"""``accel app``: the Gradio demo (:mod:`accel.app`; its options are defined in :mod:`accel.app.server`)."""

from __future__ import annotations

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Run ``accel app`` with ``argv`` (``--help`` lists the options); returns the exit status."""
    from accel.app.server import main as server_main

    return server_main(argv)
