"""No trap makes the kernel allocate without bound: each kind of request has a limit,
and a request past it gets one clear error while the kernel goes on."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernel import Kernel, Message
from kernel.config import DEFAULT_TASK_PAGES
from kernel.errors import SyscallError
from kernel.memory import MAX_ACCESS_BYTES, PTES_PER_TABLE
from kernel.syscall import (
    MAX_ALARMS,
    MAX_ARGS,
    MAX_CAPS,
    MAX_DURATION_US,
    MAX_LOG_FIELDS,
    MAX_TASKS,
    MAX_TEXT,
)
from kernel.trace import MAX_EVENTS
from kernel.traps import (
    MAX_MSG_CAPS,
    Alarm,
    Compute,
    Copy,
    Delete,
    Log,
    Mint,
    NewEndpoint,
    NewNotification,
    NewReply,
    Recv,
    Send,
    Sleep,
    Spawn,
    Trace,
)


def outcome_of(trap: Any):
    """A program step: yield `trap`, and give back its result or its errno."""
    try:
        return (yield trap)
    except SyscallError as exc:
        return exc.errno


def run_program(k: Kernel, body, until_ns: int = 10**9) -> list[Any]:
    seen: list[Any] = []

    def program(proc):
        yield from body(proc, seen)

    k.spawn(program)
    k.run(until=until_ns)
    return seen


@pytest.fixture
def k():
    """A kernel with no shell, seed 0, one CPU; shut down after the test."""
    kernel = Kernel(seed=0, cpus=1)
    yield kernel
    kernel.shutdown()


def test_a_task_holds_a_bounded_number_of_caps_and_deleting_one_makes_room(k):
    def body(proc, seen):
        slots = []
        while (slot := (yield from outcome_of(NewEndpoint()))) != "ENOMEM":
            slots.append(slot)
        seen.append(len(slots))
        for trap in (NewNotification(), NewReply(), Mint(slots[0], badge=3), Copy(slots[0])):
            seen.append((yield from outcome_of(trap)))
        yield Delete(slots[-1])
        seen.append(type((yield from outcome_of(NewEndpoint()))).__name__)

    assert run_program(k, body) == [MAX_CAPS, "ENOMEM", "ENOMEM", "ENOMEM", "ENOMEM", "int"]


def test_caps_past_the_receivers_room_are_not_transferred(k):
    got = []

    def receiver(proc):
        while (yield from outcome_of(NewNotification())) != "ENOMEM":
            pass
        yield Delete(proc.caps["ep"] + 1)  # room for exactly one more cap
        got.append((yield Recv(proc.caps["ep"])).caps)

    def body(proc, seen):
        ep = yield NewEndpoint()
        a, b = (yield NewNotification()), (yield NewNotification())
        yield Spawn(receiver, caps={"ep": ep})
        yield Send(ep, Message("take", caps=(a, b)))

    run_program(k, body)
    assert len(got) == 1 and len(got[0]) == 1


def test_a_message_transfers_a_bounded_number_of_caps(k):
    def body(proc, seen):
        ep = yield NewEndpoint()
        ntfn = yield NewNotification()
        for caps in ((ntfn,) * (MAX_MSG_CAPS + 1), (ntfn,) * 100_000):
            seen.append((yield from outcome_of(Send(ep, Message("take", caps=caps)))))

    assert run_program(k, body) == ["EINVAL", "EINVAL"]


def test_spawning_past_the_task_limit_is_refused_and_the_kernel_goes_on(k):
    def sleeper(proc):
        yield Sleep(1000)

    def body(proc, seen):
        spawned = 0
        while (yield from outcome_of(Spawn(sleeper))) != "EAGAIN":
            spawned += 1
        seen.append((spawned, len(k.tasks)))
        yield Sleep(2000)  # the sleepers exit
        seen.append(type((yield from outcome_of(Spawn(sleeper)))).__name__)

    assert run_program(k, body) == [(MAX_TASKS - 1, MAX_TASKS), "int"]


@pytest.mark.parametrize(
    "spawn",
    [
        Spawn("echo", (10**5000,)),  # its str() once raised out of the kernel
        Spawn("echo", ("x",) * (MAX_ARGS + 1)),
        Spawn("echo", ("x" * (MAX_TEXT + 1),)),
        Spawn("echo", name=b"echo"),
        Spawn("echo", caps={7: 1}),
    ],
    ids=["bigint", "too-many", "too-long", "bytes-name", "int-cap-name"],
)
def test_spawn_takes_a_bounded_list_of_strings(k, spawn):
    def body(proc, seen):
        seen.append((yield from outcome_of(spawn)))

    assert run_program(k, body) == ["EINVAL"]
    assert not k.halted


def test_a_task_has_a_bounded_number_of_alarms_pending(k):
    def body(proc, seen):
        ntfn = yield NewNotification()
        answers = []
        for _ in range(MAX_ALARMS + 1):
            answers.append((yield from outcome_of(Alarm(ntfn, 100_000))))
        seen.append(answers.count(None))
        seen.append(answers[-1])
        yield Sleep(200_000)  # they fire
        seen.append((yield from outcome_of(Alarm(ntfn, 100))))

    assert run_program(k, body) == [MAX_ALARMS, "EAGAIN", None]


@pytest.mark.parametrize(
    "fields",
    [
        {1: 2},  # once a TypeError out of the kernel
        {"task": "forged"},  # once a TypeError: the kernel sets task itself
        {"t_ns": "boom"},
        {"v": "x" * (MAX_TEXT + 1)},
        {"v": [1] * 1000},
        {"v": 1 << 64},
        {f"f{i}": i for i in range(MAX_LOG_FIELDS + 1)},
    ],
    ids=["int-key", "kernel-key", "time-key", "long", "list", "bigint", "many"],
)
def test_a_log_record_holds_only_small_plain_values(k, fields):
    def body(proc, seen):
        seen.append((yield from outcome_of(Log("hello", fields))))
        seen.append((yield from outcome_of(Log("fine", {"status": 3, "note": "ok"}))))

    assert run_program(k, body) == ["EINVAL", None]
    lines = k.log.lines()
    assert any("fine" in line and "status=3" in line for line in lines)
    assert not any("hello" in line for line in lines)


def test_trace_add_takes_a_list_never_an_endless_iterator(k):
    def body(proc, seen):
        yield Trace("start")
        yield Trace("stop")
        endless = itertools.repeat({"ph": "i", "name": "x"})
        seen.append((yield from outcome_of(Trace("add", endless))))
        seen.append((yield from outcome_of(Trace("add", ({"ph": "i", "name": "x"},)))))

    assert run_program(k, body) == ["EINVAL", len(k.tracer.events)]
    assert k.tracer.events[-1] == {"ph": "i", "name": "x"}


durations = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**70), max_value=2**80),
    st.sampled_from([0, MAX_DURATION_US, MAX_DURATION_US + 1, 1.7e308, -0.0]),
    st.booleans(),
    st.text(max_size=2),
    st.none(),
)


@settings(max_examples=150, deadline=None)
@given(us=durations, make=st.sampled_from(["compute", "sleep", "alarm"]))
def test_a_duration_is_taken_or_refused_and_never_breaks_the_kernel(us, make):
    kernel = Kernel(seed=0, cpus=1)

    def body(proc, seen):
        ntfn = yield NewNotification()
        trap = {"compute": Compute, "sleep": Sleep}.get(make)
        seen.append((yield from outcome_of(trap(us) if trap else Alarm(ntfn, us))))

    try:
        seen = run_program(kernel, body, until_ns=10**7)
    finally:
        kernel.shutdown()
    valid = type(us) in (int, float) and 0 <= us <= MAX_DURATION_US
    if not valid:
        assert seen == ["EINVAL"]
    else:
        assert seen in ([None], [])  # a long Compute or Sleep is still going


def test_the_docs_state_the_limits_the_code_has():
    readme = (Path(__file__).parent.parent / "docs" / "design" / "kernel.md").read_text()
    for stated in (
        f"{MAX_TASKS:,} live tasks",
        f"{MAX_ARGS} arguments, each a string of at most {MAX_TEXT:,} characters",
        f"{MAX_CAPS:,} caps in a task's cspace",
        f"{MAX_MSG_CAPS} a message",
        f"{MAX_ALARMS:,} not yet fired",
        f"{MAX_LOG_FIELDS} fields",
        f"default {DEFAULT_TASK_PAGES:,}",
        f"one per {PTES_PER_TABLE} pages",
        f"at most {MAX_ACCESS_BYTES >> 20} MiB",
        f"at most {MAX_EVENTS:,} events",
    ):
        assert stated in readme, stated
    assert MAX_DURATION_US == (1 << 62) // 1000 and "2^62 ns" in readme
