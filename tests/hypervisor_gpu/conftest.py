"""Fixtures for the GPU virtualization tests: a host with a vGPU and a hypervisor."""

from __future__ import annotations

import pytest

from kernel import Kernel
from kernel.hypervisor import Hypervisor


@pytest.fixture
def host():
    """A booted host kernel with an a100 vGPU and a hypervisor (as `host.hv`);
    every guest is destroyed and the machine shut down after the test."""
    k = Kernel(seed=0, name="host", gpu="a100").boot()
    k.hv = Hypervisor(k)
    yield k
    k.hv.shutdown()
    k.machine.shutdown()
