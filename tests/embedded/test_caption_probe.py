"""benchmarks/embedded_caption_probe.py: its altered captions change exactly one word, and on the packaged
embedded model the error it reports matches a direct computation and rises when the colour word is wrong."""

import pytest
import torch

from accel.editing.pipeline import encode_input
from accel.embedded.data import DIRECTIONS, parse_caption, render_clip, sample_spec
from accel.embedded.model import MAX_SEQUENCE_LENGTH, WEIGHTS_DIR, embedded

from ..scripts import load_benchmark


def _load_probe():
    return load_benchmark("embedded_caption_probe")


def test_variants_change_one_word():
    probe = _load_probe()
    for i in range(12):
        spec = sample_spec(77, i)
        v = probe.caption_variants(spec)
        true = parse_caption(v["true"])
        assert v["true"] == spec.caption and v["empty"] == ""
        for name, key in (("opposite_direction", "direction"), ("perpendicular_direction", "direction"),
                          ("other_colour", "colour")):
            words = parse_caption(v[name])
            assert words[key] != true[key]
            assert {k: w for k, w in words.items() if k != key} == {k: w for k, w in true.items() if k != key}
        a, b = DIRECTIONS[true["direction"]], DIRECTIONS[parse_caption(v["opposite_direction"])["direction"]]
        assert (a[0] + b[0], a[1] + b[1]) == (0, 0)


@pytest.mark.skipif(not (WEIGHTS_DIR / "model_index.json").is_file(), reason="embedded weights missing")
@torch.no_grad()
def test_probe_error_matches_direct_computation():
    probe = _load_probe()
    pipe = embedded()
    rows = probe.probe(pipe, [0.9], clips=2, batch=1)
    assert len(rows) == 1 and rows[0]["sigma"] == 0.9
    # the same error computed directly for clip 0 and 1 with their true captions
    errs = []
    for i in range(2):
        z, _ = encode_input(pipe, render_clip(sample_spec(77, i)))
        noise = torch.randn(z.shape[1:], generator=torch.Generator().manual_seed(i))[None]
        text, _ = pipe.encode_prompt(sample_spec(77, i).caption, do_classifier_free_guidance=False,
                                     max_sequence_length=MAX_SEQUENCE_LENGTH)
        v = pipe.transformer(hidden_states=0.1 * z + 0.9 * noise, timestep=torch.tensor([900.0]),
                             encoder_hidden_states=text, return_dict=False)[0]
        errs.append((v - (noise - z)).square().mean())
    assert rows[0]["error"]["true"] == pytest.approx(float(torch.stack(errs).mean()), rel=1e-3)
    # the shipped model reads the colour word (sigma 0.9, object cells: 2.82 vs 0.87 on 32 clips, 0.66 vs 0.47 here)
    assert rows[0]["object_error"]["other_colour"] > 1.2 * rows[0]["object_error"]["true"]
