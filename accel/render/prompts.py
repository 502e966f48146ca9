"""Prompt files for batch rendering: plain text (one prompt a line) or JSONL (one object a line).

Plain text (any suffix but ``.jsonl``): every non-blank line is a prompt; lines starting with ``#``
are comments. JSONL (``.jsonl``): every non-blank line is a JSON object with

============== ======== ===============================================================
key            type     meaning
============== ======== ===============================================================
prompt         str      the prompt (required, non-empty)
negative_prompt str     negative prompt (default: none)
seed           int >= 0 noise seed, below 2**64 (default: base seed + the item's index)
height, width  int > 0  output size in pixels, below 2**31 (default: the model preset's)
frames         int > 0  frames of a video, below 2**31 (default: the preset's); ``num_frames`` also accepted
steps          int > 0  denoising steps, below 2**31 (default: the preset's)
guidance       float    guidance scale, finite and >= 0 (default: the preset's)
name           str      output file name without suffix (default: ``NNNN-<slug of prompt>``); not a
                        name of the renderer's own files (``manifest.jsonl``)
image          str      input image for image-to-video models, a path relative to the file
============== ======== ===============================================================

Parsing never raises for one bad line: the line becomes a :class:`PromptItem` with ``error`` set,
naming the field and the value (the renderer records it as failed and goes on). Non-finite numbers
(``NaN``, ``Infinity``, which Python's JSON reader accepts) are refused wherever a number is read.
A missing or empty file raises before any work.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path

from .folder import reserved_name_problem

__all__ = ["PromptItem", "read_prompt_file", "slug", "MAX_SEED", "MAX_BASE_SEED", "MAX_COUNT"]

#: largest seed ``torch.Generator.manual_seed`` takes
MAX_SEED = 2**64 - 1
#: largest base seed (``--seed``): item seeds ``base + index`` stay below :data:`MAX_SEED`
MAX_BASE_SEED = 2**63 - 1
#: largest size, frame count or step count (torch's int32 sizes)
MAX_COUNT = 2**31 - 1
_INT_KEYS = {"seed": (0, MAX_SEED), "height": (1, MAX_COUNT), "width": (1, MAX_COUNT), "frames": (1, MAX_COUNT),
             "steps": (1, MAX_COUNT)}
_KEYS = {"prompt", "negative_prompt", "seed", "height", "width", "frames", "num_frames", "steps", "guidance",
         "name", "image"}
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@dataclasses.dataclass(frozen=True)
class PromptItem:
    """One item of a prompt file.

    Attributes:
        index: position among the file's items (0-based, blank and comment lines not counted).
        line: 1-based line number in the file.
        name: output name (file stem), unique within the file.
        prompt: the prompt text ("" when the line could not be parsed).
        seed: noise seed.
        negative_prompt, height, width, frames, steps, guidance, image: per-item overrides, ``None``
            for the defaults; ``image`` is an absolute path.
        error: why the line is unusable, or ``None``.
    """

    index: int
    line: int
    name: str
    prompt: str
    seed: int
    negative_prompt: str | None = None
    height: int | None = None
    width: int | None = None
    frames: int | None = None
    steps: int | None = None
    guidance: float | None = None
    image: str | None = None
    error: str | None = None


def slug(text: str, limit: int = 48, *, empty: str = "item") -> str:
    """Lower-case ``text`` with runs of other characters replaced by ``-`` (at most ``limit`` characters, no
    leading or trailing ``-``); ``empty`` when nothing is left."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit].strip("-") or empty


def _check_int(key, value, minimum, maximum):
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        shown = repr(value) if not isinstance(value, int) or value.bit_length() <= 256 else f"{value:.3e}"
        raise ValueError(f"{key} must be an int in [{minimum}, {maximum}], got {shown}")
    return value


def _parse_object(obj, folder: Path) -> dict:
    if not isinstance(obj, dict):
        raise ValueError(f"a JSONL line must be a JSON object, got {type(obj).__name__}")
    unknown = sorted(set(obj) - _KEYS)
    if unknown:
        raise ValueError(f"unknown key(s) {unknown}; allowed: {sorted(_KEYS)}")
    if "frames" in obj and "num_frames" in obj:
        raise ValueError("give frames or num_frames, not both")
    obj = dict(obj)
    if "num_frames" in obj:
        obj["frames"] = obj.pop("num_frames")
    prompt = obj.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"prompt must be a non-empty string, got {prompt!r}")
    out = {"prompt": prompt.strip()}
    for key, (minimum, maximum) in _INT_KEYS.items():
        if obj.get(key) is not None:
            out[key] = _check_int(key, obj[key], minimum, maximum)
    if obj.get("guidance") is not None:
        g = obj["guidance"]
        if isinstance(g, bool) or not isinstance(g, (int, float)) or not math.isfinite(g) or not g >= 0:
            raise ValueError(f"guidance must be a finite number >= 0, got {g!r}")
        out["guidance"] = float(g)
    if obj.get("negative_prompt") is not None:
        if not isinstance(obj["negative_prompt"], str):
            raise ValueError(f"negative_prompt must be a string, got {obj['negative_prompt']!r}")
        out["negative_prompt"] = obj["negative_prompt"]
    if obj.get("name") is not None:
        name = obj["name"]
        if not isinstance(name, str) or not _NAME.fullmatch(name) or name.startswith(".") or "partial" in name:
            raise ValueError(f"name must be 1-128 letters, digits, '.', '_' or '-' (not starting with '.', no "
                             f"'partial'), got {name!r}")
        problem = reserved_name_problem(name)
        if problem:
            raise ValueError(problem)
        out["name"] = name
    if obj.get("image") is not None:
        if not isinstance(obj["image"], str):
            raise ValueError(f"image must be a path string, got {obj['image']!r}")
        path = (folder / obj["image"]).expanduser().resolve()
        if not path.is_file():
            raise ValueError(f"image {obj['image']!r} not found (looked at {path})")
        out["image"] = str(path)
    return out


def read_prompt_file(path, *, base_seed: int = 0, jsonl: bool | None = None) -> list[PromptItem]:
    """Parse a prompt file into items (bad lines become items with ``error``).

    Args:
        path: the file. Its format is JSONL when it ends in ``.jsonl`` (or ``jsonl=True``), else text.
        base_seed: an item without a seed gets ``base_seed + index`` (int in [0, 2**63 - 1]).
        jsonl: force the format (``None``: by suffix).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file holds no prompt, or ``base_seed`` is not an int in [0, 2**63 - 1].
    """
    _check_int("base_seed", base_seed, 0, MAX_BASE_SEED)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompt file {str(path)!r} not found")
    if jsonl is None:
        jsonl = path.suffix.lower() == ".jsonl"
    items: list[PromptItem] = []
    names: set[str] = set()
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        text = raw.strip()
        if not text or (not jsonl and text.startswith("#")):
            continue
        index = len(items)
        error = None
        if jsonl:
            try:
                fields = _parse_object(json.loads(text), path.parent)
            except json.JSONDecodeError as exc:
                fields, error = {}, f"line {number}: not valid JSON ({exc.msg} at column {exc.colno})"
            except ValueError as exc:
                fields, error = {}, f"line {number}: {exc}"
        else:
            fields = {"prompt": text}
        name = fields.pop("name", None) or f"{index:04d}-{slug(fields.get('prompt', '')) if not error else 'invalid'}"
        if name in names and error is None:
            error = f"line {number}: name {name!r} is used by an earlier line"
            name = f"{index:04d}-duplicate"
        names.add(name)
        seed = fields.pop("seed", None)
        items.append(PromptItem(index=index, line=number, name=name, prompt=fields.pop("prompt", ""),
                                seed=base_seed + index if seed is None else seed, error=error, **fields))
    if not items:
        raise ValueError(f"prompt file {str(path)!r} holds no prompt")
    return items
