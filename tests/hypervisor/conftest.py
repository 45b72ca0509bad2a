"""Fixtures for the hypervisor tests: a booted host with a hypervisor.

Snapshots are sealed with the key at $MALV_SNAPSHOT_KEY_FILE, which the
malvos pytest plugin (`malv_snapshot_key`) points at a temporary directory
for the whole session: no test makes or reads the user's own key."""

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


@pytest.fixture
def saved(host, tmp_path):
    """A snapshot of a guest 1 ms old, with that guest destroyed: ``(host, path)``."""
    vm = host.hv.create("g").start()
    host.machine.run(until=host.machine.now_ns + 1_000_000)
    path = tmp_path / "g.snap"
    vm.snapshot(str(path))
    host.hv.destroy("g")
    return host, path
