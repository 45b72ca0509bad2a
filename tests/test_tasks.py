"""Tasks, traps, CPU time and the scheduler."""

from __future__ import annotations

import pytest

from kernel import Kernel
from kernel.errors import InvalidArgument, UnknownTrap
from kernel.sched import FifoDsq, VtimeDsq
from kernel.traps import Compute, Exit, GetPid, GetTime, Sleep, Spawn, WaitPid, Yield


def test_compute_charges_virtual_cpu_time(bare_kernel: Kernel):
    def worker(proc):
        yield Compute(1500)

    pid = bare_kernel.spawn(worker)
    task = bare_kernel.tasks[pid]
    bare_kernel.run()
    assert pid not in bare_kernel.tasks
    assert task.cpu_ns >= 1_500_000
    assert bare_kernel.loop.now_ns >= 1_500_000


def test_two_cpus_run_two_tasks_in_parallel():
    k = Kernel(cpus=2)
    for _ in range(2):
        k.spawn(lambda proc: (yield Compute(10_000)))
    k.run()
    assert 10_000_000 <= k.loop.now_ns < 11_000_000
    k.shutdown()


def test_one_cpu_round_robins_between_tasks_by_time_slice():
    k = Kernel(cpus=1, slice_ns=1_000_000)
    order = []

    def worker(proc):
        for _ in range(3):
            yield Compute(1000)
            order.append(proc.name)

    k.spawn(worker, name="a")
    k.spawn(worker, name="b")
    k.run()
    assert order[:4] == ["a", "b", "a", "b"]
    k.shutdown()


def test_sleep_blocks_without_using_the_cpu(bare_kernel: Kernel):
    times = []

    def sleeper(proc):
        t0 = yield GetTime()
        yield Sleep(2000)
        times.append((yield GetTime()) - t0)

    pid = bare_kernel.spawn(sleeper)
    task = bare_kernel.tasks[pid]
    bare_kernel.run()
    assert times[0] >= 2_000_000
    assert task.cpu_ns < 100_000


def test_waitpid_returns_the_child_exit_status(bare_kernel: Kernel):
    result = []

    def child(proc):
        yield Compute(10)
        return 7

    def parent(proc):
        pid = yield Spawn(child)
        result.append((yield WaitPid(pid)))

    bare_kernel.spawn(parent)
    bare_kernel.run()
    assert result == [7]


def test_unknown_trap_is_an_error_in_the_caller_and_the_kernel_runs_on(bare_kernel: Kernel):
    caught = []

    def confused(proc):
        try:
            yield "not a trap"
        except UnknownTrap as exc:
            caught.append(exc.errno)
        yield "still not a trap"  # uncaught: the task dies

    def bystander(proc):
        yield Compute(100)
        return 0

    bad = bare_kernel.spawn(confused)
    good = bare_kernel.spawn(bystander)
    bare_kernel.run()
    assert caught == ["ENOSYS"]
    assert bare_kernel.exit_codes[bad] == -1
    assert bare_kernel.exit_codes[good] == 0
    killed = bare_kernel.log.find("killed")
    assert killed and "ENOSYS" in killed[0]["reason"]


def test_a_task_that_raises_is_killed_with_a_message_in_dmesg(bare_kernel: Kernel):
    def crasher(proc):
        yield Compute(1)
        raise RuntimeError("boom")

    pid = bare_kernel.spawn(crasher)
    bare_kernel.run()
    assert bare_kernel.exit_codes[pid] == -1
    assert any("boom" in line for line in bare_kernel.log.lines())


def test_bad_trap_arguments_raise_in_the_caller(bare_kernel: Kernel):
    errors = []

    def prog(proc):
        for trap in (Compute(-1), Sleep(float("nan")), WaitPid(999)):
            try:
                yield trap
            except Exception as exc:
                errors.append(type(exc).__name__)

    bare_kernel.spawn(prog)
    bare_kernel.run()
    assert errors == ["InvalidArgument", "InvalidArgument", "NoSuchTask"]


def test_spawning_an_unknown_program_is_a_clear_error(bare_kernel: Kernel):
    with pytest.raises(InvalidArgument, match="no program named 'nope'"):
        bare_kernel.spawn("nope")


def test_exit_and_yield_and_getpid(bare_kernel: Kernel):
    seen = []

    def prog(proc):
        seen.append((yield GetPid()) == proc.pid)
        yield Yield()
        yield Exit(3)
        seen.append("unreachable")

    pid = bare_kernel.spawn(prog)
    bare_kernel.run()
    assert seen == [True]
    assert bare_kernel.exit_codes[pid] == 3


def test_runs_are_deterministic_for_a_seed():
    def trace(seed):
        k = Kernel(seed=seed, cpus=2)
        events = []

        def worker(proc):
            for _ in range(5):
                yield Compute(proc.rng.randint(1, 500))
                events.append((proc.name, (yield GetTime())))

        for i in range(4):
            k.spawn(worker, name=f"w{i}")
        k.run()
        k.shutdown()
        return events

    assert trace(1) == trace(1)
    assert trace(1) != trace(2)


def test_fifo_and_vtime_dispatch_queues_order_tasks():
    class T:
        def __init__(self, pid, vtime):
            self.pid, self.vtime = pid, vtime

    fifo, vt = FifoDsq("f"), VtimeDsq("v")
    tasks = [T(1, 30), T(2, 10), T(3, 20)]
    for t in tasks:
        fifo.push(t)
        vt.push(t)
    assert [fifo.pop().pid for _ in range(3)] == [1, 2, 3]
    assert [vt.pop().pid for _ in range(3)] == [2, 3, 1]


def test_sched_advisor_hook_is_consulted_for_the_next_task():
    k = Kernel(cpus=1)
    order = []

    class LastFirst:
        name = "last-first"
        calls = 0

        def select_next(self, candidates, cpu):
            self.calls += 1
            return max(candidates, key=lambda t: t.pid)

    advisor = LastFirst()
    k.sched.advisor = advisor
    for i in range(3):
        k.spawn(lambda proc: (yield Compute(10), order.append(proc.name))[0], name=f"t{i}")
    k.run()
    assert advisor.calls > 0
    assert order == ["t2", "t1", "t0"]
    k.shutdown()


def test_an_advisor_answering_a_non_runnable_task_falls_back_and_is_reported():
    k = Kernel(cpus=1)
    faults = []
    k.sched.on_advisor_fault = lambda adv, kind, msg: (
        faults.append(kind),
        setattr(k.sched, "advisor", None),
    )

    class Garbage:
        name = "garbage"

        def select_next(self, candidates, cpu):
            return "not a task"

    k.sched.advisor = Garbage()
    pids = [k.spawn(lambda proc: (yield Compute(10))) for _ in range(3)]
    k.run()
    assert faults == ["invalid"]
    assert all(k.exit_codes[p] == 0 for p in pids)
    k.shutdown()
