"""The command-line method vocabulary: ``--method NAME --method-arg key=value`` -> method objects."""

import pytest

import accel
from accel.methods.registry import build_method, parse_method_args


def test_parse_method_args():
    assert parse_method_args(["window=3,9,9", "causal=false", "decay=0.2", "radius_t=none", "backend=flex"]) == {
        "window": (3, 9, 9), "causal": False, "decay": 0.2, "radius_t": None, "backend": "flex",
    }
    with pytest.raises(ValueError, match="key=value"):
        parse_method_args(["window"])


def test_build_method():
    m = build_method("neighborhood", {"window": (3, 5, 5)})
    assert isinstance(m, accel.Neighborhood) and m.window == (3, 5, 5)
    assert build_method("none", {}) is None
    with pytest.raises(ValueError, match="--method must be one of"):
        build_method("sparse", {})
    with pytest.raises(ValueError, match="bad --method-arg for radial"):
        build_method("radial", {"windw": 3})
