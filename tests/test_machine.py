"""A machine owns the event loop and the kernels on it; running it runs them all."""

from __future__ import annotations

import pytest

from kernel import Kernel, KernelConfig, Machine, boot
from kernel.traps import Compute, GetTime


def compute_then_record(us: int, finished: list):
    def program(proc):
        yield Compute(us)
        finished.append((proc.name, (yield GetTime())))

    return program


def test_two_kernels_on_one_machine_both_progress_when_the_machine_runs():
    machine = Machine()
    a, b = machine.kernel(name="a"), machine.kernel(name="b")
    assert machine.kernels == [a, b] and a.loop is b.loop is machine.loop
    finished: list = []
    a.spawn(compute_then_record(10_000, finished), name="on-a")
    b.spawn(compute_then_record(10_000, finished), name="on-b")
    machine.run()
    # Each kernel has its own CPUs on bare metal: both finish 10 ms in.
    assert sorted(name for name, _ in finished) == ["on-a", "on-b"]
    assert all(10_000_000 <= t < 10_010_000 for _, t in finished), finished
    machine.shutdown()
    assert a.halted and b.halted


def test_machine_run_stops_at_its_horizon_for_every_kernel():
    with Machine() as machine:
        a, b = machine.kernel(name="a"), machine.kernel(name="b")
        finished: list = []
        a.spawn(compute_then_record(10_000, finished), name="on-a")
        b.spawn(compute_then_record(30_000, finished), name="on-b")
        machine.run(until=20_000_000)
        assert machine.now_ns == 20_000_000 and [n for n, _ in finished] == ["on-a"]
        machine.run()
        assert [n for n, _ in finished] == ["on-a", "on-b"]


def test_booted_kernels_share_a_machine_and_keep_their_own_tasks():
    with Machine() as machine:
        a = machine.boot(name="a")
        b = boot(KernelConfig(name="b", seed=1), machine=machine)
        assert a.shell("run echo from a") == "from a\n"
        assert b.shell("run echo from b") == "from b\n"
        assert a.tasks is not b.tasks and a.machine is b.machine


def test_a_kernel_sharing_its_machine_is_run_by_the_machine():
    with Machine() as machine:
        a = machine.kernel(name="a")
        machine.kernel(name="b")
        with pytest.raises(RuntimeError, match=r"kernel 'a' shares its machine .* machine\.run"):
            a.run()


def test_a_lone_kernel_gets_a_machine_of_its_own_and_runs_alone():
    k = Kernel()
    finished: list = []
    k.spawn(compute_then_record(1_000, finished), name="alone")
    k.run()
    assert k.machine.kernels == [k] and finished == [("alone", finished[0][1])]
    assert finished[0][1] >= 1_000_000
    k.shutdown()


def test_the_machine_stops_when_its_last_kernel_halts():
    with Machine() as machine:
        a, b = machine.boot(name="a"), machine.boot(name="b")
        a.shell("poweroff")
        assert a.halted and not b.halted
        b.tty.feed("poweroff")
        machine.run()  # returns: every kernel on it has halted
        assert b.halted and b.halt_reason.startswith("poweroff")


def test_a_realtime_kernel_needs_a_realtime_machine():
    with pytest.raises(ValueError, match="is realtime, but its machine is not"):
        Kernel(KernelConfig(headless=False), machine=Machine())
