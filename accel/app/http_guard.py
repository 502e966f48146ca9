"""What the app's HTTP server accepts, checked in front of Gradio (an ASGI middleware).

Rules, in the order they apply to a request:

1. **Host** (only when the app listens on this machine alone, the default): the ``Host`` header must name
   this machine (``localhost``, ``127.0.0.1``, ``::1``), so a web page cannot reach the app through a
   domain name of its own that resolves to 127.0.0.1 (DNS rebinding) and then pass rule 2.
2. **Origin**: a request that changes something (any method but GET, HEAD, OPTIONS) coming from a
   browser page must come from the app's own page: its ``Origin`` (or, without one, its ``Referer``)
   must name the host and port the request was sent to. Browsers send ``Origin`` with every such
   request; clients that send neither (scripts, ``gradio_client``) are let through.
3. **Uploads** (``POST /gradio_api/upload``): old uploads are deleted, then the upload is refused unless
   it states its size (``Content-Length``) and fits the upload folder's quota; every file written is
   then decoded, and the upload refused and deleted unless all are images or videos
   (:meth:`accel.app.upload_store.UploadStore.admit`).
4. **File inputs** of events (JSON bodies posted under ``/gradio_api/``): every file an event names
   must be a file of the upload folder; URLs and other paths are refused with the reason.
5. **Served files** (``/gradio_api/file=...`` and every other route that returns a stored file): only
   image, video and audio types, plain text and JSON are served inline; anything else becomes an
   ``application/octet-stream`` attachment. Every such response also carries
   ``X-Content-Type-Options: nosniff`` and ``Content-Security-Policy: sandbox`` (no script runs even
   where a browser would render the file as a page).

Refusals carry the reason, with status 400, 403, 411 or 413: as plain text for uploads, else as JSON
``{"detail": reason}``; Gradio's page shows either in its error message.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import anyio
from starlette.datastructures import Headers

from .logic import AppInputError
from .upload_store import UploadStore

__all__ = ["HttpGuard", "origin_refusal", "host_refusal", "file_input_refusal", "INLINE_TYPES", "FILE_ROUTES"]

API_PREFIX = "/gradio_api"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
#: path prefixes of the routes that return stored files
FILE_ROUTES = (f"{API_PREFIX}/file=", f"{API_PREFIX}/file/", f"{API_PREFIX}/stream/", f"{API_PREFIX}/proxy=",
               f"{API_PREFIX}/run-history/", "/file=", "/file/")
#: media types a file route may serve inline (nothing a browser runs scripts in)
INLINE_TYPES = frozenset({
    "image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp",
    "video/mp4", "video/webm", "video/ogg", "video/quicktime", "video/x-matroska", "video/x-msvideo", "video/mp2t",
    "audio/aac", "audio/mpeg", "audio/ogg", "audio/wav", "audio/webm", "audio/mp4",
    "application/vnd.apple.mpegurl", "text/plain", "application/json",
})
#: largest JSON body of an event the guard reads (prompts and settings are far smaller)
MAX_EVENT_BYTES = 4 * 1024 * 1024
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def _name_and_port(netloc: str) -> tuple[str, int | None]:
    """``"Example.com:8080"`` -> ``("example.com", 8080)``; ``"[::1]"`` -> ``("::1", None)``; bad ports -> -1."""
    parts = urlsplit("//" + netloc)
    try:
        port = parts.port
    except ValueError:
        port = -1
    return (parts.hostname or "").lower(), port


def host_refusal(host: str | None) -> str | None:
    """The reason to refuse a request whose ``Host`` header is ``host`` at an app listening on loopback only,
    or ``None`` when ``host`` names this machine."""
    name, _port = _name_and_port(host or "")
    if name in LOOPBACK_NAMES:
        return None
    return (f"this app listens on this machine only and answers to localhost or 127.0.0.1, not to {host!r} "
            "(start it with --host 0.0.0.0 to serve other names)")


def origin_refusal(headers) -> str | None:
    """The reason to refuse a state-changing request sent by a page of another origin, or ``None``.

    Args:
        headers: the request's headers (a case-insensitive mapping: ``origin``, ``referer``, ``host``).

    The page's origin is its ``Origin`` header, or the scheme and host of its ``Referer`` when there is no
    ``Origin``; neither header means the request did not come from a browser page and is allowed. The
    origin's host name and port must equal those of the ``Host`` header (a ``Host`` without a port matches
    the scheme's default port).
    """
    source = headers.get("origin")
    if source is None:
        source = headers.get("referer")
        if source is None:
            return None
    source = source.strip()
    host = headers.get("host") or ""
    if source == "null":
        return ("refused: the request comes from a page without an origin (a sandboxed frame or a local file); "
                "use the app's own page")
    parts = urlsplit(source)
    if not parts.scheme or not parts.netloc:
        return f"refused: the request's origin {source!r} is not a URL; use the app's own page"
    name, port = _name_and_port(parts.netloc)
    if port is None:
        port = _DEFAULT_PORTS.get(parts.scheme.lower(), -1)
    host_name, host_port = _name_and_port(host)
    same = name == host_name and (port == host_port or (host_port is None and port in (80, 443)))
    if same:
        return None
    return (f"refused: the request comes from a page of {parts.scheme}://{parts.netloc}, not from this app's page "
            f"({host}); uploads and requests are accepted only from the app's own page")


def _file_paths(value) -> Iterator[str]:
    """The ``path`` of every Gradio file object (a dict with ``meta._type == "gradio.FileData"``) in ``value``."""
    if isinstance(value, dict):
        meta = value.get("meta")
        if isinstance(meta, dict) and meta.get("_type") == "gradio.FileData":
            yield str(value.get("path"))
        for item in value.values():
            yield from _file_paths(item)
    elif isinstance(value, list):
        for item in value:
            yield from _file_paths(item)


def file_input_refusal(body: bytes, store: UploadStore) -> str | None:
    """The reason to refuse an event whose JSON ``body`` names a file that is not in the upload folder, or ``None``.

    A body that is not JSON is left to Gradio (which refuses it).
    """
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    for path in _file_paths(payload):
        if "://" in path or path.lower().startswith("data:"):
            return (f"refused: {path[:200]!r} is a URL; the app reads no URLs, upload the file through the page "
                    "instead")
        if not store.contains(path):
            return (f"refused: {path[:200]!r} is not a file uploaded to this app; only files uploaded through the "
                    "page are read")
        try:
            is_file = Path(path).is_file()
        except OSError:
            is_file = False
        if not is_file:
            return (f"refused: the uploaded file {path.rsplit('/', 1)[-1][:100]!r} is gone (uploads are deleted "
                    f"after {store.max_age_s / 60:g} min); upload it again")
    return None


async def _respond(send, status: int, reason: str, *, plain: bool = False) -> None:
    """Refuse with ``reason``: JSON ``{"detail": reason}``, or the bare text with ``plain`` (uploads: Gradio's
    page shows an upload's error body as it is)."""
    body = reason.encode() if plain else json.dumps({"detail": reason}).encode()
    media_type = b"text/plain; charset=utf-8" if plain else b"application/json"
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", media_type), (b"content-length", str(len(body)).encode()),
                            (b"x-content-type-options", b"nosniff")]})
    await send({"type": "http.response.body", "body": body})


async def _read_body(receive, limit: int) -> bytes | None:
    """The whole request body, or ``None`` once it passes ``limit`` bytes."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replaying(body: bytes, receive):
    """A ``receive`` that hands out ``body`` once, then defers to the real one (disconnects)."""
    done = False

    async def replay():
        nonlocal done
        if not done:
            done = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


class HttpGuard:
    """ASGI middleware enforcing the module's rules in front of the Gradio app.

    Args:
        app: the wrapped ASGI app.
        store: the upload folder (quota, age limit, admission of uploaded files).
        loopback_only: apply the Host rule (the app listens on 127.0.0.1 / localhost only, without
            ``--share``).
    """

    def __init__(self, app, *, store: UploadStore, loopback_only: bool) -> None:
        self.app = app
        self.store = store
        self.loopback_only = loopback_only
        self._pending = 0  # bytes of uploads being received now (counted against the quota)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if self.loopback_only:
            reason = host_refusal(headers.get("host"))
            if reason is not None:
                if scope["type"] == "http":
                    await _respond(send, 403, reason)
                else:
                    await send({"type": "websocket.close", "code": 1008})
                return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        upload = path == f"{API_PREFIX}/upload"
        if method not in SAFE_METHODS:
            reason = origin_refusal(headers)
            if reason is not None:
                await _respond(send, 403, reason, plain=upload)
                return
            if upload:
                await self._upload(scope, receive, send, headers)
                return
            if path.startswith(f"{API_PREFIX}/") and "multipart/" not in (headers.get("content-type") or ""):
                body = await _read_body(receive, MAX_EVENT_BYTES)
                if body is None:
                    await _respond(send, 413, f"refused: the request is larger than {MAX_EVENT_BYTES} bytes")
                    return
                reason = file_input_refusal(body, self.store)
                if reason is not None:
                    await _respond(send, 400, reason)
                    return
                receive = _replaying(body, receive)
        if path.startswith(FILE_ROUTES):
            send = _safe_file_headers(send)
        await self.app(scope, receive, send)

    async def _upload(self, scope, receive, send, headers) -> None:
        self.store.remove_expired()
        length = headers.get("content-length")
        if length is None or not length.isdigit():
            await _respond(send, 411, "refused: an upload must state its size (Content-Length)", plain=True)
            return
        try:
            self.store.room_for(int(length), pending=self._pending)
        except AppInputError as exc:
            await _respond(send, 413, str(exc), plain=True)
            return
        self._pending += int(length)
        try:
            status, start, body = await self._capture(scope, receive)
        finally:
            self._pending -= int(length)
        if status == 200:
            try:
                paths = json.loads(body)
            except json.JSONDecodeError:
                paths = []
            try:
                await anyio.to_thread.run_sync(self.store.admit, [str(p) for p in paths])
            except AppInputError as exc:
                await _respond(send, 400, str(exc), plain=True)
                return
        await send(start)
        await send({"type": "http.response.body", "body": body})

    async def _capture(self, scope, receive):
        """Run the wrapped app; return its status, its start message and its whole body."""
        start, chunks = None, []

        async def keep(message):
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, keep)
        if start is None:
            start = {"type": "http.response.start", "status": 500, "headers": []}
        start = dict(start, headers=[(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
                     + [(b"content-length", str(sum(map(len, chunks))).encode())])
        return start["status"], start, b"".join(chunks)


def _safe_file_headers(send):
    """A ``send`` that serves a stored file inline only with a type of :data:`INLINE_TYPES`, else as a download."""

    async def guarded(message):
        if message["type"] == "http.response.start":
            kept = []
            media_type = ""
            for key, value in message.get("headers", []):
                lower = key.lower()
                if lower == b"content-type":
                    media_type = value.decode("latin-1").split(";")[0].strip().lower()
                if lower not in (b"x-content-type-options", b"content-security-policy"):
                    kept.append((key, value))
            if media_type not in INLINE_TYPES:
                kept = [(k, v) for k, v in kept if k.lower() not in (b"content-type", b"content-disposition")]
                kept += [(b"content-type", b"application/octet-stream"), (b"content-disposition", b"attachment")]
            kept += [(b"x-content-type-options", b"nosniff"), (b"content-security-policy", b"sandbox")]
            message = dict(message, headers=kept)
        await send(message)

    return guarded
