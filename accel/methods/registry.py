"""Method names on the command line: ``--method NAME --method-arg key=value`` -> an accel method object.

The method vocabulary shared by ``accel generate``, ``accel render``, ``accel eval``, the app and
:func:`accel.pipelines.load`.

* :data:`METHODS` maps the command-line name to the public class name in :mod:`accel`.
* :func:`parse_method_args` parses ``key=value`` strings.
* :func:`build_method` builds a method from a name and keyword arguments (class defaults).
* :func:`method_for_model` builds it from the published per-model setting (``Cls.preset(model)``,
  which cites its source; for Rectified, :data:`accel.methods.rectified.RECTIFIED_PRESETS` of the
  checkpoint) when there is one for that model, with keyword arguments on top.
"""

from __future__ import annotations

import importlib
import re

__all__ = ["METHODS", "parse_method_args", "method_class", "build_method", "method_for_model"]

# command-line name -> public class name in accel (None: no method, upstream attention)
METHODS = {
    "none": None,
    "dense": "Dense",
    "radial": "Radial",
    "clear-local": "ClearLocal",
    "neighborhood": "Neighborhood",
    "rectified": "Rectified",
    "agent": "Agent",
}

# public class name -> module of accel.methods that defines it
_MODULES = {
    "Dense": "accel.methods.dense",
    "Radial": "accel.methods.radial",
    "ClearLocal": "accel.methods.clear_local",
    "Neighborhood": "accel.methods.neighborhood",
    "Rectified": "accel.methods.rectified",
    "Agent": "accel.methods.agent",
}


def _parse_value(text: str):
    if "," in text:
        return tuple(_parse_value(part) for part in text.split(",") if part)
    low = text.lower()
    if low in {"true", "false"}:
        return low == "true"
    if low == "none":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_method_args(items: list[str]) -> dict:
    """Turn ``["window=3,9,9", "causal=false"]`` into ``{"window": (3, 9, 9), "causal": False}``.

    Values are parsed as int, float, bool (``true``/``false``), ``none``, a comma-separated tuple of
    those, or else kept as a string.

    Raises:
        ValueError: an item is not ``key=value`` with a Python identifier as key.
    """
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_]\w*", key):
            raise ValueError(f"--method-arg must look like key=value (e.g. window=3,9,9), got {item!r}")
        out[key] = _parse_value(value)
    return out


def method_class(name: str):
    """The method class of a command-line method name (``None`` for ``"none"``).

    Raises:
        ValueError: ``name`` is not one of :data:`METHODS`.
    """
    if name not in METHODS:
        raise ValueError(f"--method must be one of {sorted(METHODS)}, got {name!r}")
    if METHODS[name] is None:
        return None
    return getattr(importlib.import_module(_MODULES[METHODS[name]]), METHODS[name])


def build_method(name: str, kwargs: dict):
    """The accel method object for a command-line method name (``None`` for ``"none"``), class defaults.

    Args:
        name: one of :data:`METHODS` (``none``, ``dense``, ``radial``, ``clear-local``,
            ``neighborhood``, ``rectified``, ``agent``).
        kwargs: keyword arguments of the method's dataclass (e.g. ``{"window": (3, 9, 9)}``).

    Raises:
        ValueError: unknown method name, or arguments the method does not accept.
    """
    cls = method_class(name)
    if cls is None:
        if kwargs:
            raise ValueError("--method-arg given but --method is none")
        return None
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ValueError(f"bad --method-arg for {name}: {exc}") from exc


# Dense warm-up of the Rectified release's Wan 2.1 processors, as recorded next to RECTIFIED_PRESETS in
# accel/methods/rectified.py (first 2 layers always, first 5 steps for T2V); other checkpoints: not stated.
_RECTIFIED_SCHEDULES = {"wan2.1-t2v": dict(dense_steps=5, dense_layers=2), "wan2.1-i2v": dict(dense_layers=2)}


def _rectified_for(checkpoint: str, kwargs: dict):
    from accel.methods.rectified import RECTIFIED_PRESETS, Rectified
    from accel.schedule import Schedule

    try:
        method = Rectified(**{**RECTIFIED_PRESETS[checkpoint], **kwargs})
    except TypeError as exc:
        raise ValueError(f"bad --method-arg for rectified: {exc}") from exc
    fields = _RECTIFIED_SCHEDULES.get(checkpoint)
    schedule = Schedule(**fields) if fields else None
    return method, schedule, f"Rectified release setting for {checkpoint} (accel.methods.rectified.RECTIFIED_PRESETS)"


def method_for_model(name: str, kwargs: dict, model: str | None, checkpoint: str | None = None):
    """``(method, schedule, source)`` for ``name`` on a model family, starting from the published setting.

    Args:
        name: a :data:`METHODS` name.
        kwargs: method fields that replace the published ones (``--method-arg``).
        model: the method presets' model key (``"wan"``, ``"hunyuan_video"``, ``"flux"``), or ``None``
            for class defaults (tiny and embedded models, whose grids are far smaller than the papers').
        checkpoint: key of :data:`accel.methods.rectified.RECTIFIED_PRESETS` (``"wan2.1-t2v"``, ...)
            for Rectified's per-checkpoint setting, or ``None``.

    Returns:
        ``(None, None, "")`` for ``none``; otherwise the method, its recommended
        :class:`~accel.Schedule` (``None`` when the class has no published setting for ``model``) and a
        text naming the source (``"class defaults"`` when none).

    Raises:
        ValueError: unknown name or bad arguments.
    """
    cls = method_class(name)
    if cls is None:
        if kwargs:
            raise ValueError("--method-arg given but --method is none")
        return None, None, ""
    if name == "rectified" and checkpoint is not None:
        return _rectified_for(checkpoint, kwargs)
    preset = getattr(cls, "preset", None)
    if model is not None and preset is not None:
        try:
            published = preset(model)
        except ValueError:  # the class has no setting for this model (e.g. Radial on FLUX images)
            published = None
        if published is not None:
            import dataclasses

            try:
                method = dataclasses.replace(published.method, **kwargs)
            except TypeError as exc:
                raise ValueError(f"bad --method-arg for {name}: {exc}") from exc
            return method, published.schedule, published.source
    return build_method(name, kwargs), None, "class defaults"
