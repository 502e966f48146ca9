"""The ``accel`` command: one module of :mod:`accel.cli` per subcommand.

Subcommands (each forwards its remaining arguments to the function that implements it; ``accel COMMAND
--help`` lists its options, ``accel bench --help`` and ``accel eval --help`` their subcommands):

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

``accel --version`` prints the installed version. ``python -m accel.cli ...`` is the same command
(``torchrun ... -m accel.cli render ...``).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings

__all__ = ["main", "COMMANDS"]

#: subcommand words -> (module, function taking argv, one-line help). A group (``bench``, ``eval``) is the
#: first word of several entries; ``("eval",)`` alone is ``eval e2e``.
COMMANDS = {
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
_HELP = {"-h", "--help"}


def version() -> str:
    """The installed distribution's version (the package's own ``__version__`` when not installed)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("accel")
    except PackageNotFoundError:
        import accel

        return accel.__version__


_SHOW_WARNING = warnings.showwarning


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """Old names on the command line (:class:`~accel.kernels.renamed.RenamedWarning`) as one plain line."""
    if category.__name__ == "RenamedWarning":
        print(f"accel: note: {message}", file=sys.stderr)
    else:
        _SHOW_WARNING(message, category, filename, lineno, file, line)


def _usage() -> str:
    lines = ["usage: accel [--version] COMMAND [options]", "", "commands:"]
    for words, (_, _, help_text) in COMMANDS.items():
        lines.append(f"  {' '.join(words):<18} {help_text}")
    lines.append("")
    lines.append("Run 'accel COMMAND --help' for the options of a command.")
    return "\n".join(lines)


def _group_usage(group: str) -> str:
    entries = {words: help_text for words, (_, _, help_text) in COMMANDS.items() if words[0] == group and len(words) > 1}
    lines = [f"usage: accel {group} {{{','.join(w[1] for w in entries)}}} [options]", "", "subcommands:"]
    for words, help_text in entries.items():
        lines.append(f"  {words[1]:<12} {help_text}")
    lines.append("")
    if (group,) in COMMANDS:
        lines.append(f"'accel {group} [options]' without a subcommand is 'accel {' '.join(_default_of(group))}'.")
    lines.append(f"Run 'accel {group} SUBCOMMAND --help' for the options of a subcommand.")
    return "\n".join(lines)


def _default_of(group: str) -> tuple[str, ...]:
    target = COMMANDS[(group,)][:2]
    return next(words for words, entry in COMMANDS.items() if len(words) > 1 and words[0] == group and entry[:2] == target)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``accel`` console script; returns the process exit status.

    Args:
        argv: the arguments after the program name (default ``sys.argv[1:]``).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in _HELP:
        print(_usage())
        return 0
    if argv[0] == "--version":
        print(f"accel {version()}")
        return 0
    groups = {words[0] for words in COMMANDS if len(words) > 1}
    if argv[0] in groups and len(argv) > 1 and argv[1] in _HELP:
        print(_group_usage(argv[0]))
        return 0
    if argv[0] in groups and len(argv) == 1 and (argv[0],) not in COMMANDS:  # `accel bench` alone
        print(_group_usage(argv[0]), file=sys.stderr)
        return 2
    for words, (module, func, _) in sorted(COMMANDS.items(), key=lambda kv: -len(kv[0])):
        if tuple(argv[: len(words)]) == words:
            with warnings.catch_warnings():
                warnings.showwarning = _show_warning  # restored on exit
                fn = getattr(importlib.import_module(module), func)
                return int(fn(argv[len(words):]) or 0)
    parser = argparse.ArgumentParser(prog="accel")
    if argv[0] in groups:
        parser.error(f"unknown subcommand {' '.join(argv[:2])!r}\n\n{_group_usage(argv[0])}")
    parser.error(f"unknown command {' '.join(argv[:2])!r}\n\n{_usage()}")
    return 2
