"""The pytest plugin is registered under `pytest11` and its fixtures work."""

from __future__ import annotations

from importlib.metadata import entry_points

from kernel import Kernel


def test_plugin_is_registered_as_a_pytest11_entry_point():
    names = {ep.name: ep.value for ep in entry_points(group="pytest11")}
    assert names.get("malvos") == "kernel.pytest_plugin"


def test_malv_kernel_fixture_is_booted_and_headless(malv_kernel: Kernel):
    assert not malv_kernel.halted
    assert malv_kernel.tty.waiting_prompt == "$ "
    assert malv_kernel.shell("run echo ok") == "ok\n"


def test_malv_boot_factory_makes_independent_kernels(malv_boot):
    a, b = malv_boot(seed=1), malv_boot(seed=2, cpus=4)
    assert len(b.cpus) == 4 and a.tasks is not b.tasks
