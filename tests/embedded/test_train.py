"""The embedded model's training script: resuming is exact, the exported weights are the moving average."""

import json

import pytest
import torch
from safetensors.torch import load_file

from accel.embedded import model as emb
from accel.embedded.data import render_clip, sample_spec
from accel.embedded.train import encode_dataset, main, object_crops, object_masks, weighted_flow_loss


def _tiny_dataset(work):
    """A stand-in for the ``latents`` stage: 3 clips of a 1x4x4 latent grid with two captions."""
    gen = torch.Generator().manual_seed(0)
    dim = emb.TRANSFORMER_CONFIG["text_dim"]
    channels = emb.TRANSFORMER_CONFIG["in_channels"]
    captions = ["a red circle moving left", "a blue square moving up", "a red circle moving left"]
    embeds = {c: torch.randn(6, dim, generator=gen) for c in set(captions) | {""}}
    torch.save({"latents": torch.randn(3, channels, 1, 4, 4, generator=gen).half(), "captions": captions,
                "mean": torch.zeros(channels), "std": torch.ones(channels), "embeds": embeds,
                "masks": torch.rand(3, 1, 4, 4, generator=gen) < 0.3}, work / "dataset.pt")


def _run(work, out, steps, ema_decay="0.9"):
    args = ["--work", str(work), "--out", str(out), "--stages", "transformer,export", "--steps", str(steps),
            "--batch", "2", "--log-every", "1", "--export-every", "0", "--ema-decay", ema_decay, "--threads", "1",
            "--crop-steps", "0"]
    assert main(args) == 0
    return torch.load(work / "transformer.pt", weights_only=False)


def test_resumed_training_equals_an_uninterrupted_run(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for w in (a, b):
        w.mkdir()
        _tiny_dataset(w)
    straight = _run(a, tmp_path / "out_a", 4)
    _run(b, tmp_path / "out_b", 2)
    resumed = _run(b, tmp_path / "out_b", 4)
    assert straight["step"] == resumed["step"] == 4 and straight["ema_count"] == resumed["ema_count"] == 4
    for name, value in straight["model"].items():
        assert torch.equal(value, resumed["model"][name]), name
    for name, value in straight["ema"].items():
        assert torch.equal(value, resumed["ema"][name]), name


def test_export_holds_the_moving_average(tmp_path):
    work = tmp_path / "w"
    work.mkdir()
    _tiny_dataset(work)
    init = {k: v.clone() for k, v in emb.build_pipeline(seed=0).transformer.state_dict().items()}
    ckpt = _run(work, tmp_path / "out", 3, ema_decay="0.9")
    # the exported file must hold exactly the checkpoint's average, and that average is neither the raw
    # weights nor the initial ones
    exported = load_file(tmp_path / "out" / "transformer" / "diffusion_pytorch_model.safetensors")
    moved = 0
    for name, value in ckpt["ema"].items():
        assert torch.equal(exported[name], value), name
        if value.is_floating_point() and not torch.equal(ckpt["model"][name], value):
            moved += 1
    assert moved > 0  # the average differs from the raw weights
    some = next(k for k, v in init.items() if v.is_floating_point() and v.numel() > 1)
    assert not torch.equal(ckpt["ema"][some], init[some])
    info = json.loads((tmp_path / "out" / "training_info.json").read_text())
    assert info["ema_steps"] == 3 and info["transformer_steps"] == 3


def test_exported_average_equals_a_hand_computed_moving_average(tmp_path):
    """The raw weights after each of 3 steps (one step per run: resuming is exact, tested above) averaged by
    hand with the documented decay ``min(ema_decay, (1 + n) / (10 + n))`` from the initial weights: the
    exported transformer must hold exactly that."""
    work = tmp_path / "w"
    work.mkdir()
    _tiny_dataset(work)
    init = {k: v.clone() for k, v in emb.build_pipeline(seed=0).transformer.state_dict().items()}
    raw = [_run(work, tmp_path / "out", steps, ema_decay="0.9")["model"] for steps in (1, 2, 3)]
    want = {k: v.double() for k, v in init.items() if v.is_floating_point()}
    for n, weights in enumerate(raw, start=1):
        decay = min(0.9, (1 + n) / (10 + n))  # 2/11, 3/12, 4/13: below 0.9, the warm-up part of the rule
        for k in want:
            want[k] = decay * want[k] + (1 - decay) * weights[k].double()
    exported = load_file(tmp_path / "out" / "transformer" / "diffusion_pytorch_model.safetensors")
    changed = 0
    for k, value in want.items():
        torch.testing.assert_close(exported[k].double(), value, rtol=1e-5, atol=1e-7, msg=k)
        changed += not torch.allclose(value, raw[-1][k].double())
    assert changed > 0  # the average is not the last raw weights


def test_bad_ema_decay(tmp_path):
    with pytest.raises(ValueError, match="--ema-decay must be in"):
        main(["--work", str(tmp_path), "--stages", "export", "--ema-decay", "1.5"])


def test_bad_device(tmp_path):
    with pytest.raises(ValueError, match="--device"):
        main(["--work", str(tmp_path), "--stages", "export", "--device", "tpu:0:x"])


def test_object_masks_cover_every_object_pixel():
    masks = object_masks(4, 3)
    assert masks.shape == (3, 9, 32, 32) and masks.dtype == torch.bool
    for i in range(3):
        frames = render_clip(sample_spec(4, i))
        f, y, x = ((frames.max(-1) - frames.min(-1)) > 0.1).nonzero()
        t = (f + 1) // 2  # frame 0 -> latent 0; frames 2t-1, 2t -> latent t
        assert masks[i, t, y // 4, x // 4].all()
        # and little else: the object is ~5% of a frame, the mask is dilated by one cell
        assert 0.02 < masks[i].float().mean() < 0.2


def test_encoded_dataset_masks_equal_rerendered_ones(tmp_path):
    # the latents stage keeps the masks of the clips it renders; parts from before that are re-rendered
    pipe = emb.build_pipeline(seed=0)
    encode_dataset(pipe, tmp_path, clips=2, seed=3, chunk=1)
    expected = object_masks(3, 2)
    assert torch.equal(torch.load(tmp_path / "dataset.pt")["masks"], expected)
    part = sorted((tmp_path / "latent_parts").glob("*.pt"))[0]
    old = torch.load(part)
    del old["masks"]
    torch.save(old, part)
    encode_dataset(pipe, tmp_path, clips=2, seed=3, chunk=1)
    assert torch.equal(torch.load(tmp_path / "dataset.pt")["masks"], expected)


def test_weighted_flow_loss_against_elementwise_weights():
    gen = torch.Generator().manual_seed(0)
    pred, target = torch.randn(2, 3, 2, 4, 4, generator=gen), torch.randn(2, 3, 2, 4, 4, generator=gen)
    mask = torch.rand(2, 2, 4, 4, generator=gen) < 0.25
    w = torch.where(mask, 5.0, 1.0)[:, None].expand_as(pred)
    expected = (w * (pred - target) ** 2).sum() / w.sum()
    assert torch.allclose(weighted_flow_loss(pred, target, mask, 4.0), expected)
    assert torch.allclose(weighted_flow_loss(pred, target, mask, 0.0), ((pred - target) ** 2).mean())
    assert torch.allclose(weighted_flow_loss(pred, target, None, 4.0), ((pred - target) ** 2).mean())


def test_bad_object_weight(tmp_path):
    with pytest.raises(ValueError, match="--object-weight must be >= 0"):
        main(["--work", str(tmp_path), "--stages", "export", "--object-weight", "-1"])


def test_object_crops_are_the_windows_around_the_object():
    # latents whose value is the cell's own (t, y, x) index, so a crop tells where it was taken
    t, h, w = 4, 12, 12
    grid = torch.arange(t * h * w, dtype=torch.float32).view(1, 1, t, h, w)
    latents = grid.expand(3, 2, t, h, w).clone()
    masks = torch.zeros(3, t, h, w, dtype=torch.bool)
    masks[0, :, 4:7, 5:8] = True      # centred at cell (5, 6): window of 6 starts at (5.5 - 3, 6.5 - 3)
    masks[1, :, 0:2, 10:12] = True    # in the corner: the window is shifted inside the grid
    masks[2, 3, 6, 6] = True          # only in a frame the crop does not keep: centre of the grid
    idx = torch.tensor([0, 1, 2, 0])
    crops, mcrops = object_crops(latents, masks, idx, torch.Generator().manual_seed(0), frames=2, cells=6, jitter=0)
    assert crops.shape == (4, 2, 2, 6, 6) and mcrops.shape == (4, 2, 6, 6)
    for b, (y0, x0) in enumerate([(3, 4), (0, 6), (3, 3), (3, 4)]):
        assert torch.equal(crops[b], latents[idx[b], :, :2, y0:y0 + 6, x0:x0 + 6]), b
        assert torch.equal(mcrops[b], masks[idx[b], :2, y0:y0 + 6, x0:x0 + 6]), b
    assert mcrops[0].sum() == masks[0, :2].sum()  # the whole object is inside its window
    # with jitter the window moves by at most `jitter` cells and still lies inside the grid
    crops, _ = object_crops(latents, masks, torch.zeros(400, dtype=torch.long), torch.Generator().manual_seed(1),
                            frames=1, cells=6, jitter=2)
    origins = {(int(c[0, 0, 0, 0]) // w, int(c[0, 0, 0, 0]) % w) for c in crops}
    assert origins == {(y, x) for y in range(1, 6) for x in range(2, 7)}
    with pytest.raises(ValueError, match="does not fit"):
        object_crops(latents, masks, idx, torch.Generator(), frames=5, cells=6, jitter=0)


def test_resuming_inside_the_crop_curriculum_equals_an_uninterrupted_run(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for w in (a, b):
        w.mkdir()
        _tiny_dataset(w)
    extra = ["--crop-steps", "3", "--crop-batch", "3", "--crop-frames", "1", "--crop-cells", "2"]

    def run(work, out, steps):
        args = ["--work", str(work), "--out", str(out), "--stages", "transformer,export", "--steps", str(steps),
                "--batch", "2", "--log-every", "1", "--export-every", "0", "--threads", "1", *extra]
        assert main(args) == 0
        return torch.load(work / "transformer.pt", weights_only=False)

    straight = run(a, tmp_path / "out_a", 4)
    run(b, tmp_path / "out_b", 2)
    resumed = run(b, tmp_path / "out_b", 4)
    for name, value in straight["model"].items():
        assert torch.equal(value, resumed["model"][name]), name
    info = json.loads((tmp_path / "out_b" / "training_info.json").read_text())
    assert info["crop_steps"] == 3 and info["crop_cells"] == 2


@pytest.mark.parametrize("option, value, message", [("--crop-steps", "-1", "--crop-steps must be >= 0"),
                                                    ("--crop-frames", "10", "--crop-frames must be in 1..9"),
                                                    ("--crop-cells", "7", "--crop-cells must be even"),
                                                    ("--crop-cells", "34", "--crop-cells must be even"),
                                                    ("--crop-batch", "0", "--crop-batch must be > 0")])
def test_bad_crop_options(tmp_path, option, value, message):
    with pytest.raises(ValueError, match=message):
        main(["--work", str(tmp_path), "--stages", "export", option, value])
