"""Test configuration shared by the whole suite.

TRITON_INTERPRET must be set before any Triton kernel is *defined* (``@triton.jit`` chooses the
interpreter at decoration time), so it is set here, before accel is imported by any test module.
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

try:  # the GPU machine runs tests/kernels/test_gpu.py with pytest alone
    from hypothesis import HealthCheck, settings
except ImportError:  # pragma: no cover
    settings = None
if settings is not None:
    settings.register_profile(
        "accel",
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        print_blob=True,
    )
    settings.load_profile("accel")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
