"""accel's top-level names: ``__all__`` is exactly what ``accel.__getattr__`` serves, every name resolves, and
the ``TYPE_CHECKING`` imports (for editors and type checkers) name the same objects as the lazy exports."""

import ast
import importlib
from pathlib import Path

import accel

INIT = Path(accel.__file__)


def _type_checking_imports() -> dict[str, str]:
    tree = ast.parse(INIT.read_text())
    out = {}
    for node in tree.body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for imp in node.body:
                assert isinstance(imp, ast.ImportFrom)
                out.update({alias.name: imp.module for alias in imp.names})
    return out


def test_all_is_exactly_what_getattr_serves():
    served = set(accel._EXPORTS) | set(accel._SUBPACKAGES) | {"__version__"}
    assert sorted(accel.__all__) == accel.__all__ and set(accel.__all__) == served
    assert len(accel.__all__) == len(served)
    for name in accel.__all__:
        value = getattr(accel, name)
        if name in accel._SUBPACKAGES:
            assert value is importlib.import_module(f"accel.{name}")
        elif name in accel._EXPORTS:
            assert value is getattr(importlib.import_module(accel._EXPORTS[name]), name)
    assert dir(accel) == accel.__all__


def test_type_checking_imports_mirror_the_lazy_exports():
    assert _type_checking_imports() == accel._EXPORTS


def test_unknown_names_are_attribute_errors():
    try:
        accel.Sparse  # noqa: B018
    except AttributeError as exc:
        assert "module 'accel' has no attribute 'Sparse'" in str(exc)
    else:
        raise AssertionError("accel.Sparse resolved")
