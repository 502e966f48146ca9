"""The adherence check against clips whose colour and motion are known (the data generator's truth)."""

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from accel.embedded.adherence import analyze_clip, check_adherence, held_out_prompts, summarize
from accel.embedded.data import (
    BACKGROUNDS,
    COLOURS,
    DIRECTIONS,
    SHAPES,
    caption_for,
    held_out_specs,
    object_track,
    parse_caption,
    render_clip,
    sample_spec,
    training_captions,
)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), index=st.integers(0, 10**6))
def test_generator_clips_are_classified_as_their_caption(seed, index):
    spec = sample_spec(seed, index, exclude_held_out=False)
    clip = render_clip(spec)
    result = check_adherence(clip, spec.caption)
    assert result.analysis.colour == spec.colour
    assert result.analysis.direction == spec.direction
    assert result.colour_ok and result.direction_ok


@pytest.mark.parametrize("colour,direction", list(itertools.product(COLOURS, DIRECTIONS)))
def test_every_colour_and_direction(colour, direction):
    for k, (shape, background) in enumerate(itertools.product(SHAPES, BACKGROUNDS)):
        if k % 4:  # a quarter of the shape/background pairs keeps the test fast
            continue
        spec = sample_spec(3, k, combo=(colour, shape, direction, background))
        analysis = analyze_clip(render_clip(spec))
        assert (analysis.colour, analysis.direction) == (colour, direction), spec


def test_centroid_follows_ground_truth_track():
    spec = sample_spec(1, 2, combo=("blue", "circle", "right", "checkered"))
    analysis = analyze_clip(render_clip(spec, num_frames=17))
    truth = object_track(spec, 17)
    # Centroid of an anti-aliased, thresholded disc: within a pixel of the true centre.
    assert np.nanmax(np.abs(analysis.centroids - truth)) < 1.0
    dx, dy = analysis.displacement
    assert dx == pytest.approx(spec.distance, abs=1.0) and abs(dy) < 1.0


def test_wrong_prompt_is_detected():
    spec = sample_spec(0, 0, combo=("red", "square", "up", "plain"))
    clip = render_clip(spec)
    assert not check_adherence(clip, "a green square moving up").colour_ok
    assert not check_adherence(clip, "a red square moving down").direction_ok
    result = check_adherence(clip, "a square")  # names neither: nothing can be "correct"
    assert result.expected_colour is None and not result.colour_ok and not result.direction_ok


def test_static_and_empty_clips():
    spec = sample_spec(0, 1, combo=("yellow", "circle", "left", "striped"))
    still = np.repeat(render_clip(spec, num_frames=1), 9, axis=0)
    analysis = analyze_clip(still)
    assert analysis.colour == "yellow" and analysis.direction is None
    grey = np.full((9, 64, 64, 3), 0.4, dtype=np.float32)
    empty = analyze_clip(grey)
    assert empty.colour is None and empty.direction is None and empty.object_fraction == 0.0


def test_input_forms_agree():
    spec = sample_spec(2, 5, combo=("magenta", "diamond", "down", "checkered"))
    clip = render_clip(spec, num_frames=9)
    ref = analyze_clip(clip)
    as_uint8 = analyze_clip((clip * 255).round().astype(np.uint8))
    as_tensor = analyze_clip(torch.from_numpy(clip))
    as_list = analyze_clip(list(clip))
    for other in (as_uint8, as_tensor, as_list):
        assert (other.colour, other.direction) == (ref.colour, ref.direction)
    single = analyze_clip(clip[0])
    assert single.colour == "magenta" and single.direction is None


@pytest.mark.parametrize(
    "frames,kwargs",
    [
        (np.zeros((4, 8, 8)), {}),
        (np.zeros((4, 8, 8, 4)), {}),
        (np.full((2, 8, 8, 3), np.nan), {}),
        (np.zeros((2, 8, 8, 3)), {"min_saturation": 1.5}),
        (np.zeros((2, 8, 8, 3)), {"min_pixels": 0}),
    ],
)
def test_bad_input_raises(frames, kwargs):
    with pytest.raises(ValueError):
        analyze_clip(frames, **kwargs)


def test_bad_prompt_and_summary_inputs():
    with pytest.raises(ValueError):
        check_adherence(np.zeros((2, 8, 8, 3)), None)
    with pytest.raises(ValueError):
        summarize([])
    with pytest.raises(ValueError):
        held_out_prompts(0)


def test_summary_fractions():
    spec = sample_spec(0, 3, combo=("cyan", "triangle", "left", "plain"))
    clip = render_clip(spec)
    results = [check_adherence(clip, "a cyan triangle moving left"), check_adherence(clip, "a red triangle moving up")]
    assert summarize(results) == {"n": 2, "colour_accuracy": 0.5, "direction_accuracy": 0.5, "both_accuracy": 0.5}


def test_dataset_is_deterministic_and_held_out_is_held_out():
    a, b = sample_spec(9, 42), sample_spec(9, 42)
    assert a == b and np.array_equal(render_clip(a, num_frames=3), render_clip(b, num_frames=3))
    assert sample_spec(9, 43) != a
    held = held_out_specs()
    assert len(held) == len(set(held)) == 50
    prompts = held_out_prompts()
    assert len(prompts) == 50 and not set(prompts) & set(training_captions())
    for i in range(300):
        assert sample_spec(0, i).caption not in prompts
    assert parse_caption("A Blue square, moving UP!") == {
        "colour": "blue", "shape": "square", "direction": "up", "background": None}
    with pytest.raises(ValueError):
        caption_for("purple", "circle", "left")
    with pytest.raises(ValueError):
        sample_spec(-1, 0)


def test_object_colour_reads_only_the_region():
    """Two painted objects, a small red one and a large blue one: the whole clip votes blue, the red square's
    region red, an empty region names nothing (the painted colours are the truth)."""
    from accel.embedded.adherence import object_colour

    clip = np.full((3, 64, 64, 3), 0.5, dtype=np.float32)
    clip[:, 4:16, 4:16] = COLOURS["red"]
    clip[:, 30:60, 30:60] = COLOURS["blue"]
    red_area = np.zeros((3, 64, 64), dtype=bool)
    red_area[:, 0:20, 0:20] = True
    assert object_colour(clip) == "blue" == analyze_clip(clip).colour
    assert object_colour(clip, red_area) == "red"
    assert object_colour(clip, red_area[0]) == "red"          # one frame's region for every frame
    empty = np.zeros((64, 64), dtype=bool)
    empty[20:28, 20:28] = True
    assert object_colour(clip, empty) is None
    with pytest.raises(ValueError, match="region"):
        object_colour(clip, np.ones((32, 32), dtype=bool))
    with pytest.raises(ValueError, match="min_pixels"):
        object_colour(clip, min_pixels=0)
