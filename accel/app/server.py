"""``accel app``: serve the demo.

Safe defaults: binds to 127.0.0.1 (``--host 0.0.0.0`` or ``--share`` expose it, on request only);
serves files from the output folder only (Gradio's own upload/cache folder is placed inside it);
uploads are limited to ``--max-upload-mb``; one request runs at a time and at most ``--queue``
wait (others are turned away with a "queue full" message); no pickle and no remote code are loaded
(models are the offline ones of :mod:`accel.app.models`, weights from safetensors).
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import sys
from pathlib import Path

__all__ = ["main", "create", "launch_settings"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="accel app", description="Serve the Gradio demo: generate (sparse vs dense) and edit.")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1, this machine only; 0.0.0.0 exposes it to the network)")
    p.add_argument("--port", type=int, default=7860, help="TCP port (default 7860)")
    p.add_argument("--share", action="store_true", help="also open a public gradio.live link (off by default)")
    p.add_argument("--out", type=Path, default=Path("accel-app-output"),
                   help="output folder: results are written and served from here only (default ./accel-app-output)")
    p.add_argument("--max-upload-mb", type=float, default=50.0, help="largest accepted upload in MB (default 50)")
    p.add_argument("--queue", type=int, default=8, help="requests that may wait while one runs (default 8)")
    p.add_argument("--device", default=None,
                   help="where the models run: cuda, cuda:1, cpu (default: cuda when available, else cpu)")
    p.add_argument("--no-warm-up", action="store_true",
                   help="skip the one-step warm-up call after loading a model (first latency then includes start-up)")
    return p


def launch_settings(args: argparse.Namespace, out_root: Path) -> dict:
    """Keyword arguments of ``gradio.Blocks.launch`` for parsed ``accel app`` arguments.

    Raises:
        ValueError: a port outside 1..65535, a non-positive upload limit or queue size.
    """
    if not 1 <= args.port <= 65535:
        raise ValueError(f"--port must be in 1..65535, got {args.port}")
    if not args.max_upload_mb > 0:
        raise ValueError(f"--max-upload-mb must be > 0, got {args.max_upload_mb}")
    if args.queue < 1:
        raise ValueError(f"--queue must be >= 1, got {args.queue}")
    return dict(
        server_name=args.host, server_port=args.port, share=args.share,
        allowed_paths=[str(out_root)], max_file_size=int(args.max_upload_mb * 1024 * 1024),
        show_error=False, ssr_mode=False, footer_links=[], quiet=False,
    )


def create(argv: list[str] | None = None, *, models=None):
    """Build the queued demo and its launch settings from ``accel app`` arguments, without serving.

    Args:
        argv: the arguments after ``accel app`` (see ``--help``).
        models: a :class:`~accel.app.models.ModelCache` to use instead of a new one (tests).

    Returns:
        ``(demo, launch_kwargs)``: call ``demo.launch(**launch_kwargs)`` to serve.

    Raises:
        SystemExit: bad arguments (argparse prints the message).
    """
    p = _parser()
    args = p.parse_args(argv)
    if importlib.util.find_spec("gradio") is None:
        p.error("the demo needs Gradio: pip install 'accel[demo]' (or: pip install gradio)")
    from .outputs import OutputFolder

    outputs = OutputFolder(args.out)
    try:
        kwargs = launch_settings(args, outputs.root)
    except ValueError as exc:
        p.error(str(exc))
    # before gradio is imported: its upload/cache folder inside ours; no analytics calls (offline use)
    os.environ["GRADIO_TEMP_DIR"] = str(outputs.root / ".gradio")
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from .models import ModelCache, offered_models
    from .ui import build_demo

    if models is None:
        import torch

        try:
            device = None if args.device is None else torch.device(args.device)
        except (RuntimeError, TypeError):
            p.error(f"--device must look like cpu, cuda or cuda:1, got {args.device!r}")
        models = ModelCache(offered_models(device=device), warm_up=not args.no_warm_up)
    demo = build_demo(models, outputs, max_upload_bytes=kwargs["max_file_size"])
    demo.queue(max_size=args.queue, default_concurrency_limit=1)
    return demo, kwargs


def main(argv: list[str] | None = None) -> int:
    """Command line of ``accel app`` (see ``--help``); serves until interrupted; returns the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    demo, kwargs = create(argv)
    print(f"accel app: output folder {kwargs['allowed_paths'][0]}", flush=True)
    demo.launch(**kwargs)
    return 0

if __name__ == "__main__":
    sys.exit(main())
