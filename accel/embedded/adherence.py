"""Prompt adherence without any external model: dominant colour and direction of motion.

For a clip of the embedded model's world (one saturated object over a grey background) this module
finds the object's pixels, names its dominant colour and measures where its centroid goes:

* **Object pixels**: HSV saturation >= ``min_saturation`` and value >= ``min_value``, then one 3x3
  erosion (``erode``) that drops thin fringes and specks. Backgrounds of the training data are grey
  (saturation 0) and object colours are saturated, so this separates them without knowing the background.
* **Dominant colour**: every object pixel votes for the palette colour (:data:`~accel.embedded.data.COLOURS`)
  nearest in hue (circular distance); the colour with the most votes wins.
  ``None`` if fewer than ``min_pixels`` object pixels exist in the whole clip.
* **Direction**: per frame, the centroid of the pixels of the dominant colour (frames with fewer than
  ``min_pixels_per_frame`` such pixels are skipped); a least-squares line through the centroids over
  time gives the displacement from the first to the last frame. Its larger axis component names the
  direction (``left``/``right``/``up``/``down``, image y pointing down); ``None`` when the displacement
  is shorter than ``min_motion`` times the frame's smaller side or fewer than 2 frames qualify.

Run ``python -m accel.embedded.adherence`` to measure the embedded model on the 50 held-out prompts.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from .data import COLOURS, caption_for, held_out_specs, parse_caption

__all__ = [
    "AdherenceResult",
    "ClipAnalysis",
    "analyze_clip",
    "check_adherence",
    "evaluate_pipeline",
    "held_out_prompts",
    "object_mask",
    "object_colour",
    "summarize",
]


@dataclasses.dataclass(frozen=True)
class ClipAnalysis:
    """What :func:`analyze_clip` saw in a clip.

    Attributes:
        colour: dominant object colour (a key of ``COLOURS``), or ``None`` if no object was found.
        direction: ``"left"``, ``"right"``, ``"up"``, ``"down"`` or ``None`` (no clear motion).
        displacement: fitted ``(dx, dy)`` centroid displacement, first to last frame, in pixels.
        object_fraction: mean fraction of pixels per frame classified as object (any colour).
        colour_share: fraction of object pixels that voted for ``colour`` (0 if none).
        centroids: ``[frames, 2]`` per-frame ``(x, y)`` centroid of the dominant colour, NaN where skipped.
    """

    colour: str | None
    direction: str | None
    displacement: tuple[float, float]
    object_fraction: float
    colour_share: float
    centroids: np.ndarray = dataclasses.field(repr=False, compare=False)


@dataclasses.dataclass(frozen=True)
class AdherenceResult:
    """Comparison of one clip with its prompt (see :func:`check_adherence`).

    Attributes:
        prompt: the prompt text.
        expected_colour: colour named by the prompt (``None`` if it names none).
        expected_direction: direction named by the prompt (``None`` if it names none).
        analysis: what was measured in the clip.
        colour_ok: the measured colour equals the expected one (False if either is ``None``).
        direction_ok: the measured direction equals the expected one (False if either is ``None``).
    """

    prompt: str
    expected_colour: str | None
    expected_direction: str | None
    analysis: ClipAnalysis
    colour_ok: bool
    direction_ok: bool


def _as_frames(frames: Any) -> np.ndarray:
    """Normalise a clip to float32 ``[F, H, W, 3]`` in ``[0, 1]``."""
    if hasattr(frames, "detach"):  # torch tensor
        frames = frames.detach().float().cpu().numpy()
    if isinstance(frames, (list, tuple)):
        frames = np.stack([np.asarray(f) for f in frames])
    arr = np.asarray(frames)
    if arr.ndim == 3 and arr.shape[-1] == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"frames must be [frames, height, width, 3] (or one [height, width, 3] image), "
                         f"got shape {arr.shape}")
    if arr.shape[0] < 1 or arr.shape[1] < 2 or arr.shape[2] < 2:
        raise ValueError(f"frames must hold at least one 2x2 frame, got shape {arr.shape}")
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    arr = arr.astype(np.float32)
    if not np.isfinite(arr).all():
        raise ValueError("frames contain NaN or infinite values")
    return np.clip(arr, 0.0, 1.0)


def _palette_hues() -> tuple[list[str], np.ndarray]:
    names = list(COLOURS)
    hues = np.array([_hue(np.asarray(COLOURS[n], dtype=np.float32)[None])[0] for n in names])
    return names, hues


def _hue(rgb: np.ndarray) -> np.ndarray:
    """Hue in degrees [0, 360) of ``[..., 3]`` RGB."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    mx, mn = rgb.max(-1), rgb.min(-1)
    delta = np.maximum(mx - mn, 1e-8)
    h = np.where(mx == r, ((g - b) / delta) % 6.0, np.where(mx == g, (b - r) / delta + 2.0, (r - g) / delta + 4.0))
    return (h * 60.0) % 360.0


def _erode(mask: np.ndarray) -> np.ndarray:
    """3x3 binary erosion of ``[F, H, W]`` masks; pixels outside the frame count as background."""
    padded = np.pad(mask, ((0, 0), (1, 1), (1, 1)), constant_values=False)
    height, width = mask.shape[1:]
    out = mask.copy()
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            out &= padded[:, dy:dy + height, dx:dx + width]
    return out


def _object_pixels(clip: np.ndarray, min_saturation: float, min_value: float, erode: int) -> np.ndarray:
    mx, mn = clip.max(-1), clip.min(-1)
    saturation = (mx - mn) / np.maximum(mx, 1e-8)
    mask = (saturation >= min_saturation) & (mx >= min_value)
    for _ in range(erode):
        mask = _erode(mask)
    return mask


def _colour_votes(clip: np.ndarray, mask: np.ndarray) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(palette names, per-pixel nearest-hue label ``[F, H, W]``, votes of the ``mask`` pixels per name)."""
    names, hues = _palette_hues()
    diff = np.abs(_hue(clip)[..., None] - hues)
    label = np.argmin(np.minimum(diff, 360.0 - diff), axis=-1)
    return names, label, np.bincount(label[mask], minlength=len(names))


def object_colour(frames: Any, region: Any = None, *, min_saturation: float = 0.4, min_value: float = 0.3,
                  min_pixels: int = 20, erode: int = 1) -> str | None:
    """The palette colour most object pixels inside ``region`` vote for (as :func:`analyze_clip` votes).

    Reading the colour of an edited object where the source's object was (``region`` = the source's
    :func:`object_mask`) is not outvoted by coloured specks elsewhere in the frame, as the whole clip's
    dominant colour can be.

    Args:
        frames: the clip, in any form :func:`analyze_clip` accepts.
        region: bool ``[F, H, W]`` (or ``[H, W]``, every frame) at the clip's size: the pixels that may vote;
            ``None``: every pixel.
        min_saturation, min_value, erode: as in :func:`analyze_clip`.
        min_pixels: fewest object pixels inside ``region`` for a colour to be named (>= 1).

    Returns:
        A key of :data:`~accel.embedded.data.COLOURS`, or ``None`` when fewer than ``min_pixels`` object
        pixels lie inside ``region``.

    Raises:
        ValueError: ``region`` is not a bool mask of the clip's frame size, or ``min_pixels < 1``.
    """
    if isinstance(min_pixels, bool) or not isinstance(min_pixels, int) or min_pixels < 1:
        raise ValueError(f"min_pixels must be an int >= 1, got {min_pixels!r}")
    clip = _as_frames(frames)
    mask = _object_pixels(clip, min_saturation, min_value, erode)
    if region is not None:
        area = np.asarray(region)
        if area.dtype != bool or area.shape not in (clip.shape[:3], clip.shape[1:3]):
            raise ValueError(f"region must be a bool mask of shape {clip.shape[:3]} or {clip.shape[1:3]}, got "
                             f"{area.dtype} {area.shape}")
        mask = mask & area
    if mask.sum() < min_pixels:
        return None
    names, _, votes = _colour_votes(clip, mask)
    return names[int(np.argmax(votes))]


def object_mask(frames: Any, *, min_saturation: float = 0.4, min_value: float = 0.3, erode: int = 1) -> np.ndarray:
    """bool ``[F, H, W]``: the object pixels of a clip, as :func:`analyze_clip` finds them (module docstring).

    Args:
        frames: ``[F, H, W, 3]`` (or one ``[H, W, 3]`` frame) RGB in [0, 1] (float) or [0, 255] (uint8).
        min_saturation, min_value, erode: as in :func:`analyze_clip`.
    """
    clip = _as_frames(frames)
    return _object_pixels(clip, min_saturation, min_value, erode)


def analyze_clip(
    frames: Any,
    *,
    min_saturation: float = 0.4,
    min_value: float = 0.3,
    min_pixels: int = 20,
    min_pixels_per_frame: int = 4,
    min_motion: float = 0.08,
    erode: int = 1,
) -> ClipAnalysis:
    """Measure the dominant object colour and the direction of motion of a clip.

    Args:
        frames: the clip as ``[frames, height, width, 3]`` (one ``[height, width, 3]`` image is one
            frame): a numpy array or torch tensor, float in ``[0, 1]`` (clipped) or ``uint8`` in
            ``[0, 255]``, or a list of such frames / PIL images. WanPipeline's ``output_type="np"``
            output ``frames[i]`` fits directly.
        min_saturation: HSV saturation in ``[0, 1]`` a pixel needs to count as object.
        min_value: HSV value (max of R, G, B) in ``[0, 1]`` a pixel needs to count as object.
        min_pixels: fewest object pixels in the whole clip for a colour to be named (>= 1).
        min_pixels_per_frame: fewest dominant-colour pixels for a frame's centroid to count (>= 1).
        min_motion: shortest displacement that names a direction, as a fraction of the frame's smaller
            side, in ``[0, 1]``.
        erode: how many times (>= 0) the object mask is eroded with a 3x3 neighbourhood before voting:
            a pixel stays only if its 8 neighbours are object pixels too. One step removes the thin
            colour fringes an autoencoder leaves around edges (and isolated specks) while keeping the
            body of any object wider than a few pixels.

    Returns:
        A :class:`ClipAnalysis`.

    Raises:
        ValueError: for a wrongly shaped clip, NaN values or thresholds outside their ranges.
    """
    for name, value in (("min_saturation", min_saturation), ("min_value", min_value), ("min_motion", min_motion)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {value}")
    if not isinstance(erode, int) or erode < 0:
        raise ValueError(f"erode must be an integer >= 0, got {erode!r}")
    if min_pixels < 1 or min_pixels_per_frame < 1:
        raise ValueError(f"min_pixels and min_pixels_per_frame must be >= 1, got {min_pixels}, {min_pixels_per_frame}")
    clip = _as_frames(frames)
    num_frames, height, width, _ = clip.shape
    mask = _object_pixels(clip, min_saturation, min_value, erode)
    object_fraction = float(mask.mean())
    nan_track = np.full((num_frames, 2), np.nan)
    if mask.sum() < min_pixels:
        return ClipAnalysis(None, None, (0.0, 0.0), object_fraction, 0.0, nan_track)
    names, label, votes = _colour_votes(clip, mask)
    best = int(np.argmax(votes))
    share = float(votes[best] / votes.sum())
    own = mask & (label == best)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    track = nan_track.copy()
    for f in range(num_frames):
        m = own[f]
        if m.sum() >= min_pixels_per_frame:
            track[f] = (xs[m].mean(), ys[m].mean())
    valid = ~np.isnan(track[:, 0])
    direction, displacement = None, (0.0, 0.0)
    if valid.sum() >= 2:
        t = np.nonzero(valid)[0].astype(np.float64)
        slope_x = np.polyfit(t, track[valid, 0], 1)[0]
        slope_y = np.polyfit(t, track[valid, 1], 1)[0]
        displacement = (float(slope_x * (num_frames - 1)), float(slope_y * (num_frames - 1)))
        dx, dy = displacement
        if max(abs(dx), abs(dy)) >= min_motion * min(height, width):
            if abs(dx) >= abs(dy):
                direction = "right" if dx > 0 else "left"
            else:
                direction = "down" if dy > 0 else "up"
    return ClipAnalysis(names[best], direction, displacement, object_fraction, share, track)


def check_adherence(frames: Any, prompt: str, **analyze_kwargs: Any) -> AdherenceResult:
    """Compare a clip with the colour and direction its prompt names.

    Args:
        frames: the clip, in any form :func:`analyze_clip` accepts.
        prompt: the prompt it was generated from; the first colour word (``red``, ``yellow``, ``green``,
            ``cyan``, ``blue``, ``magenta``) and the first direction word (``left``, ``right``, ``up``,
            ``down``) are the expectations.
        **analyze_kwargs: thresholds passed to :func:`analyze_clip`.

    Raises:
        ValueError: if ``prompt`` is not a string or the clip is malformed.
    """
    words = parse_caption(prompt)
    analysis = analyze_clip(frames, **analyze_kwargs)
    colour_ok = words["colour"] is not None and analysis.colour == words["colour"]
    direction_ok = words["direction"] is not None and analysis.direction == words["direction"]
    return AdherenceResult(prompt, words["colour"], words["direction"], analysis, colour_ok, direction_ok)


def summarize(results: Sequence[AdherenceResult]) -> dict[str, Any]:
    """Fractions of correct colours/directions/both over ``results`` (``n`` = their number).

    Raises:
        ValueError: if ``results`` is empty.
    """
    if not results:
        raise ValueError("results must not be empty")
    n = len(results)
    return {
        "n": n,
        "colour_accuracy": sum(r.colour_ok for r in results) / n,
        "direction_accuracy": sum(r.direction_ok for r in results) / n,
        "both_accuracy": sum(r.colour_ok and r.direction_ok for r in results) / n,
    }


def held_out_prompts(count: int = 50) -> list[str]:
    """The first ``count`` (1..50) held-out prompts: captions never used in training.

    Raises:
        ValueError: if ``count`` is outside ``1..50``.
    """
    specs = held_out_specs()
    if not 1 <= count <= len(specs):
        raise ValueError(f"count must be in 1..{len(specs)}, got {count}")
    return [caption_for(*s) for s in specs[:count]]


def evaluate_pipeline(
    pipe,
    prompts: Iterable[str],
    *,
    seed: int = 0,
    batch_size: int = 4,
    **call_kwargs: Any,
) -> tuple[list[AdherenceResult], dict[str, Any]]:
    """Generate one clip per prompt with ``pipe`` and check each one's adherence.

    Args:
        pipe: a text-to-video pipeline whose call accepts ``prompt``, ``generator`` and
            ``output_type="np"`` and returns ``.frames`` as ``[batch, frames, H, W, 3]`` (WanPipeline).
        prompts: the prompts; prompt ``i`` uses noise seed ``seed + i``.
        seed: base noise seed (integer >= 0).
        batch_size: prompts generated per pipeline call (>= 1).
        **call_kwargs: passed to the pipeline (e.g. the embedded model's ``DEFAULT_GENERATION``).

    Returns:
        ``(results, summary)``; ``summary`` is :func:`summarize` plus ``seconds`` (wall time).

    Raises:
        ValueError: for an empty prompt list, a negative seed or a batch size < 1.
    """
    import torch

    prompts = list(prompts)
    if not prompts:
        raise ValueError("prompts must not be empty")
    if seed < 0 or batch_size < 1:
        raise ValueError(f"seed must be >= 0 and batch_size >= 1, got {seed}, {batch_size}")
    t0 = time.time()
    results: list[AdherenceResult] = []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start:start + batch_size]
        generators = [torch.Generator().manual_seed(seed + start + i) for i in range(len(chunk))]
        out = pipe(prompt=chunk, generator=generators, output_type="np", **call_kwargs)
        for prompt, clip in zip(chunk, out.frames, strict=True):
            results.append(check_adherence(clip, prompt))
    summary = summarize(results)
    summary["seconds"] = round(time.time() - t0, 1)
    return results, summary


def main(argv: list[str] | None = None) -> int:
    """``python -m accel.embedded.adherence``: adherence of the embedded model on held-out prompts.

    Args:
        argv: command-line arguments (``None``: ``sys.argv[1:]``); ``--help`` lists them.
    """
    import torch

    from .model import embedded, generation_kwargs

    p = argparse.ArgumentParser(prog="python -m accel.embedded.adherence", description=main.__doc__.split("\n")[0])
    p.add_argument("--count", type=int, default=50, help="number of held-out prompts, 1..50 (default 50)")
    p.add_argument("--seed", type=int, default=0, help="base noise seed (default 0)")
    p.add_argument("--steps", type=int, default=None, help="inference steps (default: the embedded default)")
    p.add_argument("--guidance", type=float, default=None, help="guidance scale (default: the embedded default)")
    p.add_argument("--frames", type=int, default=None, help="frame count, odd (default: embedded default)")
    p.add_argument("--size", type=int, default=None, help="height and width, multiple of 16 (default: embedded)")
    p.add_argument("--batch-size", type=int, default=5, help="prompts per pipeline call (default 5)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--json", type=str, default=None, help="also write per-prompt results to this JSON file")
    p.add_argument("--weights", type=str, default=None,
                   help="an exported pipeline folder to evaluate instead of the packaged weights")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = {}
    if args.steps is not None:
        overrides["num_inference_steps"] = args.steps
    if args.guidance is not None:
        overrides["guidance_scale"] = args.guidance
    if args.frames is not None:
        overrides["num_frames"] = args.frames
    if args.size is not None:
        overrides["height"] = overrides["width"] = args.size
    kwargs = generation_kwargs(**overrides)
    pipe = embedded(weights=args.weights)
    results, summary = evaluate_pipeline(pipe, held_out_prompts(args.count), seed=args.seed,
                                         batch_size=args.batch_size, **kwargs)
    for r in results:
        a = r.analysis
        print(f"{'ok ' if r.colour_ok else 'BAD'} {'ok ' if r.direction_ok else 'BAD'} {r.prompt!r}: "
              f"saw {a.colour} moving {a.direction} (dx {a.displacement[0]:+.1f}, dy {a.displacement[1]:+.1f}, "
              f"object {a.object_fraction:.3f}, share {a.colour_share:.2f})")
    summary["settings"] = {k: v for k, v in kwargs.items()}
    print(json.dumps(summary, indent=1))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"summary": summary, "results": [
                {"prompt": r.prompt, "colour_ok": r.colour_ok, "direction_ok": r.direction_ok,
                 "colour": r.analysis.colour, "direction": r.analysis.direction,
                 "displacement": r.analysis.displacement} for r in results]}, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
