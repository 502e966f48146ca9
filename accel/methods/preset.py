"""`Preset`: a method's published (or documented) configuration for one model, and the model names.

One vocabulary of model names serves every layer: the preset names of :mod:`accel.pipelines.presets`
(``accel render --model``, :func:`accel.pipelines.load`, the app) are the names ``Method.preset(model)``
takes. :data:`MODEL_FAMILIES` lists them with the model family whose published method settings apply.
A family name (``"wan"``, ``"hunyuan_video"``, ``"flux"``) is accepted where every model of that family
has the same setting.
"""

from __future__ import annotations

from collections.abc import Callable
from types import MappingProxyType
from typing import TYPE_CHECKING, NamedTuple

from accel.kernels.renamed import current_spelling
from accel.schedule import Schedule

if TYPE_CHECKING:
    from accel.methods.base import AttentionMethod

__all__ = ["Preset", "Published", "MODEL_FAMILIES", "FAMILIES", "model_names", "resolve_preset"]

#: The model families of the published method settings.
FAMILIES = ("hunyuan_video", "wan", "flux")

#: Model name (the preset names of :mod:`accel.pipelines.presets`) -> the family whose published method
#: settings apply, or ``None`` for the offline models (the embedded model and the tiny random-weight
#: pipelines), whose grids are far smaller than the papers' and which have no published setting.
MODEL_FAMILIES = MappingProxyType({
    "embedded": None,
    "tiny-wan": None,
    "tiny-wan-i2v": None,
    "tiny-hunyuan-video": None,
    "tiny-flux": None,
    "hunyuan-video": "hunyuan_video",
    "wan2.1-t2v-1.3b": "wan",
    "wan2.1-t2v-14b": "wan",
    "wan2.1-i2v-14b-480p": "wan",
    "wan2.1-i2v-14b-720p": "wan",
    "wan2.2-t2v-a14b": "wan",
    "wan2.2-ti2v-5b": "wan",
    "flux.1-dev": "flux",
    "flux.1-schnell": "flux",
})


class Preset(NamedTuple):
    """A published (or documented) configuration: the method, the dense schedule, and where it comes from.

    Use as ``accel.apply(pipe, preset)`` (the same as ``accel.apply(pipe, preset.method,
    schedule=preset.schedule)``).

    Attributes:
        method: the configured attention method.
        schedule: the :class:`~accel.Schedule` the source pairs it with (``Schedule()``: never dense).
        source: where the setting comes from (paper, script, or "ours").
    """

    method: AttentionMethod
    schedule: Schedule
    source: str


class Published(NamedTuple):
    """One model's published setting of a method class: its fields, its schedule and the source."""

    fields: dict
    schedule: Schedule
    source: str


def model_names(model: str) -> tuple[str, ...]:
    """The model names ``model`` stands for: itself for a name of :data:`MODEL_FAMILIES` (case-insensitive),
    every model of the family for a family of :data:`FAMILIES`, the current name for an old spelling
    (``tiny-hunyuan_video``: ``_`` for ``-``; warns :class:`~accel.kernels.renamed.RenamedWarning`).

    Raises:
        TypeError: ``model`` is not a str.
        ValueError: an unknown name (the message lists the valid ones).
    """
    if not isinstance(model, str):
        raise TypeError(f"model must be a str, got {type(model).__name__}")
    key = model.lower()
    if key in MODEL_FAMILIES:
        return (key,)
    if key in FAMILIES:
        return tuple(name for name, family in MODEL_FAMILIES.items() if family == key)
    current = current_spelling(model, MODEL_FAMILIES, "model")
    if current is not None:
        return (current,)
    raise ValueError(f"unknown model {model!r}; model names are {', '.join(MODEL_FAMILIES)} "
                     f"(or a family where its models agree: {', '.join(FAMILIES)})")


def resolve_preset(cls: type, model: str, published: Callable[[str], Published | None], overrides: dict) -> Preset:
    """The :class:`Preset` of method class ``cls`` for ``model`` (see :meth:`AttentionMethod.preset`).

    Args:
        cls: the method class.
        model: a model name or family (:func:`model_names`).
        published: ``name -> Published`` for one model name, ``None`` (or ``ValueError`` with the reason)
            where the class has no setting for it.
        overrides: method fields that replace the published ones.

    Raises:
        ValueError: unknown model; no published setting; a family whose models have different settings.
    """
    names = model_names(model)
    found: dict[str, Published] = {}
    reasons: list[ValueError] = []
    for name in names:
        try:
            setting = published(name)
        except ValueError as exc:
            reasons.append(exc)
            continue
        if setting is not None:
            found[name] = setting
    if not found:
        if reasons:
            raise reasons[0]
        raise ValueError(f"{cls.__name__} has no published setting for {model!r} (models with one: "
                         f"{', '.join(_names_with_setting(published)) or 'none'}); use the class defaults")
    settings = list(found.values())
    if len(found) < len(names) or any(s != settings[0] for s in settings):
        raise ValueError(f"{model!r} is ambiguous for {cls.__name__}: its models have different settings; "
                         f"name one of {', '.join(found)}")
    fields, schedule, source = settings[0]
    return Preset(cls(**{**fields, **overrides}), schedule, source)


def _names_with_setting(published) -> list[str]:
    out = []
    for name in MODEL_FAMILIES:
        try:
            if published(name) is not None:
                out.append(name)
        except ValueError:
            pass
    return out
