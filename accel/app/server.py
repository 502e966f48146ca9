"""``accel app``: serve the demo.

Safe defaults: binds to 127.0.0.1 (``--host 0.0.0.0`` or ``--share`` expose it, on request only);
serves the output folder's files; keeps uploads in a separate folder (``--uploads``, by default a new
private temporary folder removed at exit) that is never served freely; uploads are limited to
``--max-upload-mb`` each and ``--upload-quota-mb`` in all, deleted after ``--upload-keep-min``, and
refused unless they decode as an image or a video or when they come from another site's page
(:mod:`accel.app.http_guard`); one request runs at a time and at most ``--queue`` wait (others are
turned away with a "queue full" message); ``--auth FILE`` asks for a user name and password (pairs read
from a file, so no password appears in the process list) before the page opens; no pickle and no remote
code are loaded (models are the offline ones of :mod:`accel.app.models`, weights from safetensors).
"""

from __future__ import annotations

import argparse
import atexit
import importlib.util
import logging
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path

__all__ = ["main", "create", "launch_settings", "read_auth_file"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="accel app", description="Serve the Gradio demo: generate (sparse vs dense) and edit.")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1, this machine only; 0.0.0.0 exposes it to the network)")
    p.add_argument("--port", type=int, default=7860, help="TCP port (default 7860)")
    p.add_argument("--share", action="store_true", help="also open a public gradio.live link (off by default)")
    p.add_argument("--out", type=Path, default=Path("accel-app-output"),
                   help="output folder: results are written and served from here (default ./accel-app-output)")
    p.add_argument("--uploads", type=Path, default=None,
                   help="folder for uploaded files, outside --out (default: a new private temporary folder, "
                        "removed when the app exits)")
    p.add_argument("--max-upload-mb", type=float, default=50.0, help="largest accepted upload in MB (default 50)")
    p.add_argument("--upload-quota-mb", type=float, default=500.0,
                   help="largest total size of the upload folder in MB; uploads past it are refused (default 500)")
    p.add_argument("--upload-keep-min", type=float, default=60.0,
                   help="uploads older than this many minutes are deleted (default 60)")
    p.add_argument("--queue", type=int, default=8, help="requests that may wait while one runs (default 8)")
    p.add_argument("--device", default=None,
                   help="where the models run: cuda, cuda:1, cpu (default: cuda when available, else cpu)")
    p.add_argument("--auth", type=Path, default=None, metavar="FILE",
                   help="require a login: FILE holds one user:password per line (use it when exposing the app "
                        "with --host or --share); default: no login")
    p.add_argument("--no-warm-up", action="store_true",
                   help="skip the one-step warm-up call after loading a model (first latency then includes start-up)")
    return p


def read_auth_file(path: Path) -> list[tuple[str, str]]:
    """The ``(user, password)`` pairs of an ``--auth`` file: one ``user:password`` per line (blank lines and
    lines starting with ``#`` skipped; the password is everything after the first colon).

    Raises:
        ValueError: the file cannot be read, a line has no colon or an empty user or password, or no pair.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"--auth: cannot read {str(path)!r}: {exc}") from exc
    pairs = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, colon, password = line.partition(":")
        if not colon or not user.strip() or not password:
            raise ValueError(f"--auth: line {number} of {str(path)!r} must look like user:password (both non-empty)")
        pairs.append((user.strip(), password))
    if not pairs:
        raise ValueError(f"--auth: {str(path)!r} holds no user:password line")
    return pairs


def launch_settings(args: argparse.Namespace, out_root: Path) -> dict:
    """Keyword arguments of ``gradio.Blocks.launch`` for parsed ``accel app`` arguments.

    Only the output folder is an allowed (served) path; the upload folder, where Gradio writes uploads,
    is not (see :mod:`accel.app.upload_store`). The HTTP rules of :mod:`accel.app.http_guard` are
    installed by :func:`create`, which knows the upload folder.

    Raises:
        ValueError: a port outside 1..65535; a non-positive or non-finite upload limit, quota or age;
            a queue size below 1; an unreadable or malformed ``--auth`` file.
    """
    if not 1 <= args.port <= 65535:
        raise ValueError(f"--port must be in 1..65535, got {args.port}")
    for flag in ("max_upload_mb", "upload_quota_mb", "upload_keep_min"):
        value = getattr(args, flag)
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"--{flag.replace('_', '-')} must be a finite number > 0, got {value}")
    if args.queue < 1:
        raise ValueError(f"--queue must be >= 1, got {args.queue}")
    return dict(
        server_name=args.host, server_port=args.port, share=args.share,
        allowed_paths=[str(out_root)], blocked_paths=[str(out_root / ".gradio")],
        max_file_size=int(args.max_upload_mb * 1024 * 1024),
        show_error=False, ssr_mode=False, footer_links=[], quiet=False,
        auth=None if getattr(args, "auth", None) is None else read_auth_file(args.auth),
    )


def _upload_folder(args: argparse.Namespace, out_root: Path) -> Path:
    """The upload folder: ``--uploads`` or a new private temporary folder (removed at exit).

    Raises:
        ValueError: the folder and the output folder lie one inside the other.
    """
    from accel.render.folder import is_inside


    if args.uploads is None:
        root = Path(tempfile.mkdtemp(prefix="accel-app-uploads-")).resolve()
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        return root
    root = args.uploads.expanduser().resolve()
    if is_inside(root, out_root) or is_inside(out_root, root):
        raise ValueError(f"--uploads ({root}) must lie outside the output folder --out ({out_root}): files in the "
                         "output folder are served as they are")
    return root


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
        upload_root = _upload_folder(args, outputs.root)
    except ValueError as exc:
        p.error(str(exc))
    from starlette.middleware import Middleware

    from .http_guard import LOOPBACK_NAMES, HttpGuard
    from .upload_store import UploadStore

    store = UploadStore(upload_root, quota_bytes=int(args.upload_quota_mb * 1024 * 1024),
                        max_age_s=args.upload_keep_min * 60, max_file_bytes=kwargs["max_file_size"])
    loopback_only = args.host.strip("[]").lower() in LOOPBACK_NAMES and not args.share
    kwargs["app_kwargs"] = {"middleware": [Middleware(HttpGuard, store=store, loopback_only=loopback_only)]}
    # before gradio is imported: its upload/cache folder is ours; no analytics calls (offline use)
    os.environ["GRADIO_TEMP_DIR"] = str(store.root)
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from .models import ModelCache, offered_models
    from .ui import build_demo

    if models is None:
        from accel.pipelines.loading import parse_device

        try:  # before anything is loaded: a device this machine cannot use is refused here
            device = None if args.device is None else parse_device(args.device)
        except ValueError as exc:
            p.error(f"--{exc}")
        models = ModelCache(offered_models(device=device), warm_up=not args.no_warm_up)
    demo = build_demo(models, outputs, upload_root=store.root, max_upload_bytes=kwargs["max_file_size"])
    demo.queue(max_size=args.queue, default_concurrency_limit=1)
    return demo, kwargs


def main(argv: list[str] | None = None) -> int:
    """Command line of ``accel app`` (see ``--help``); serves until interrupted; returns the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    demo, kwargs = create(argv)
    print(f"accel app: output folder {kwargs['allowed_paths'][0]}, uploads in {os.environ['GRADIO_TEMP_DIR']}",
          flush=True)
    demo.launch(**kwargs)
    return 0

if __name__ == "__main__":
    sys.exit(main())
