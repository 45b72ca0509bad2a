"""Fixtures for the MLaaS tests: kernels."""

from __future__ import annotations

import pytest

from kernel import Kernel


@pytest.fixture
def kernel():
    """A kernel with no shell (tests spawn their own tasks), 64 frames, 1 CPU."""
    k = Kernel(seed=0, cpus=1, frames=64)
    yield k
    k.shutdown()
