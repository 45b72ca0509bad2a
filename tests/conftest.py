"""Shared helpers for malvos tests.  The fixtures `malv_kernel` and
`malv_boot` come from the malvos pytest plugin (kernel/pytest_plugin.py)."""

from __future__ import annotations

import pytest

from drivers.vgpu.backend import vgpu_backend
from drivers.vgpu.frontend import vgpu_front
from kernel import Kernel
from kernel.programs import DEFAULT_PROGRAMS

# The entry points in pyproject.toml are the real registration of a guest's
# GPU front end and its host back end; an install made before they were added
# lacks them, so they are registered here then.
for _name, _program in (("vgpu-front", vgpu_front), ("vgpu-backend", vgpu_backend)):
    if _name not in DEFAULT_PROGRAMS.names():
        DEFAULT_PROGRAMS.register(_name, _program)


@pytest.fixture
def bare_kernel():
    """A kernel with no console, init or shell: tests spawn their own tasks."""
    k = Kernel(seed=0)
    yield k
    k.shutdown()
