"""A real browser drives ``accel app``: headless Chromium (Debian's package) through Playwright.

Starts the app on a free loopback port with the embedded model, fills the Generate tab, waits for the
result, checks the videos, figures and layout picture appear (and the video is served), then sends
an invalid size and checks the page shows the readable error; in the Edit tab it edits by edit words,
by a mask drawn with the mouse and from an uploaded video, and checks an edit word missing from the
prompt gives a readable error; uploads a file that is not media and checks the page shows why it was
refused. Screenshots go to ``tests/app/artifacts/``. Also checks over HTTP that files outside the
output folder are refused.

The first Generate at the page's defaults (nothing changed) must show a timing line and the backend that
ran, with one progress bar naming the run and the step; the frame slider must change the frame shown
(the difference picture checked against ``4 * |method - dense|`` of the pictures the page serves); an
example must load its settings into the fields; a bad method parameter must show its message under the
button.

Needs ``chromium`` on the PATH (``apt-get install -y chromium``; ``scripts/setup.sh`` installs it
when run as root). Without it the test is skipped, naming what is missing.
"""

import re
from pathlib import Path

import pytest

from .serving import CHROMIUM_ARGS, REPO, chromium_path, http_status, running_app

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    ARTIFACTS.mkdir(exist_ok=True)
    out = tmp_path_factory.mktemp("app_browser_out")
    uploads = tmp_path_factory.mktemp("app_browser_uploads")
    with running_app(ARTIFACTS / "server.log", "--out", str(out), "--uploads", str(uploads), "--queue", "2") as base:
        yield base, out, uploads


def test_only_the_output_folder_is_served(server):
    base, _out, _uploads = server
    for path in ("/etc/passwd", str(REPO / "pyproject.toml")):
        assert http_status(f"{base}/gradio_api/file={path}") in (403, 404), path


@pytest.fixture(scope="module")
def browser():
    exe = chromium_path()
    if exe is None:
        pytest.skip("no Chromium browser on the PATH: install Debian's package with `apt-get install -y chromium` "
                    "(scripts/setup.sh does when run as root); playwright's own browser download is not used")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (python) is not installed")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        yield b
        b.close()


def _open(browser, base: str, tab: str, ready: str):
    page = browser.new_page(viewport={"width": 1400, "height": 1200})
    page.set_default_timeout(90_000)  # the machine may be busy: UI steps, not generation, use this
    page.goto(base + "/")
    page.get_by_role("tab", name=tab).click()
    page.wait_for_selector(ready)
    return page


def test_generate_tab_in_a_browser(server, browser):
    base, out, uploads = server
    page = _open(browser, base, "Generate", "#generate")
    page.fill("#prompt textarea", "a green circle moving right")
    for field, value in (("height", "64"), ("width", "64"), ("frames", "5"), ("steps", "2")):
        page.fill(f"#{field} input", value)
    page.fill("#params textarea", "block_size=16 decay=0.5")
    page.click("#generate")
    figures = page.locator("#figures")
    figures.get_by_text("PSNR vs dense").wait_for(timeout=240_000)
    text = figures.inner_text()
    for name in ("latency (method)", "latency (dense)", "speedup", "SSIM vs dense", "executed density"):
        assert name in text, text
    assert re.search(r"speedup\s+\d+\.\d\d×", text), text
    assert re.search(r"executed density\s+0\.\d{3}", text), text
    assert "3×8×8" in text  # 5 frames -> (5 - 1) / 2 + 1 = 3 latent frames; 64 px / 4 (VAE) / 2 (patch) = 8
    for element in ("#video_method video", "#video_dense video", "#layout img"):
        src = page.locator(element).get_attribute("src")
        assert src, element
        response = page.request.get(src if src.startswith("http") else base + src)
        assert response.status == 200, (element, src)
        if "video" in element:
            assert response.body()[4:8] == b"ftyp"  # an MP4 file
    assert len(list(out.glob("generate-*/method.mp4"))) == 1
    page.screenshot(path=str(ARTIFACTS / "generate.png"), full_page=True)

    page.fill("#height input", "50")
    page.click("#generate")
    status = page.locator("#status")
    status.get_by_text("height must be a multiple of 16").wait_for(timeout=60_000)
    assert "Traceback" not in page.content()
    page.screenshot(path=str(ARTIFACTS / "error.png"), full_page=True)
    page.close()


def test_edit_tab_in_a_browser(server, browser, tmp_path_factory):
    base, out, uploads = server
    page = _open(browser, base, "Edit", "#edit")
    for field, value in (("e_height", "32"), ("e_width", "32"), ("e_frames", "5"), ("e_steps", "2")):
        page.fill(f"#{field} input", value)
    page.click("#edit")  # source "generate", edit words "red", alpha 1
    figures = page.locator("#e_figures")
    figures.get_by_text("background PSNR vs source").wait_for(timeout=240_000)
    text = figures.inner_text()
    assert "edit words" in text and re.search(r"edited area\s+\d+\.\d %", text), text
    for element in ("#e_video_source video", "#e_video_edited video", "#e_mask img"):
        assert page.locator(element).get_attribute("src"), element
    assert len(list(out.glob("edit-*/edited.mp4"))) == 1
    page.screenshot(path=str(ARTIFACTS / "edit.png"), full_page=True)

    # a drawn mask overrides the edit words
    page.get_by_text("edit mask (optional").click()
    page.locator("#e_drawn button[aria-label=Brush]").click()
    box = page.locator("#e_drawn canvas").first.bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx - 40, cy - 40)
    page.mouse.down()
    for i in range(12):
        page.mouse.move(cx - 40 + 80 * (i % 2), cy - 40 + 6 * i, steps=4)
    page.mouse.up()
    page.click("#edit")
    figures.get_by_text("drawn mask").wait_for(timeout=240_000)
    page.locator("#e_drawn button[aria-label='Clear canvas']").click()

    page.fill("#e_words input, #e_words textarea", "purple")
    page.click("#edit")
    page.locator("#e_status").get_by_text("the edit cannot run").wait_for(timeout=60_000)
    assert "purple" in page.locator("#e_status").inner_text()

    # an uploaded video: the server keeps it inside the output folder, the app inverts and edits it
    import numpy as np

    from accel.render.media import write_mp4

    clip = tmp_path_factory.mktemp("upload") / "clip.mp4"
    write_mp4(np.random.default_rng(0).random((7, 48, 48, 3)), clip, fps=8)
    page.fill("#e_words input, #e_words textarea", "red")
    page.get_by_role("radio", name="upload").check()
    # on a loaded machine the server round trips behind the upload take minutes (seen once at > 90 s in CI)
    page.locator("#e_upload").wait_for(state="visible", timeout=240_000)
    # a file that is not media (an HTML page named .mp4) is refused on arrival, deleted, and the page says why
    fake = clip.with_name("page.mp4")
    fake.write_bytes(b"<html><script>document.title='owned'</script></html>")
    page.set_input_files("#e_upload input[type=file]", str(fake))
    page.get_by_text("upload refused: 'page.mp4' is not a readable video; the file was deleted").wait_for(
        timeout=120_000)
    assert not list(uploads.rglob("page.mp4")) and not list(out.rglob("page.mp4"))
    page.screenshot(path=str(ARTIFACTS / "upload_refused.png"), full_page=True)
    page.set_input_files("#e_upload input[type=file]", str(clip))
    page.wait_for_function("() => document.querySelector('#e_upload').innerText.includes('clip.mp4')", timeout=240_000)
    page.click("#edit")
    page.locator("#e_figures").get_by_text("background PSNR vs source").wait_for(timeout=240_000)
    assert page.locator("#e_status").inner_text().startswith("done"), page.locator("#e_status").inner_text()
    assert list(uploads.rglob("clip.mp4")) and not list(out.rglob("clip.mp4"))  # uploads live outside --out
    assert len(list(out.glob("edit-*/edited.mp4"))) == 3  # words, drawn mask, upload
    page.close()


def _picture(page, base: str, element: str):
    """The picture an ``<img>`` of the page shows, fetched from the server, as int16 ``[H, W, 3]``."""
    import imageio.v2 as imageio
    import numpy as np

    src = page.locator(element).get_attribute("src")
    body = page.request.get(src if src.startswith("http") else base + src).body()
    return src, np.asarray(imageio.imread(body, format="PNG"))[..., :3].astype(np.int16)


def _check_difference(page, base: str):
    """The page's difference picture equals min(255, 4 |method - dense|) of the method and dense pictures it
    shows (each rounded to 8 bits before the test sees them: a few levels of rounding allowed)."""
    import numpy as np

    src, method = _picture(page, base, "#frame_method img")
    _, dense = _picture(page, base, "#frame_dense img")
    _, diff = _picture(page, base, "#frame_diff img")
    assert method.shape == dense.shape == diff.shape and method.shape[0] >= 256
    expected = np.minimum(255, 4 * np.abs(method - dense))
    assert np.abs(diff - expected).max() <= 4
    assert diff.max() > 16  # the method really differs from dense somewhere: the check is not vacuous
    return src, method


def test_first_generate_at_the_defaults(server, browser):
    base, out, _uploads = server
    page = _open(browser, base, "Generate", "#generate")
    assert page.locator("#height input").input_value() == "128" and page.locator("#frames input").input_value() == "17"
    page.click("#generate")
    progress = page.locator(".progress-text")
    progress.first.wait_for(timeout=120_000)
    page.get_by_text(re.compile(r"run \d of 8 \(\w+(, timed)?\): step \d of 8")).first.wait_for(timeout=240_000)
    assert progress.count() == 1  # one progress bar, not one per output panel
    figures = page.locator("#figures")
    figures.get_by_text("PSNR vs dense").wait_for(timeout=900_000)
    text = figures.inner_text()
    assert re.search(r"timing: median of [123] timed call\(s\) each, alternated", text), text
    assert re.search(r"attention backend\s+gather \(100% of the pairs\)", text), text
    assert re.search(r"speedup\s+\d+\.\d\d×", text) and "9×16×16" in text, text
    assert page.locator("#status").inner_text().startswith("done")
    src = page.locator("#video_side_by_side video").get_attribute("src")
    assert src and page.request.get(src if src.startswith("http") else base + src).body()[4:8] == b"ftyp"
    page.screenshot(path=str(ARTIFACTS / "generate_defaults.png"), full_page=True)

    # the frame slider: frame 0 is shown first, then frame 12 after moving it
    assert page.locator("#frame input[type=range]").get_attribute("max") == "16"
    src0, first = _check_difference(page, base)
    page.fill("#frame input[type=number]", "12")
    page.keyboard.press("Enter")
    page.wait_for_function(f"() => document.querySelector('#frame_method img').src != {src0!r}", timeout=120_000)
    page.wait_for_timeout(1000)  # the three pictures arrive in one update; let the last one settle
    _, later = _check_difference(page, base)
    assert later.shape == first.shape and (later != first).any()  # the circle moved between frames 0 and 12
    page.close()


def test_examples_and_messages_next_to_the_button(server, browser):
    from accel.app.examples import EXAMPLES

    base, _out, _uploads = server
    page = _open(browser, base, "Generate", "#generate")
    page.fill("#params textarea", "windw=3")
    page.click("#generate")
    status = page.locator("#status")
    status.get_by_text("radial does not take windw; it takes backend, decay").wait_for(timeout=60_000)
    # the message sits right under the button that caused it
    button, message = page.locator("#generate").bounding_box(), status.bounding_box()
    assert 0 <= message["y"] - (button["y"] + button["height"]) < 80, (button, message)
    if not EXAMPLES:
        pytest.skip("no examples offered")
    for example in EXAMPLES:
        page.locator("#examples").get_by_text(example.label).click()
        s = example.settings
        for field, value in (("height", s.height), ("width", s.width), ("frames", s.frames), ("steps", s.steps),
                             ("dense_steps", s.dense_steps)):
            page.wait_for_function(f"() => document.querySelector('#{field} input').value == '{value}'",
                                   timeout=30_000)
        assert page.locator("#params textarea").input_value() == s.method_params
        assert page.locator("#method input").input_value() == s.method
    page.screenshot(path=str(ARTIFACTS / "examples.png"), full_page=True)
    page.close()
