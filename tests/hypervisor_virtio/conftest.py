"""Fixtures for the virtqueue and hypercall tests."""

from __future__ import annotations

import pytest
from rings import Ring


@pytest.fixture
def ring() -> Ring:
    """A ring of 8 in fresh guest memory, with its driver and device halves (rings.py)."""
    return Ring()
