"""The malvos pytest plugin (registered under the `pytest11` entry point).

Any project that installs malvos gets these fixtures:

* `malv_kernel` — a booted headless kernel (seed 0), shut down after the test;
* `malv_boot` — a factory, ``malv_boot(seed=3, cpus=4)`` or
  ``malv_boot(KernelConfig(...))``, for tests that need several kernels or
  other settings; every kernel it made is shut down;
* `malv_snapshot_key` — used by every test, unasked: the path of the host
  key that VM snapshots are sealed with during the session, in a temporary
  directory, so that no test makes or reads the user's own key.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from kernel import Kernel, KernelConfig, boot


@pytest.fixture(scope="session", autouse=True)
def malv_snapshot_key(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The path of the host key VM snapshots are sealed with, in a temporary
    directory for the session; every test uses it unasked, so no test makes or
    reads the user's own key."""
    # (imported here: the plugin's other fixtures need no hypervisor)
    from kernel.hypervisor.seal import KEY_ENV

    path = str(tmp_path_factory.mktemp("malvos-state") / "snapshot.key")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(KEY_ENV, path)
        yield path


@pytest.fixture
def malv_boot() -> Iterator[Callable[..., Kernel]]:
    """A factory of booted headless kernels: ``malv_boot(seed=3, cpus=4)`` or
    ``malv_boot(KernelConfig(...))`` (seed 0 unless told otherwise).  Every
    kernel it made is shut down after the test."""
    kernels: list[Kernel] = []

    def factory(config: KernelConfig | None = None, **settings: Any) -> Kernel:
        k = boot(config, **settings)  # headless, seed 0 unless told otherwise
        kernels.append(k)
        return k

    yield factory
    for k in kernels:
        k.shutdown()


@pytest.fixture
def malv_kernel(malv_boot: Callable[..., Kernel]) -> Kernel:
    """A booted headless kernel, seed 0, at its shell prompt; shut down after the test."""
    return malv_boot()
