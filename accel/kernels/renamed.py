"""A renamed keyword argument: the new name, and the old one accepted with a ``DeprecationWarning``."""

from __future__ import annotations

import warnings

__all__ = ["renamed_argument"]

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
