"""Edit-word token positions: tokenizer character offsets, the prefix-counting fallback for tokenizers
without offsets, prompt templates with cropped prefixes (HunyuanVideo), and clear errors."""

import pytest

from accel.control.mask import edit_token_positions, find_word_spans, resize_user_mask
from accel.embedded.model import build_tokenizer
from accel.pipelines.tiny import _llama_tokenizer, _t5_tokenizer


class _NoOffsets:
    """A tokenizer wrapper that, like Python ('slow') tokenizers, cannot return offsets."""

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, text, return_offsets_mapping=False, **kwargs):
        if return_offsets_mapping:
            raise NotImplementedError("return_offset_mapping is not available")
        return self.inner(text, **kwargs)


def test_character_tokenizers_by_offsets_and_by_fallback():
    # tiny T5: one token per character, a word-initial '▁c' piece; "a red monkey" -> ▁a ▁r e d ▁m o n k e y </s>
    t5 = _t5_tokenizer()
    assert edit_token_positions(t5, "a red monkey", "red") == [1, 2, 3]
    assert edit_token_positions(_NoOffsets(t5), "a red monkey", "red") == [1, 2, 3]
    assert edit_token_positions(t5, "a red monkey", ["red", "monkey"]) == [1, 2, 3, 4, 5, 6, 7, 8, 9]
    # tiny Llama: a separate '▁' token before each word: ▁ a ▁ r e d ...
    llama = _llama_tokenizer()
    assert edit_token_positions(llama, "a red monkey", "red") == [3, 4, 5]
    # a template whose first two tokens the pipeline crops: "ab {}" -> ▁ a b ▁ a ▁ r e d ..., minus 2
    assert edit_token_positions(llama, "a red monkey", "red", template="ab {}", crop_start=2) == [4, 5, 6]


def test_word_level_tokenizer_of_the_embedded_model():
    tok = build_tokenizer()           # known words are single tokens
    assert edit_token_positions(tok, "a red circle moving left", "red") == [1]
    assert edit_token_positions(_NoOffsets(tok), "a red circle moving left", "circle") == [2]
    assert edit_token_positions(tok, "A Red circle", "red", match="words") == [1]      # ours: case-insensitive
    with pytest.raises(ValueError, match="does not occur \\(case-sensitive\\)"):
        edit_token_positions(tok, "A Red circle", "red")                             # the release's: case-sensitive


def test_release_word_rule_first_substring_occurrence():
    # ConsistEdit's release finds the first occurrence of the word as a substring (str.find) and takes every
    # token overlapping those characters; ours takes every whole-word occurrence
    t5 = _t5_tokenizer()  # one token per character after a word-initial piece: "a red hat, red" ...
    prompt = "a red hat and a red box"
    assert find_word_spans(prompt, "red") == [(2, 5)]
    assert find_word_spans(prompt, "red", match="words") == [(2, 5), (16, 19)]
    first = edit_token_positions(t5, prompt, "red")
    every = edit_token_positions(t5, prompt, "red", match="words")
    assert first and set(first) < set(every)
    assert find_word_spans("a reddish circle", "red") == [(2, 5)]  # a substring counts for the release
    with pytest.raises(ValueError, match="match must be one of"):
        find_word_spans("a red circle", "red", match="all")


def test_word_errors():
    with pytest.raises(ValueError, match="'blue' does not occur"):
        find_word_spans("a red circle", "blue")
    with pytest.raises(ValueError, match="whole word"):
        find_word_spans("a reddish circle", "red", match="words")
    with pytest.raises(ValueError, match="non-empty"):
        find_word_spans("a red circle", [])
    with pytest.raises(ValueError, match="map to no text token"):
        edit_token_positions(_t5_tokenizer(), "a red monkey", "monkey", max_length=4)


def test_user_mask_sizes():
    import torch

    grid = (3, 2, 2)
    assert resize_user_mask(torch.tensor([[1, 0], [0, 0]]), grid).sum() == 3          # token grid, every frame
    frames = torch.zeros(9, 32, 32)
    frames[5:9, 20:, 20:] = 1                                                          # video frames 5..8 -> latent 2
    m = resize_user_mask(frames, grid, pixel_size=(32, 32), num_frames=9, temporal_factor=4)
    assert m[2, 1, 1] and m.sum() == 1
    with pytest.raises(ValueError, match="allowed"):
        resize_user_mask(torch.ones(4, 4), grid, pixel_size=(32, 32))
    with pytest.raises(TypeError, match="mask must be"):
        resize_user_mask("mask.png", grid)
