"""The malvos pytest plugin (registered under the `pytest11` entry point).

Any project that installs malvos gets these fixtures:

* `malv_kernel` — a booted headless kernel (seed 0), shut down after the test;
* `malv_boot` — a factory, ``malv_boot(seed=3, cpus=4)``, for tests that need
  several kernels or other settings; every kernel it made is shut down.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from kernel import Kernel, boot


@pytest.fixture
def malv_boot() -> Iterator[Callable[..., Kernel]]:
    kernels: list[Kernel] = []

    def factory(**config: Any) -> Kernel:
        config.setdefault("seed", 0)
        k = boot(headless=True, **config)
        kernels.append(k)
        return k

    yield factory
    for k in kernels:
        k.shutdown()


@pytest.fixture
def malv_kernel(malv_boot: Callable[..., Kernel]) -> Kernel:
    return malv_boot()
