"""Fixtures for the GPU virtualization tests: a host with a vGPU and a hypervisor."""

from __future__ import annotations

import pytest

from drivers.vgpu.backend import vgpu_backend
from drivers.vgpu.frontend import vgpu_front
from kernel import Kernel
from kernel.hypervisor import Hypervisor
from kernel.programs import DEFAULT_PROGRAMS

# The entry points in pyproject.toml are the real registration; an install
# made before they were added lacks them, so they are registered here then.
for _name, _program in (("vgpu-front", vgpu_front), ("vgpu-backend", vgpu_backend)):
    if _name not in DEFAULT_PROGRAMS.names():
        DEFAULT_PROGRAMS.register(_name, _program)


@pytest.fixture
def host():
    """A booted host kernel with an a100 vGPU and a hypervisor (as `host.hv`);
    every guest is destroyed and the machine shut down after the test."""
    k = Kernel(seed=0, name="host", gpu="a100").boot()
    k.hv = Hypervisor(k)
    yield k
    k.hv.shutdown()
    k.machine.shutdown()
