"""accel.editing.edit / edit_generated on the tiny FLUX and Wan pipelines: end to end as a user calls
them, the edit mask from edit words, bad input, and the flow-matching inversion round trip."""

import pytest
import torch

from accel.editing import edit, edit_generated
from accel.editing.inversion import invert
from accel.editing.pipeline import encode_input, token_grid
from tests.control.helpers import SOURCE, STEPS, TARGET, build, call_kwargs


@pytest.fixture(scope="module")
def flux():
    return build("flux")


@pytest.fixture(scope="module")
def wan():
    return build("wan")


def test_edit_words_give_a_token_grid_mask(flux, wan):
    for family, pipe in (("flux", flux), ("wan", wan)):
        kw = call_kwargs(family)
        grid = token_grid(pipe, height=kw["height"], width=kw["width"], num_frames=kw.get("num_frames"))
        result = edit_generated(pipe, SOURCE, TARGET, edit_words="red", alpha=1.0, steps=STEPS, seed=0, **kw)
        assert result.mask.dtype == torch.bool and tuple(result.mask.shape) == grid
        assert result.heatmap.shape == result.mask.shape
        assert torch.equal(result.mask, result.heatmap > 0.1)
        # per-frame normalisation, (x - min) / (max - min + 1e-6): every latent frame reaches 0 and ~1
        flat = result.heatmap.reshape(grid[0], -1)
        assert torch.allclose(flat.amin(1), torch.zeros(grid[0]))
        assert torch.allclose(flat.amax(1), torch.ones(grid[0]), atol=1e-3) and (flat.amax(1) < 1).all()
        assert not torch.equal(result.source, result.target)


def test_bad_input_is_refused_clearly(flux):
    kw = call_kwargs("flux")
    with pytest.raises(ValueError, match="'green' does not occur"):
        edit_generated(flux, SOURCE, TARGET, edit_words="green", steps=STEPS, **kw)
    with pytest.raises(ValueError, match="mask has shape"):
        edit_generated(flux, SOURCE, TARGET, mask=torch.ones(5, 5), steps=STEPS, **kw)
    for alpha in (-0.5, 1.01, "big"):
        with pytest.raises(ValueError, match="alpha"):
            edit_generated(flux, SOURCE, TARGET, alpha=alpha, steps=STEPS, **kw)
    with pytest.raises(ValueError, match="steps"):
        edit_generated(flux, SOURCE, TARGET, steps=0, **kw)
    with pytest.raises(ValueError, match="rule"):
        edit_generated(flux, SOURCE, TARGET, rule="p2p", steps=STEPS, **kw)
    with pytest.raises(ValueError, match="generator"):
        edit_generated(flux, SOURCE, TARGET, steps=STEPS, generator=torch.Generator(), **kw)
    with pytest.raises(TypeError, match="pipeline"):
        edit_generated(object(), SOURCE, TARGET)
    with pytest.raises(ValueError, match="multiple of"):
        edit(flux, torch.rand(3, 7, 7), SOURCE, TARGET, steps=STEPS)
    image = torch.rand(3, 8, 8)
    with pytest.raises(ValueError, match="source must be one of"):
        edit(flux, image, SOURCE, TARGET, steps=STEPS, source="trajectory")
    with pytest.raises(ValueError, match="inversion='heun' evaluates twice"):
        edit(flux, image, SOURCE, TARGET, steps=STEPS, inversion="heun")
    with pytest.raises(ValueError, match="mask_layers applies to source='latents'"):
        edit(flux, image, SOURCE, TARGET, steps=STEPS, mask_layers=None)
    with pytest.raises(ValueError, match="mask_softmax must be None or one of"):
        edit_generated(flux, SOURCE, TARGET, steps=STEPS, mask_softmax="all", **kw)


def test_user_mask_at_pixel_size_is_reduced_to_tokens(flux):
    kw = call_kwargs("flux")        # 8x8 pixels, 4x4 tokens (2x2 pixels per token)
    pixels = torch.zeros(8, 8)
    pixels[0, 0] = 1.0              # one pixel -> its token
    pixels[5:7, 4:6] = 1.0          # spans tokens (2, 2) and (3, 2)
    result = edit_generated(flux, SOURCE, TARGET, mask=pixels, alpha=0.0, steps=STEPS, **kw)
    expected = torch.zeros(1, 4, 4, dtype=torch.bool)
    expected[0, 0, 0] = expected[0, 2, 2] = expected[0, 3, 2] = True
    assert torch.equal(result.mask, expected)


def _roundtrip_error(pipe, latents, steps, method):
    inv = invert(pipe, latents, SOURCE, steps=steps, method=method, height=8, width=8, max_sequence_length=16)
    rec = pipe(prompt=SOURCE, latents=inv.noise, num_inference_steps=steps, height=8, width=8, max_sequence_length=16,
               output_type="latent").images
    return float((rec - latents).norm() / latents.norm())


def test_inversion_round_trip_reconstructs_the_input(flux):
    image = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0))
    latents, size = encode_input(flux, image)
    assert size == {"height": 8, "width": 8} and latents.shape == (1, 16, 4)
    coarse, fine = _roundtrip_error(flux, latents, 4, "heun"), _roundtrip_error(flux, latents, 16, "heun")
    euler = _roundtrip_error(flux, latents, 16, "euler")
    # measured on this tiny random model (relative L2): heun 4 steps 0.056, 16 steps 0.016; euler 16 steps 0.033
    assert fine < 0.03 and fine < coarse and fine < euler < 0.1


def test_real_edit_replays_the_source(flux):
    """source="latents" (ours): the source branch replays the inverted trajectory."""
    image = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(1))
    result = edit(flux, image, SOURCE, TARGET, edit_words="red", steps=3, output_type="pt", max_sequence_length=16,
                  source="latents", inversion="euler")
    assert len(result.inversion.trajectory) == 3
    # the source branch ends on the clean latent: its output is the VAE's reconstruction of the input
    latents, _ = encode_input(flux, image)
    z = flux._unpack_latents(latents, 8, 8, flux.vae_scale_factor)
    z = z / flux.vae.config.scaling_factor + flux.vae.config.shift_factor
    with torch.no_grad():
        recon = (flux.vae.decode(z).sample / 2 + 0.5).clamp(0, 1)[0]
    torch.testing.assert_close(result.source, recon, rtol=0, atol=1e-5)
    assert result.target.shape == result.source.shape and not torch.equal(result.target, result.source)


def test_real_video_edit_on_wan_replays_the_source(wan):
    video = torch.rand(9, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    kw = {k: v for k, v in call_kwargs("wan").items() if k not in ("height", "width", "num_frames")}
    result = edit(wan, video, SOURCE, TARGET, mask=torch.ones(32, 32), steps=2, source="latents", **kw)
    assert result.mask.all() and tuple(result.mask.shape) == (3, 2, 2)
    # the pipeline's own decoding of the clean latent (WanPipeline: latents * std + mean, then the VAE)
    vae = wan.vae
    mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1)
    with torch.no_grad():
        decoded = vae.decode(result.inversion.clean * std + mean).sample
    expected = wan.video_processor.postprocess_video(decoded, output_type="pt")[0]
    torch.testing.assert_close(result.source, expected, rtol=0, atol=1e-5)
    assert not torch.equal(result.target, result.source)
    with pytest.raises(ValueError, match="num_videos_per_prompt"):
        edit_generated(wan, SOURCE, TARGET, steps=STEPS, num_videos_per_prompt=2, **call_kwargs("wan"))
