"""The ``accel`` command: one module of :mod:`accel.cli` per subcommand.

Subcommands (each forwards its remaining arguments to the function that implements it):

* ``accel generate --prompt "a red circle moving left" [...]`` - render clips with the embedded model
  (:mod:`accel.cli.generate`)
* ``accel render --model PRESET --prompts FILE --out DIR [...]`` - batch rendering, one GPU or many
  (:mod:`accel.cli.render`)
* ``accel bench kernels [...]`` - block-sparse kernel benchmark, writes JSON (:mod:`accel.cli.bench`)
* ``accel eval [e2e|attention|kernels] [...]`` - evaluation reports (:mod:`accel.cli.eval`)
* ``accel train-embedded [...]`` - retrain the embedded text-to-video model shipped with the package
  (:mod:`accel.cli.train_embedded`)
* ``accel app [--port 7860] [...]`` - the Gradio demo (:mod:`accel.cli.app`)
* ``accel edit --source "..." --target "..." [--edit-words W] [--input FILE] --out DIR`` - attention-control
  editing (:mod:`accel.cli.edit`)

``python -m accel.cli ...`` is the same command (``torchrun ... -m accel.cli render ...``).
"""

from __future__ import annotations

import argparse
import importlib
import sys

__all__ = ["main"]

# subcommand words -> (module, function taking argv, one-line help)
_COMMANDS = {
    ("generate",): ("accel.cli.generate", "main", "render clips with the embedded model (offline), MP4"),
    ("render",): ("accel.cli.render", "main", "render a prompt file to MP4/PNG (presets, resume, many GPUs)"),
    ("bench", "kernels"): ("accel.cli.bench", "kernels", "block-sparse kernel benchmark (JSON figures)"),
    ("eval",): ("accel.cli.eval", "e2e", "dense vs sparse methods on a pipeline: report dir (= eval e2e)"),
    ("eval", "e2e"): ("accel.cli.eval", "e2e", "dense vs sparse methods on a pipeline: PSNR/SSIM/speed report"),
    ("eval", "attention"): ("accel.cli.eval", "attention", "methods at matched densities on synthetic Q/K/V"),
    ("eval", "kernels"): ("accel.cli.eval", "kernels", "block-sparse kernel benchmark (= bench kernels)"),
    ("train-embedded",): ("accel.cli.train_embedded", "main", "train the embedded tiny Wan model"),
    ("app",): ("accel.cli.app", "main", "the Gradio demo: sparse vs dense side by side (127.0.0.1 by default)"),
    ("edit",): ("accel.cli.edit", "main", "edit a generated or real image/video by attention control (ConsistEdit)"),
}


def _usage() -> str:
    lines = ["usage: accel COMMAND [options]", "", "commands:"]
    for words, (_, _, help_text) in _COMMANDS.items():
        lines.append(f"  {' '.join(words):<18} {help_text}")
    lines.append("")
    lines.append("Run 'accel COMMAND --help' for the options of a command.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``accel`` console script; returns the process exit status.

    Args:
        argv: the arguments after the program name (default ``sys.argv[1:]``).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help"}:
        print(_usage())
        return 0
    for words, (module, func, _) in sorted(_COMMANDS.items(), key=lambda kv: -len(kv[0])):
        if tuple(argv[: len(words)]) == words:
            fn = getattr(importlib.import_module(module), func)
            return int(fn(argv[len(words):]) or 0)
    parser = argparse.ArgumentParser(prog="accel")
    parser.error(f"unknown command {' '.join(argv[:2])!r}\n\n{_usage()}")
    return 2
