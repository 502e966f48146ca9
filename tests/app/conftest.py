"""Fixtures of the demo's tests: one model cache and one output folder per test module."""

import pytest

from accel.app.models import ModelCache
from accel.app.outputs import OutputFolder


@pytest.fixture(scope="module")
def models():
    """The demo's models, loaded on first use, without the warm-up call (tests time nothing)."""
    return ModelCache(warm_up=False)


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    """A fresh output folder for the module."""
    return OutputFolder(tmp_path_factory.mktemp("app_out"))
