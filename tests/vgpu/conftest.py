"""Fixtures for the virtual GPU tests: a small device and both timing back ends."""

from __future__ import annotations

import pytest

from drivers.vgpu.engine import Engine
from drivers.vgpu.presets import a100, scaled
from drivers.vgpu.reference import ReferenceEngine


@pytest.fixture(params=[Engine, ReferenceEngine], ids=["engine", "reference"])
def device_cls(request):
    """Each behaviour is checked on the compiled engine and on the reference model."""
    return request.param


@pytest.fixture
def small():
    """An A100 cut to 4 TPCs, with a 1 us clock-switch latency."""
    return scaled(a100, 4, switch_latency_ns=1_000)
