"""Procedural training data for the embedded text-to-video model.

Every clip shows one flat-coloured shape moving in a straight line over a neutral (grey) background
that is either plain, checkered or striped. Captions read ``"a red circle moving left"``, optionally
followed by the background (``"a red circle moving left on a striped background"``). Everything is
generated with numpy from an integer seed, so a clip is a pure function of ``(seed, index)``; no file
or network is involved.

Pixel values are floats in ``[0, 1]`` laid out ``[frames, height, width, 3]``. Backgrounds are grey
(R = G = B) by construction and object colours are saturated, which is what the adherence check
(:mod:`accel.embedded.adherence`) relies on to separate object from background.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np

__all__ = [
    "BACKGROUNDS",
    "COLOURS",
    "DIRECTIONS",
    "SHAPES",
    "ClipSpec",
    "caption_for",
    "held_out_specs",
    "parse_caption",
    "render_clip",
    "sample_spec",
    "training_captions",
]

# Saturated colours whose hues sit 60 degrees apart, so that a generated colour is unambiguous.
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.90, 0.10, 0.10),
    "yellow": (0.90, 0.85, 0.10),
    "green": (0.10, 0.80, 0.15),
    "cyan": (0.10, 0.80, 0.85),
    "blue": (0.15, 0.25, 0.95),
    "magenta": (0.85, 0.10, 0.85),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond")
# Unit vectors in image coordinates (x to the right, y downwards).
DIRECTIONS: dict[str, tuple[int, int]] = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
BACKGROUNDS: tuple[str, ...] = ("plain", "checkered", "striped")

_HELD_OUT_COUNT = 50
_HELD_OUT_SEED = 20240


@dataclasses.dataclass(frozen=True)
class ClipSpec:
    """Everything that determines one clip.

    Attributes:
        colour: key of :data:`COLOURS`.
        shape: one of :data:`SHAPES`.
        direction: key of :data:`DIRECTIONS`.
        background: one of :data:`BACKGROUNDS`.
        radius: half the object's extent in pixels (a circle's radius, half a square's side).
        start: ``(x, y)`` pixel position of the object's centre in the first frame.
        distance: pixels travelled between the first and the last frame, along ``direction``.
        bg_levels: the two grey levels of the background (equal for ``"plain"``), in ``[0, 1]``.
        bg_period: checker cell size or stripe period in pixels (unused for ``"plain"``).
        bg_orientation: 0 for vertical stripes, 1 for horizontal, 2 for diagonal (stripes only).
        mention_background: whether the caption names the background.
    """

    colour: str
    shape: str
    direction: str
    background: str
    radius: float
    start: tuple[float, float]
    distance: float
    bg_levels: tuple[float, float]
    bg_period: int
    bg_orientation: int
    mention_background: bool = True

    @property
    def caption(self) -> str:
        """The caption of this clip (see :func:`caption_for`)."""
        return caption_for(self.colour, self.shape, self.direction, self.background if self.mention_background else None)


def caption_for(colour: str, shape: str, direction: str, background: str | None = None) -> str:
    """Build a caption such as ``"a red circle moving left on a striped background"``.

    Args:
        colour: a key of :data:`COLOURS`.
        shape: one of :data:`SHAPES`.
        direction: a key of :data:`DIRECTIONS`.
        background: one of :data:`BACKGROUNDS`, or ``None`` to leave the background unnamed.

    Raises:
        ValueError: if any value is not one of the allowed words.
    """
    _check_word("colour", colour, COLOURS)
    _check_word("shape", shape, SHAPES)
    _check_word("direction", direction, DIRECTIONS)
    text = f"a {colour} {shape} moving {direction}"
    if background is not None:
        _check_word("background", background, BACKGROUNDS)
        text += f" on a {background} background"
    return text


def parse_caption(caption: str) -> dict[str, str | None]:
    """Read colour, shape, direction and background words out of a free-form caption.

    The first occurrence of each known word counts (case-insensitive, punctuation ignored).

    Args:
        caption: any text, e.g. ``"A blue square moving up."``.

    Returns:
        ``{"colour": ..., "shape": ..., "direction": ..., "background": ...}``; a value is ``None``
        where the caption names none of the known words.

    Raises:
        ValueError: if ``caption`` is not a string.
    """
    if not isinstance(caption, str):
        raise ValueError(f"caption must be a string, got {type(caption).__name__}")
    words = "".join(c if c.isalnum() else " " for c in caption.lower()).split()
    found: dict[str, str | None] = {"colour": None, "shape": None, "direction": None, "background": None}
    vocab = {"colour": COLOURS, "shape": SHAPES, "direction": DIRECTIONS, "background": BACKGROUNDS}
    for word in words:
        for key, allowed in vocab.items():
            if found[key] is None and word in allowed:
                found[key] = word
    return found


def held_out_specs() -> list[tuple[str, str, str, str]]:
    """The 50 ``(colour, shape, direction, background)`` combinations never used for training.

    Their full captions (with the background named) are excluded from the training set, so the
    adherence figures on them measure generalisation to unseen prompts. Fixed for all versions.
    """
    combos = list(itertools.product(COLOURS, SHAPES, DIRECTIONS, BACKGROUNDS))
    order = np.random.default_rng(_HELD_OUT_SEED).permutation(len(combos))
    return [combos[i] for i in sorted(order[:_HELD_OUT_COUNT])]


def training_captions() -> list[str]:
    """Every caption the training set may contain: all full captions except the held-out ones,
    plus the short form (no background named) of every colour/shape/direction triple."""
    held = set(held_out_specs())
    full = [caption_for(*c) for c in itertools.product(COLOURS, SHAPES, DIRECTIONS, BACKGROUNDS) if c not in held]
    short = [caption_for(*c) for c in itertools.product(COLOURS, SHAPES, DIRECTIONS)]
    return full + short


def sample_spec(
    seed: int,
    index: int,
    *,
    height: int = 128,
    width: int = 128,
    exclude_held_out: bool = True,
    short_caption_prob: float = 0.25,
    combo: tuple[str, str, str, str] | None = None,
) -> ClipSpec:
    """Draw the random parameters of clip number ``index`` of the dataset with seed ``seed``.

    Args:
        seed: dataset seed; any integer >= 0.
        index: clip index within the dataset; any integer >= 0. ``(seed, index)`` fully determines
            the result.
        height: frame height in pixels (>= 32); geometry scales with ``min(height, width)``.
        width: frame width in pixels (>= 32).
        exclude_held_out: if true, redraw until the combination is not in :func:`held_out_specs`.
        short_caption_prob: probability in ``[0, 1]`` that the caption omits the background.
        combo: force ``(colour, shape, direction, background)`` instead of drawing it (then
            ``exclude_held_out`` is ignored and the caption always names the background).

    Raises:
        ValueError: on a negative seed/index, a too small frame or a probability outside ``[0, 1]``.
    """
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    if not isinstance(index, (int, np.integer)) or index < 0:
        raise ValueError(f"index must be an integer >= 0, got {index!r}")
    if height < 32 or width < 32:
        raise ValueError(f"height and width must be >= 32 pixels, got {height}x{width}")
    if not 0.0 <= short_caption_prob <= 1.0:
        raise ValueError(f"short_caption_prob must be in [0, 1], got {short_caption_prob}")
    rng = np.random.default_rng([int(seed), int(index), 7])
    held = set(held_out_specs()) if exclude_held_out and combo is None else set()
    mention = True
    if combo is None:
        mention = bool(rng.random() >= short_caption_prob)
        while True:
            combo = (
                str(rng.choice(list(COLOURS))),
                str(rng.choice(SHAPES)),
                str(rng.choice(list(DIRECTIONS))),
                str(rng.choice(BACKGROUNDS)),
            )
            # A short caption never names the background, so it cannot leak a held-out caption.
            if not mention or combo not in held:
                break
    else:
        for name, value, allowed in zip(("colour", "shape", "direction", "background"), combo,
                                        (COLOURS, SHAPES, DIRECTIONS, BACKGROUNDS), strict=True):
            _check_word(name, value, allowed)
    colour, shape, direction, background = combo
    size = min(height, width)
    radius = float(rng.uniform(0.09, 0.14) * size)
    distance = float(rng.uniform(0.35, 0.50) * size)
    dx, dy = DIRECTIONS[direction]
    margin = radius + 2.0
    # Choose the start so that the whole path stays inside the frame.
    lo_x = margin + (distance if dx < 0 else 0.0)
    hi_x = width - margin - (distance if dx > 0 else 0.0)
    lo_y = margin + (distance if dy < 0 else 0.0)
    hi_y = height - margin - (distance if dy > 0 else 0.0)
    start = (float(rng.uniform(lo_x, hi_x)), float(rng.uniform(lo_y, hi_y)))
    level = float(rng.uniform(0.25, 0.60))
    if background == "plain":
        levels = (level, level)
    else:
        levels = (level, float(np.clip(level + rng.choice([-1, 1]) * rng.uniform(0.10, 0.18), 0.1, 0.75)))
    period = int(rng.integers(max(6, size // 10), max(7, size // 6) + 1))
    orientation = int(rng.integers(0, 3))
    return ClipSpec(colour, shape, direction, background, radius, start, distance, levels, period, orientation,
                    mention)


def render_clip(spec: ClipSpec, *, num_frames: int = 17, height: int = 128, width: int = 128) -> np.ndarray:
    """Render a clip as float32 ``[num_frames, height, width, 3]`` in ``[0, 1]``.

    The object moves linearly from ``spec.start`` (frame 0) to ``spec.start + distance * direction``
    (last frame); edges are anti-aliased over one pixel.

    Args:
        spec: the clip parameters (see :func:`sample_spec`).
        num_frames: number of frames, >= 1 (with one frame the object sits at ``spec.start``).
        height: frame height in pixels, >= 8.
        width: frame width in pixels, >= 8.

    Raises:
        ValueError: on a non-positive frame count or a too small frame.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if height < 8 or width < 8:
        raise ValueError(f"height and width must be >= 8, got {height}x{width}")
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32) + 0.5
    background = _background(spec, xs, ys)
    colour = np.asarray(COLOURS[spec.colour], dtype=np.float32)
    dx, dy = DIRECTIONS[spec.direction]
    frames = np.empty((num_frames, height, width, 3), dtype=np.float32)
    for f in range(num_frames):
        progress = f / (num_frames - 1) if num_frames > 1 else 0.0
        cx = spec.start[0] + dx * spec.distance * progress
        cy = spec.start[1] + dy * spec.distance * progress
        sdf = _shape_sdf(spec.shape, xs - cx, ys - cy, spec.radius)
        alpha = np.clip(0.5 - sdf, 0.0, 1.0)[..., None]
        frames[f] = background * (1.0 - alpha) + colour * alpha
    return frames


def object_track(spec: ClipSpec, num_frames: int = 17) -> np.ndarray:
    """Ground-truth ``(x, y)`` centre of the object in every frame, ``[num_frames, 2]`` pixels."""
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    dx, dy = DIRECTIONS[spec.direction]
    progress = np.linspace(0.0, 1.0, num_frames) if num_frames > 1 else np.zeros(1)
    return np.stack([spec.start[0] + dx * spec.distance * progress, spec.start[1] + dy * spec.distance * progress], 1)


def _background(spec: ClipSpec, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    a, b = spec.bg_levels
    if spec.background == "plain":
        grey = np.full_like(xs, a)
    elif spec.background == "checkered":
        cells = (np.floor(xs / spec.bg_period) + np.floor(ys / spec.bg_period)) % 2
        grey = np.where(cells == 0, a, b)
    else:
        coord = (xs, ys, (xs + ys) / np.sqrt(2.0))[spec.bg_orientation]
        grey = np.where((coord // (spec.bg_period / 2.0)) % 2 == 0, a, b)
    return np.repeat(grey[..., None], 3, axis=-1).astype(np.float32)


def _shape_sdf(shape: str, x: np.ndarray, y: np.ndarray, r: float) -> np.ndarray:
    """Approximate signed distance (pixels, negative inside) to a shape centred at the origin."""
    if shape == "circle":
        return np.sqrt(x * x + y * y) - r
    if shape == "square":
        return np.maximum(np.abs(x), np.abs(y)) - r * 0.9
    if shape == "diamond":
        return (np.abs(x) + np.abs(y) - r * 1.25) / np.sqrt(2.0)
    if shape == "triangle":
        # Upward-pointing equilateral triangle with circumradius ~1.2 r.
        k = np.sqrt(3.0)
        s = r * 1.2
        edge1 = (k * x - y - s) / 2.0  # right edge
        edge2 = (-k * x - y - s) / 2.0  # left edge
        edge3 = y - s / 2.0  # bottom edge
        return np.maximum(np.maximum(edge1, edge2), edge3)
    raise ValueError(f"unknown shape {shape!r}; allowed: {SHAPES}")


def _check_word(name: str, value: object, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {sorted(allowed)}, got {value!r}")
