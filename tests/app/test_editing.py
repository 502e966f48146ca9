"""The demo's Edit logic and upload checks, called directly (no browser).

References: accel.editing.edit / edit_generated called by hand with the same arguments, and
hand-computed pixel masks and PSNR.
"""

import dataclasses
import math

import numpy as np
import pytest
import torch

from accel.app.editing import EditSettings, mask_picture, run_edit
from accel.app.logic import AppInputError, GenerateSettings, run_generate
from accel.app.ui import drawn_mask
from accel.app.uploads import fit_media, read_media

SMALL = dict(height=32, width=32, frames=5, steps=2, seed=1)


def test_generated_edit_matches_edit_generated_by_hand(models, outputs):
    from accel.editing import edit_generated
    from accel.embedded.model import DEFAULT_GENERATION

    s = EditSettings(model="embedded", source="generate", source_prompt="a red circle moving left",
                     target_prompt="a blue circle moving left", edit_words="red", alpha=1.0, **SMALL)
    r = run_edit(s, models, outputs)
    pipe = models.pipeline("embedded")
    ref = edit_generated(pipe, s.source_prompt, s.target_prompt, edit_words=["red"], alpha=1.0, steps=2, seed=1,
                         height=32, width=32, num_frames=5, guidance_scale=DEFAULT_GENERATION["guidance_scale"],
                         max_sequence_length=DEFAULT_GENERATION["max_sequence_length"], output_type="np")
    np.testing.assert_allclose(r.source_frames, ref.source, atol=1e-6)
    np.testing.assert_allclose(r.edited_frames, ref.target, atol=1e-6)
    assert torch.equal(r.mask, ref.mask) and r.mask_origin == "edit words" and r.mask.shape == (3, 4, 4)
    # pixel mask by hand: token (t, i, j) covers pixels 8i..8i+7, 8j..8j+7 of frames {0} / {1, 2} / {3, 4}
    frames_of = {0: [0], 1: [1, 2], 2: [3, 4]}
    pixels = np.zeros((5, 32, 32), bool)
    for t, i, j in torch.nonzero(r.mask).tolist():
        for f in frames_of[t]:
            pixels[f, 8 * i:8 * i + 8, 8 * j:8 * j + 8] = True
    assert r.edited_fraction == pytest.approx(pixels.mean())
    if pixels.all():
        assert r.background_psnr_db is None
    else:
        err = ((r.edited_frames - r.source_frames) ** 2).mean(-1)
        per_frame = [10 * math.log10(1 / err[f][~pixels[f]].mean()) for f in range(5) if (~pixels[f]).any()]
        assert r.background_psnr_db == pytest.approx(np.mean(per_frame), rel=1e-5)  # per frame, then averaged
        assert -1.0 <= r.background_ssim <= 1.0
    assert -1.0 <= r.structure_ssim <= 1.0
    for path in (r.source_output, r.edited_output, r.mask_picture):
        assert outputs.contains(path) and path.is_file()


def test_uploaded_image_with_uploaded_mask_matches_edit_by_hand(models, outputs):
    import imageio.v2 as imageio

    tmp_path = outputs.root / "uploads"  # where the server keeps uploads: inside the output folder
    tmp_path.mkdir(exist_ok=True)

    from accel.editing import edit

    rng = np.random.default_rng(0)
    picture = (rng.random((40, 24, 3)) * 255).astype(np.uint8)  # resized to 32 x 32 by the app
    imageio.imwrite(tmp_path / "in.png", picture)
    mask = np.zeros((32, 32), np.uint8)
    mask[:, :16] = 255  # left half may change
    imageio.imwrite(tmp_path / "mask.png", mask)
    s = EditSettings(model="tiny-flux", source="upload", source_prompt="a cat", target_prompt="a dog", alpha=0.1,
                     upload=str(tmp_path / "in.png"), mask_file=str(tmp_path / "mask.png"), **SMALL)
    r = run_edit(s, models, outputs)
    assert r.kind == "image" and r.mask_origin == "uploaded mask"
    expected_input = fit_media(read_media(tmp_path / "in.png", max_bytes=10**6, max_frames=1), height=32, width=32,
                               frames=1)
    np.testing.assert_array_equal(r.source_frames, expected_input)
    ref = edit(models.pipeline("tiny-flux"), expected_input[0], "a cat", "a dog", mask=mask[None].astype(np.float32) / 255,
               alpha=0.1, steps=2, seed=1, guidance_scale=3.5, max_sequence_length=16, output_type="np")
    np.testing.assert_allclose(r.edited_frames[0], ref.target, atol=1e-5)  # [1, H, W, 3] vs [H, W, 3] input: rounding
    assert r.mask.shape == (1, 16, 16) and r.mask[0, :, :8].all() and not r.mask[0, :, 8:].any()
    assert r.edited_fraction == pytest.approx(0.5)
    mse = ((r.edited_frames - r.source_frames) ** 2).mean(-1)[0][:, 16:].mean()
    assert r.background_psnr_db == pytest.approx(10 * math.log10(1 / mse), rel=1e-5)


def test_last_result_and_drawn_mask(models, outputs, tmp_path):
    g = run_generate(GenerateSettings(model="tiny-flux", prompt="x", method="none", compare=False, **SMALL), models,
                     outputs)
    drawn = {"background": None, "layers": [np.zeros((64, 64, 4), np.uint8)], "composite": None}
    drawn["layers"][0][32:, :, 3] = 255  # bottom half drawn
    s = EditSettings(model="tiny-flux", source="last", source_prompt="a cat", target_prompt="a dog",
                     drawn_mask=drawn_mask(drawn), **SMALL)
    r = run_edit(s, models, outputs, last_output=str(g.output))
    assert r.mask_origin == "drawn mask" and r.mask[0, 8:].all() and not r.mask[0, :8].any()
    np.testing.assert_allclose(r.source_frames, g.frames, atol=1 / 255 + 1e-6)  # through the PNG file
    outside = tmp_path / "elsewhere.png"
    outside.write_bytes(g.output.read_bytes())
    with pytest.raises(AppInputError, match="the last result is not inside the app's output folder"):
        run_edit(s, models, outputs, last_output=str(outside))
    elsewhere = dataclasses.replace(s, source="upload", upload=str(outside))
    with pytest.raises(AppInputError, match="the uploaded file is not inside the app's output folder"):
        run_edit(elsewhere, models, outputs)
    with pytest.raises(AppInputError, match="the mask image is not inside the app's output folder"):
        run_edit(dataclasses.replace(s, drawn_mask=None, mask_file=str(outside)), models, outputs,
                 last_output=str(g.output))
    with pytest.raises(AppInputError, match="nothing was generated yet"):
        run_edit(s, models, outputs, last_output=None)


def test_uploads_are_read_only_from_the_upload_folder(models, outputs, tmp_path):
    import imageio.v2 as imageio

    uploads = tmp_path / "uploads"
    for folder in (uploads / "h", outputs.root, tmp_path / "uploads-evil"):
        folder.mkdir(parents=True, exist_ok=True)
        imageio.imwrite(folder / "in.png", np.zeros((32, 32, 3), np.uint8))
    s = EditSettings(model="tiny-flux", source="upload", source_prompt="a cat", target_prompt="a dog", **SMALL)
    for path in (outputs.root / "in.png", tmp_path / "uploads-evil" / "in.png", uploads / ".." / "uploads-evil" / "in.png"):
        with pytest.raises(AppInputError, match="the uploaded file is not inside the app's upload folder"):
            run_edit(dataclasses.replace(s, upload=str(path)), models, outputs, upload_root=uploads)
        with pytest.raises(AppInputError, match="the mask image is not inside the app's upload folder"):
            run_edit(dataclasses.replace(s, upload=str(uploads / "h" / "in.png"), mask_file=str(path)), models,
                     outputs, upload_root=uploads)


BAD = EditSettings(model="embedded", source="generate", source_prompt="a red circle", target_prompt="a blue circle",
                   edit_words="red", **SMALL)


@pytest.mark.parametrize("change, message", [
    (dict(source="camera"), "source must be one of"),
    (dict(source_prompt=" "), "source prompt must have 1 to 400 characters"),
    (dict(alpha=1.5), r"alpha must be a number in \[0, 1\], got 1.5"),
    (dict(alpha=float("nan")), r"alpha must be a number in \[0, 1\], got nan"),
    (dict(steps=float("inf")), "steps must be a whole number, got inf"),
    (dict(frames=6), r"frames must be 1 \+ k\*2"),
    (dict(height=20), "height must be a multiple of 16"),
    (dict(source="upload"), "no file was uploaded"),
    (dict(edit_words="green"), "the edit cannot run"),
    (dict(drawn_mask=np.ones((8, 8)), mask_file="__mask__"), "either an uploaded mask or a drawn mask"),
])
def test_bad_edit_input(models, outputs, tmp_path, change, message):
    if change.get("mask_file") == "__mask__":
        import imageio.v2 as imageio

        imageio.imwrite(outputs.root / "m.png", np.full((8, 8), 255, np.uint8))
        change = dict(change, mask_file=str(outputs.root / "m.png"))
    with pytest.raises(AppInputError, match=message):
        run_edit(dataclasses.replace(BAD, **change), models, outputs)


def test_mask_picture():
    mask = torch.zeros(3, 2, 2, dtype=torch.bool)
    mask[0, 0, 0] = mask[2, 1, 1] = True
    pic = mask_picture(mask, target=4)
    assert pic.shape == (4, 3 * 4 + 2 * 2, 3)
    assert (pic[:2, :2] == 255).all() and (pic[:2, 2:4] == 0).all() and (pic[:, 4:6] == 128).all()


def test_read_media_checks(tmp_path):
    import imageio.v2 as imageio

    from accel.render.media import write_mp4

    frames = np.random.default_rng(1).random((7, 16, 16, 3)).astype(np.float32)
    write_mp4(frames, tmp_path / "v.mp4", fps=8)
    clip = read_media(tmp_path / "v.mp4", max_bytes=10**6, max_frames=5)
    assert clip.shape == (5, 16, 16, 3) and clip.dtype == np.float32 and 0 <= clip.min() <= clip.max() <= 1
    imageio.imwrite(tmp_path / "i.png", (frames[0] * 255).astype(np.uint8))
    np.testing.assert_array_equal(read_media(tmp_path / "i.png", max_bytes=10**6, max_frames=5)[0],
                                  (frames[0] * 255).astype(np.uint8) / np.float32(255))
    (tmp_path / "fake.png").write_bytes(b"not an image at all")
    (tmp_path / "fake.mp4").write_bytes(b"not a video at all")
    (tmp_path / "data.pkl").write_bytes(b"\x80\x04")
    for name, message in (("fake.png", "is not a readable image"), ("fake.mp4", "is not a readable video"),
                          ("data.pkl", "only images"), ("missing.png", "missing or not a regular file")):
        with pytest.raises(AppInputError, match=message):
            read_media(tmp_path / name, max_bytes=10**6, max_frames=5)
    with pytest.raises(AppInputError, match="the limit is"):
        read_media(tmp_path / "v.mp4", max_bytes=100, max_frames=5)
    resized = fit_media(clip, height=32, width=48, frames=3)
    assert resized.shape == (3, 32, 48, 3)
    with pytest.raises(AppInputError, match="the input has 5 frame"):
        fit_media(clip, height=32, width=32, frames=7)
