"""Renamed things that still work under their old names.

* :func:`renamed_argument`: a renamed keyword argument (the old one accepted with a ``DeprecationWarning``).
* :func:`renamed_option`: a renamed command-line option (an ``argparse`` action for the old one).
* :func:`current_spelling`: a renamed *name* users type (a method or model name on the command line or
  in the API, e.g. ``clear_local`` for ``clear-local``, ``tiny-hunyuan_video`` for ``tiny-hunyuan-video``),
  accepted with a :class:`RenamedWarning`, a ``FutureWarning`` so that command-line users see it too.
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Iterable

__all__ = ["renamed_argument", "RenamedWarning", "current_spelling", "renamed_option"]


class RenamedWarning(FutureWarning):
    """A method or model name was given in an old spelling; it still works, and the message names the current one."""


def current_spelling(name: str, names: Iterable[str], what: str) -> str | None:
    """The current spelling of ``name`` among ``names``: ``name`` itself when it is one of them; the one it
    matches ignoring case and with ``_`` read as ``-`` (an old spelling: warns :class:`RenamedWarning`);
    else ``None``.

    Args:
        name: what the user typed.
        names: the current names (lower case, words joined by ``-``).
        what: what the name names, for the message (``"method"``, ``"model"``).
    """
    names = tuple(names)
    if name in names:
        return name
    key = name.lower().replace("_", "-")
    for current in names:
        if current.lower().replace("_", "-") == key:
            if current.lower() != name.lower():
                warnings.warn(f"{what} name {name!r} is deprecated, use {current!r}", RenamedWarning, stacklevel=3)
            return current
    return None

_MISSING = object()


def renamed_argument(function: str, new_name: str, new_value, old_name: str, old_value=_MISSING):
    """The value of argument ``new_name`` of ``function``, given either as ``new_value`` or (deprecated,
    warns) under its old name ``old_name`` (``old_value``; ``None`` or the default :data:`_MISSING` mean
    not given).

    Raises:
        TypeError: both names given, or neither.
    """
    old_given = old_value is not _MISSING and old_value is not None
    if old_given:
        if new_value is not None:
            raise TypeError(f"{function}() got both {new_name}= and its deprecated name {old_name}=; pass {new_name}= only")
        warnings.warn(f"{function}(): the keyword {old_name}= is deprecated, use {new_name}=", DeprecationWarning,
                      stacklevel=3)
        return old_value
    if new_value is None:
        raise TypeError(f"{function}() missing required argument: {new_name!r}")
    return new_value


def renamed_option(new: str) -> type[argparse.Action]:
    """An ``argparse`` action for a command-line option renamed to ``new``: it stores its values where ``new``
    does (give it ``dest=`` of ``new``) and warns :class:`RenamedWarning` naming ``new``."""

    class RenamedOption(argparse.Action):
        def __call__(self, parser, namespace, values, option_string=None):
            warnings.warn(f"option {option_string} is deprecated, use {new}", RenamedWarning, stacklevel=2)
            setattr(namespace, self.dest, values)

    return RenamedOption
