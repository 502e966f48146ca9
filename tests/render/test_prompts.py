import json

import pytest

from accel.render.prompts import read_prompt_file, slug


def test_text_file(tmp_path):
    f = tmp_path / "p.txt"
    f.write_text("# a comment\n\na red circle moving left\n  a blue square  \n")
    items = read_prompt_file(f, base_seed=10)
    assert [i.prompt for i in items] == ["a red circle moving left", "a blue square"]
    assert [i.seed for i in items] == [10, 11]
    assert [i.line for i in items] == [3, 4]
    assert [i.name for i in items] == ["0000-a-red-circle-moving-left", "0001-a-blue-square"]
    assert all(i.error is None for i in items)


def test_jsonl_fields_and_bad_lines(tmp_path):
    (tmp_path / "img.png").write_bytes(b"not checked here")
    lines = [
        {"prompt": "a cat", "negative_prompt": "blurry", "seed": 7, "height": 32, "width": 48, "frames": 5,
         "steps": 3, "guidance": 2, "name": "cat", "image": "img.png"},
        "{not json",
        {"prompt": "x", "colour": "red"},
        {"prompt": ""},
        {"prompt": "dup", "name": "cat"},
        {"prompt": "neg seed", "seed": -1},
        {"prompt": "ok", "num_frames": 9},
    ]
    f = tmp_path / "p.jsonl"
    f.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    items = read_prompt_file(f, base_seed=100)
    assert len(items) == 7
    first = items[0]
    assert (first.prompt, first.negative_prompt, first.seed, first.height, first.width, first.frames, first.steps,
            first.guidance, first.name) == ("a cat", "blurry", 7, 32, 48, 5, 3, 2.0, "cat")
    assert first.image == str((tmp_path / "img.png").resolve())
    assert "not valid JSON" in items[1].error and items[1].line == 2
    assert "unknown key(s) ['colour']" in items[2].error
    assert "prompt must be a non-empty string" in items[3].error
    assert "used by an earlier line" in items[4].error
    assert "seed must be an int in [0, 18446744073709551615], got -1" in items[5].error
    assert items[6].error is None and items[6].frames == 9 and items[6].seed == 106
    assert len({i.name for i in items}) == 7  # names stay unique even for bad lines


@pytest.mark.parametrize("line, message", [
    ('{"prompt": "a", "seed": 1180591620717411303424}', "seed must be an int in [0, 18446744073709551615], got "
                                                         "1180591620717411303424"),  # 2**70
    ('{"prompt": "a", "seed": 1e400}', "seed must be an int in [0, 18446744073709551615], got inf"),
    ('{"prompt": "a", "guidance": Infinity}', "guidance must be a finite number >= 0, got inf"),
    ('{"prompt": "a", "guidance": NaN}', "guidance must be a finite number >= 0, got nan"),
    ('{"prompt": "a", "guidance": 1e999}', "guidance must be a finite number >= 0, got inf"),
    ('{"prompt": "a", "steps": NaN}', "steps must be an int in [1, 2147483647], got nan"),
    ('{"prompt": "a", "height": 4294967296}', "height must be an int in [1, 2147483647], got 4294967296"),
    ('{"prompt": "a", "name": "manifest.jsonl"}', "name 'manifest.jsonl' is reserved"),
    ('{"prompt": "a", "name": "MANIFEST.JSONL"}', "name 'MANIFEST.JSONL' is reserved"),
])
def test_out_of_range_and_reserved_fields_name_the_field(tmp_path, line, message):
    f = tmp_path / "p.jsonl"
    f.write_text(line + "\n" + '{"prompt": "fine"}\n')
    bad, fine = read_prompt_file(f)
    assert bad.error == f"line 1: {message}" or bad.error.startswith(f"line 1: {message}"), bad.error
    assert fine.error is None


def test_base_seed_range(tmp_path):
    f = tmp_path / "p.txt"
    f.write_text("a\n")
    with pytest.raises(ValueError, match=r"base_seed must be .* got 1180591620717411303424"):
        read_prompt_file(f, base_seed=2**70)
    with pytest.raises(ValueError, match=r"got 1.000e\+300"):
        read_prompt_file(f, base_seed=10**300)


def test_missing_image_is_an_item_error(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text(json.dumps({"prompt": "a", "image": "nope.png"}) + "\n")
    (item,) = read_prompt_file(f)
    assert "image 'nope.png' not found" in item.error


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="prompt file .* not found"):
        read_prompt_file(tmp_path / "missing.txt")
    empty = tmp_path / "e.txt"
    empty.write_text("\n# only a comment\n")
    with pytest.raises(ValueError, match="holds no prompt"):
        read_prompt_file(empty)
    with pytest.raises(ValueError, match=r"base_seed must be an int in \[0, 9223372036854775807\], got -2"):
        read_prompt_file(empty, base_seed=-2)


def test_slug():
    assert slug("A Red  Circle, moving LEFT!") == "a-red-circle-moving-left"
    assert slug("???") == "item"
