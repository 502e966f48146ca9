"""Method names on the command line: ``--method NAME --method-arg key=value`` -> an accel method object.

The method vocabulary shared by ``accel generate``, ``accel render``, the app and
:func:`accel.pipelines.load`.

* :data:`METHODS` maps the command-line name to the public class name in :mod:`accel`; names are lower
  case with words joined by ``-`` (``clear-local``); the old spelling with ``_`` (``clear_local``) still
  works with a :class:`~accel.kernels.renamed.RenamedWarning` (:func:`method_name`).
* :func:`parse_method_args` parses ``key=value`` strings.
* :func:`build_method` builds a method from a name and keyword arguments (class defaults).
* :func:`method_record` describes a method and its schedule as JSON data (render manifests, eval results).
* :func:`method_for_model` builds it from the published per-model setting (``Cls.preset(model)``,
  which cites its source) when there is one for that model, with keyword arguments on top.
"""

from __future__ import annotations

import dataclasses
import importlib
import re

from accel.kernels.renamed import current_spelling
from accel.methods.preset import model_names

__all__ = ["METHODS", "method_name", "parse_method_args", "method_class", "build_method", "method_for_model",
           "method_record"]

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


def method_name(name: str) -> str:
    """The :data:`METHODS` name that ``name`` stands for: itself, or for an old spelling (``clear_local``,
    any case) the current one (``clear-local``), with a :class:`~accel.kernels.renamed.RenamedWarning`.

    Raises:
        ValueError: ``name`` is no method name (the message lists them).
    """
    found = current_spelling(name, METHODS, "method") if isinstance(name, str) else None
    if found is None:
        raise ValueError(f"--method must be one of {sorted(METHODS)}, got {name!r}")
    return found


def method_class(name: str):
    """The method class of a command-line method name (``None`` for ``"none"``; old spellings as in
    :func:`method_name`).

    Raises:
        ValueError: ``name`` is not one of :data:`METHODS`.
    """
    name = method_name(name)
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
    name = method_name(name)
    cls = method_class(name)
    if cls is None:
        if kwargs:
            raise ValueError("--method-arg given but --method is none")
        return None
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ValueError(f"bad --method-arg for {name}: {exc}") from exc


def method_for_model(name: str, kwargs: dict, model: str | None):
    """``(method, schedule, source)`` for ``name`` on a model, starting from the method's published setting.

    Args:
        name: a :data:`METHODS` name.
        kwargs: method fields that replace the published ones (``--method-arg``).
        model: a model name for ``Cls.preset(model)`` (the preset names of :mod:`accel.pipelines.presets`,
            or a family ``"wan"``, ``"hunyuan_video"``, ``"flux"``), or ``None`` for class defaults.

    Returns:
        ``(None, None, "")`` for ``none``; otherwise the method, its published :class:`~accel.Schedule`
        (``None`` when the class has no published setting for ``model``: the tiny and embedded models,
        whose grids are far smaller than the papers', Radial on FLUX images, Agent and Dense) and a text
        naming the source (``"class defaults"`` when none).

    Raises:
        ValueError: unknown method or model name, or bad arguments.
    """
    name = method_name(name)
    cls = method_class(name)
    if cls is None:
        if kwargs:
            raise ValueError("--method-arg given but --method is none")
        return None, None, ""
    if model is not None:
        model_names(model)  # an unknown model name is an error, not "no published setting"
        try:
            published = cls.preset(model)
        except ValueError:  # no published setting of this class for this model
            published = None
        if published is not None:
            try:
                method = dataclasses.replace(published.method, **kwargs)
            except TypeError as exc:
                raise ValueError(f"bad --method-arg for {name}: {exc}") from exc
            return method, published.schedule, published.source
    return build_method(name, kwargs), None, "class defaults"


def _json_value(value):
    if isinstance(value, (tuple, list)):
        return [_json_value(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def method_record(method, schedule=None, source: str | None = None) -> dict:
    """A JSON-ready record of an attention method and its dense schedule (what ran).

    Args:
        method: an accel method object (a dataclass: its fields are the parameters), or ``None`` for
            upstream attention.
        schedule: its :class:`~accel.Schedule`, or ``None`` (recorded as ``null``).
        source: where the setting comes from (``method_for_model``'s third value), or ``None``.

    Returns:
        ``{"name", "class", "parameters", "schedule", "source"}``: ``name`` the :data:`METHODS` name
        (``"none"`` for ``None``; ``None`` for a class not in :data:`METHODS`), ``class`` the class name,
        ``parameters`` every dataclass field (tuples as lists; values that are not JSON data as their
        ``repr``), ``schedule`` the schedule's fields (``dense_steps``, ``dense_layers``, ...).
    """
    if method is None:
        name, cls, params = "none", None, {}
    else:
        cls = type(method).__name__
        name = next((key for key, value in METHODS.items() if value == cls), None)
        fields = dataclasses.fields(method) if dataclasses.is_dataclass(method) else ()
        params = {f.name: _json_value(getattr(method, f.name)) for f in fields}
    sched = None
    if schedule is not None:
        sched = {f.name: _json_value(getattr(schedule, f.name)) for f in dataclasses.fields(schedule)}
    return {"name": name, "class": cls, "parameters": params, "schedule": sched, "source": source}
