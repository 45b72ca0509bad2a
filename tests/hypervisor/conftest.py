"""Fixtures for the hypervisor tests: a booted host with a hypervisor."""

from __future__ import annotations

import pytest

from kernel import Kernel
from kernel.hypervisor import Hypervisor


@pytest.fixture
def host():
    """A booted host kernel with a hypervisor (as `host.hv`); every guest is
    destroyed and the machine shut down after the test."""
    k = Kernel(seed=0, name="host").boot()
    k.hv = Hypervisor(k)
    yield k
    k.hv.shutdown()
    k.machine.shutdown()
