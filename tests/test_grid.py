"""TokenLayout: validation, spans, padding masks, coordinates."""

import pytest
import torch

from accel.grid import TokenLayout


def test_spans_text_first_and_last():
    first = TokenLayout((2, 3, 4), 5, "first")
    assert first.num_video_tokens == 24 and first.seq_len == 29
    assert first.video_slice == slice(5, 29) and first.text_slice == slice(0, 5)
    last = TokenLayout((2, 3, 4), 5, "last")
    assert last.video_slice == slice(0, 24) and last.text_slice == slice(24, 29)
    none = TokenLayout((1, 2, 2))
    assert none.video_slice == slice(0, 4) and none.text_slice == slice(4, 4) and none.seq_len == 4


def test_key_padding_mask_places_text_correctly():
    mask = torch.tensor([[True, False], [True, True]])
    last = TokenLayout((1, 1, 3), 2, "last", mask)
    assert last.key_padding_mask().tolist() == [[True, True, True, True, False], [True] * 5]
    first = TokenLayout((1, 1, 3), 2, "first", mask[:1])
    assert first.key_padding_mask(batch=2).tolist() == [[True, False, True, True, True]] * 2
    assert TokenLayout((1, 1, 3), 2, "first").key_padding_mask() is None


def test_video_coords_row_major_and_permuted():
    layout = TokenLayout((2, 2, 3))
    coords = layout.video_coords()
    assert coords[0].tolist() == [0, 0, 0] and coords[4].tolist() == [0, 1, 1] and coords[11].tolist() == [1, 1, 2]
    perm = torch.arange(12).flip(0)
    assert TokenLayout((2, 2, 3), permutation=perm).video_coords()[0].tolist() == [1, 1, 2]


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(grid=(0, 2, 2)), ValueError, "grid must be a tuple of three ints >= 1"),
        (dict(grid=(2, 2)), ValueError, "grid must be a tuple of three ints"),
        (dict(grid=(1.0, 2, 2)), ValueError, "grid must be"),
        (dict(grid=(1, 2, 2), text_len=-1), ValueError, "text_len must be an int >= 0"),
        (dict(grid=(1, 2, 2), text_len=3), ValueError, "text_side must be 'first' or 'last'"),
        (dict(grid=(1, 2, 2), text_len=3, text_side="middle"), ValueError, "got 'middle'"),
        (dict(grid=(1, 2, 2), text_side="first"), ValueError, "text_side must be None when text_len is 0"),
        (dict(grid=(1, 2, 2), text_mask=torch.ones(1, 0, dtype=torch.bool)), ValueError, "text_mask must be None"),
        (dict(grid=(1, 2, 2), text_len=3, text_side="last", text_mask=torch.ones(1, 3)), ValueError, "torch.bool"),
        (dict(grid=(1, 2, 2), text_len=3, text_side="last", text_mask=torch.ones(1, 4, dtype=torch.bool)),
         ValueError, r"text_mask must have shape \[B, text_len=3\]"),
        (dict(grid=(1, 2, 2), text_len=3, text_side="last", text_mask=[[True] * 3]), TypeError, "text_mask"),
        (dict(grid=(1, 2, 2), permutation=torch.arange(3)), ValueError, "permutation must be an int64 tensor"),
        (dict(grid=(1, 2, 2), permutation=torch.tensor([0, 1, 1, 2])), ValueError, "exactly once"),
        (dict(grid=(1, 2, 2), permutation=torch.tensor([0, 1, 2, 9])), ValueError, "exactly once"),
    ],
)
def test_validation(kwargs, error, match):
    with pytest.raises(error, match=match):
        TokenLayout(**kwargs)


def test_check_sequence_names_both_lengths():
    layout = TokenLayout((2, 3, 4), 5, "first")
    layout.check_sequence(29)
    with pytest.raises(ValueError, match="q has 30 tokens but the token layout describes 29"):
        layout.check_sequence(30, name="q")


def test_static_key_and_instance_cache():
    a, b = TokenLayout((1, 2, 2), 2, "first"), TokenLayout((1, 2, 2), 2, "first")
    assert a.static_key() == b.static_key()
    assert TokenLayout((1, 2, 2), 2, "last").static_key() != a.static_key()
    a.cache["x"] = 1
    assert "x" not in b.cache
    masked = a.with_text_mask(torch.ones(1, 2, dtype=torch.bool))
    assert masked.has_text_padding and masked.grid == a.grid


def test_padded_permutation():
    """A permutation may hold -1 padding positions: sizes, key validity and coordinates follow."""
    perm = torch.tensor([3, 0, -1, 1, 2, -1])
    layout = TokenLayout((1, 2, 2), 3, "last", torch.tensor([[True, True, False]]), perm)
    assert layout.num_video_tokens == 4 and layout.num_video_positions == 6 and layout.has_video_padding
    assert layout.seq_len == 9 and layout.text_slice == slice(6, 9) and layout.video_slice == slice(0, 6)
    assert layout.key_padding_mask(2).tolist() == [[True, True, False, True, True, False, True, True, False]] * 2
    assert layout.video_coords()[:3].tolist() == [[0, 1, 1], [0, 0, 0], [-1, -1, -1]]
    first = TokenLayout((1, 2, 2), 2, "first", permutation=perm)
    assert first.key_padding_mask().tolist() == [[True, True, True, True, False, True, True, False]]
    assert TokenLayout((1, 2, 2), permutation=torch.tensor([3, 0, 1, 2])).key_padding_mask() is None
    with pytest.raises(ValueError, match="exactly once"):
        TokenLayout((1, 2, 2), permutation=torch.tensor([3, 0, -1, 1, -2, 2]))
    with pytest.raises(ValueError, match="exactly once"):
        TokenLayout((1, 2, 2), permutation=torch.tensor([3, 0, -1, 1, -1, 1]))
    with pytest.raises(ValueError, match=r"P >= T\*H\*W = 4"):
        TokenLayout((1, 2, 2), permutation=torch.tensor([3, 0, 1]))
