"""Fixtures for the virtqueue and hypercall tests."""

from __future__ import annotations

import pytest
from rings import Ring


@pytest.fixture
def ring() -> Ring:
    return Ring()
