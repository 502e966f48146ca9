"""``accel app`` over HTTP, as a hostile client or another site's page would reach it.

One running server (its own process, loopback, a 1 MB upload quota): uploads that are not media
(HTML, SVG with a script) are refused and deleted; no file route serves HTML or SVG inline, even for
such files planted directly in the upload or output folder; uploads and events from another site's
page (Origin, Referer, ``null``) or through a foreign Host name are refused; the quota refuses an
upload that would pass it, and old uploads are deleted; file inputs of events that name a path outside
the upload folder, a URL or an expired upload are refused with the reason.
"""

import io
import os
import time

import numpy as np
import pytest

from accel.app.http_guard import FILE_ROUTES

from .serving import running_app

httpx = pytest.importorskip("httpx")

SCRIPTED = {
    "page.html": b"<!doctype html><html><body><script>document.title='owned'</script></body></html>",
    "drawing.svg": b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(document.domain)</script></svg>',
}
QUOTA_MB = 1


def _png(side: int, seed: int) -> bytes:
    """A PNG of random pixels (incompressible: about 3 * side**2 bytes)."""
    import imageio.v2 as imageio

    buffer = io.BytesIO()
    pixels = (np.random.default_rng(seed).random((side, side, 3)) * 255).astype(np.uint8)
    imageio.imwrite(buffer, pixels, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    root = tmp_path_factory.mktemp("app_http")
    out, uploads = root / "out", root / "uploads"
    with running_app(root / "server.log", "--out", str(out), "--uploads", str(uploads),
                     "--upload-quota-mb", str(QUOTA_MB)) as base:
        with httpx.Client(base_url=base, timeout=60) as client:
            yield client, out, uploads


def _upload(client, name: str, content: bytes, **headers):
    return client.post("/gradio_api/upload", files={"files": (name, content)}, headers=headers)


def _files(folder) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file())


def _assert_not_a_page(response, what):
    """A response a browser will not render as a page: no HTML/SVG type inline, no sniffing, sandboxed."""
    media_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
    disposition = response.headers.get("content-disposition", "")
    assert media_type not in ("text/html", "image/svg+xml", "application/xhtml+xml", "text/xml"), (what, media_type)
    assert media_type == "application/octet-stream", (what, media_type)
    assert disposition.startswith("attachment"), (what, disposition)
    assert response.headers.get("x-content-type-options") == "nosniff", what
    assert response.headers.get("content-security-policy") == "sandbox", what


@pytest.mark.parametrize("name", sorted(SCRIPTED))
def test_scripted_upload_is_refused_deleted_and_never_served_as_a_page(app, name):
    client, out, uploads = app
    response = _upload(client, name, SCRIPTED[name])
    assert response.status_code == 400, response.text
    detail = response.text
    assert name in detail and "only images" in detail and "deleted" in detail, detail
    assert name not in _files(uploads) and name not in _files(out)

    # a copy that got there anyway (planted in the upload folder, or in the served output folder)
    for folder in (uploads / "planted", out / "planted"):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(SCRIPTED[name])
        served = 0
        for route in FILE_ROUTES:
            for headers in ({}, {"Range": "bytes=0-20"}):
                response = client.get(f"{route}{folder / name}", headers=headers)
                what = (route, folder.parent.name, headers, response.status_code)
                if response.status_code >= 300:  # refused (403 outside allowed folders, 404, 400): not the file
                    assert SCRIPTED[name] not in response.content, what
                    continue
                _assert_not_a_page(response, what)
                served += 1
        assert served >= 4, folder  # /gradio_api/file= and /gradio_api/file/, whole and ranged, do serve it


def test_image_upload_is_kept_and_served_inline(app):
    client, _out, uploads = app
    content = _png(8, seed=1)
    response = _upload(client, "small.png", content)
    assert response.status_code == 200, response.text
    (path,) = response.json()
    assert os.path.commonpath([path, str(uploads.resolve())]) == str(uploads.resolve())
    served = client.get(f"/gradio_api/file={path}")
    assert served.status_code == 200 and served.content == content
    assert served.headers["content-type"] == "image/png" and served.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("headers, origin", [
    ({"Origin": "http://evil.example"}, "http://evil.example"),
    ({"Referer": "https://evil.example/page.html"}, "https://evil.example"),
    ({"Origin": "null"}, "without an origin"),
])
def test_upload_from_another_sites_page_is_refused(app, headers, origin):
    client, _out, uploads = app
    before = _files(uploads)
    response = _upload(client, "cross.png", _png(8, seed=2), **headers)
    assert response.status_code == 403 and origin in response.text, response.text
    assert _files(uploads) == before


def test_same_origin_upload_and_foreign_host(app):
    client, _out, _uploads = app
    own = str(client.base_url).rstrip("/")
    assert _upload(client, "own.png", _png(8, seed=3), Origin=own).status_code == 200
    # DNS rebinding: another name resolving to 127.0.0.1 passes an Origin == Host check, not the Host rule
    port = client.base_url.port
    response = _upload(client, "rebound.png", _png(8, seed=4), Origin=f"http://evil.example:{port}",
                       Host=f"evil.example:{port}")
    assert response.status_code == 403 and "answers to localhost" in response.json()["detail"], response.text
    assert client.get("/", headers={"Host": f"evil.example:{port}"}).status_code == 403


def test_event_file_inputs_must_be_uploads(app):
    client, out, uploads = app
    (out / "result.png").write_bytes(_png(8, seed=5))
    cases = {
        "/etc/passwd": "is not a file uploaded to this app",
        str(out / "result.png"): "is not a file uploaded to this app",
        str(uploads / ".." / "out" / "result.png"): "is not a file uploaded to this app",
        "https://example.com/cat.png": "is a URL",
        str(uploads / "0123abcd" / "expired.png"): "is gone",
    }
    for path, reason in cases.items():
        body = {"data": [{"path": path, "meta": {"_type": "gradio.FileData"}}], "fn_index": 0, "session_hash": "t"}
        response = client.post("/gradio_api/queue/join", json=body)
        assert response.status_code == 400 and reason in response.json()["detail"], (path, response.text)


def test_quota_and_clean_up(app):
    client, _out, uploads = app
    big = 600 * 1024
    first, second = _png(int((big / 3) ** 0.5), seed=6), _png(int((big / 3) ** 0.5), seed=7)
    response = _upload(client, "first.png", first)
    assert response.status_code == 200, response.text
    (first_path,) = response.json()

    refused = _upload(client, "second.png", second)
    assert refused.status_code == 413 and "upload folder is full" in refused.text, refused.text
    assert "second.png" not in _files(uploads)
    assert sum(p.stat().st_size for p in uploads.rglob("*") if p.is_file()) <= QUOTA_MB * 2**20

    two_hours_ago = time.time() - 7200  # older than --upload-keep-min (60): deleted by the next upload
    os.utime(first_path, (two_hours_ago, two_hours_ago))
    assert _upload(client, "second.png", second).status_code == 200
    assert not os.path.exists(first_path) and "second.png" in _files(uploads)
