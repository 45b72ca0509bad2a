"""Shared helpers for malvos tests.  The fixtures `malv_kernel` and
`malv_boot` come from the malvos pytest plugin (kernel/pytest_plugin.py)."""

from __future__ import annotations

import pytest

from kernel import Kernel


@pytest.fixture
def bare_kernel():
    """A kernel with no console, init or shell: tests spawn their own tasks."""
    k = Kernel(seed=0)
    yield k
    k.shutdown()
