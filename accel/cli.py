"""The ``accel`` command.

Subcommands (each forwards its remaining arguments to the module that implements it):

* ``accel generate --prompt "a red circle moving left" [...]`` - render clips with the embedded model
* ``accel render --model PRESET --prompts FILE --out DIR [...]`` - batch rendering, one GPU or many
* ``accel bench kernels [...]`` - block-sparse kernel benchmark, writes JSON (``--help`` for options)
* ``accel train-embedded [...]`` - retrain the embedded text-to-video model shipped with the package
* ``accel app [--port 7860] [...]`` - the Gradio demo (see ``accel.app``)
* ``accel edit --source "..." --target "..." [--edit-words W] [--input FILE] --out DIR`` - attention-control editing
"""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module, function taking argv, one-line help)
_COMMANDS = {
    ("generate",): ("accel.generate", "main", "render clips with the embedded model (offline), MP4"),
    ("render",): ("accel.render.command", "main", "render a prompt file to MP4/PNG (presets, resume, many GPUs)"),
    ("bench", "kernels"): ("accel.eval.kernel_bench", "main", "block-sparse kernel benchmark (JSON figures)"),
    ("eval",): ("accel.eval.e2e", "main", "dense vs sparse methods on a pipeline: report dir (= eval e2e)"),
    ("eval", "e2e"): ("accel.eval.e2e", "main", "dense vs sparse methods on a pipeline: PSNR/SSIM/speed report"),
    ("eval", "attention"): ("accel.eval.attention_bench", "main", "methods at matched densities on synthetic Q/K/V"),
    ("eval", "kernels"): ("accel.eval.kernel_bench", "main", "block-sparse kernel benchmark (= bench kernels)"),
    ("train-embedded",): ("accel.pipelines.train_embedded", "main", "train the embedded tiny Wan model"),
    ("app",): ("accel.app.server", "main", "the Gradio demo: sparse vs dense side by side (127.0.0.1 by default)"),
    ("edit",): ("accel.pipelines.edit_cli", "main", "edit a generated or real image/video by attention control (ConsistEdit)"),
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


if __name__ == "__main__":
    sys.exit(main())
