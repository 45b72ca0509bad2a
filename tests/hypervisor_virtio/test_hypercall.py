"""The hypercall table: each hypercall's answer, and every bad number or
argument an error status for the guest, never an exception in the host."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rings import BUFFERS, MEMORY_BYTES, FakeVm, Ring

from kernel.errors import OutOfMemory
from kernel.hypervisor.hypercall import HYPERCALL_TABLE, Hc, Result, Status, hypercall
from kernel.hypervisor.virtqueue import Driver


@pytest.fixture
def vm() -> FakeVm:
    return FakeVm("guest0")


def test_the_table_has_every_numbered_hypercall_and_numbers_are_stable():
    assert {int(n): n.name for n in HYPERCALL_TABLE} == {
        0: "VM_INFO",
        1: "CONSOLE_WRITE",
        2: "KICK",
        3: "POLICY_CHOOSE",
        4: "BALLOON",
        5: "GPU_SUBMIT",
    }
    assert all(call.handler.__doc__ for call in HYPERCALL_TABLE.values())


def test_vm_info_describes_the_guest(vm):
    assert hypercall(vm, Hc.VM_INFO) == (
        Status.OK,
        {
            "name": "guest0",
            "memory_bytes": MEMORY_BYTES,
            "queues": [0],
            "pages": 16,
            "given_pages": 0,
        },
    )
    assert hypercall(vm, 0) == hypercall(vm, Hc.VM_INFO)


def test_console_write_copies_guest_bytes_to_the_console(vm):
    vm.memory.write(BUFFERS, "héllo\n".encode())
    assert hypercall(vm, Hc.CONSOLE_WRITE, BUFFERS, 7) == Result(Status.OK, 7)
    assert vm.console == ["héllo\n"]


def test_console_write_outside_guest_memory_is_efault(vm):
    status, message = hypercall(vm, Hc.CONSOLE_WRITE, MEMORY_BYTES - 2, 4)
    assert status is Status.EFAULT and "outside guest memory" in message
    assert vm.console == []


def test_kick_serves_the_queue(vm):
    driver = Driver(vm.memory, vm.layout)
    vm.memory.write(BUFFERS, b"ping")
    head = driver.add([(BUFFERS, 4)], [(BUFFERS + 64, 16)])
    assert hypercall(vm, Hc.KICK, 0) == (Status.OK, 1)
    assert driver.used() == [(head, 5)]
    assert vm.memory.read(BUFFERS + 65, 4) == b"PING"


def test_kick_of_a_missing_or_broken_queue_is_an_error(vm):
    assert hypercall(vm, Hc.KICK, 3)[0] is Status.ENOENT
    vm.memory.write(vm.layout.avail_addr + 2, struct.pack("<H", 100))
    status, message = hypercall(vm, Hc.KICK, 0)
    assert status is Status.EIO and "queue 0 is broken" in message


def test_policy_choose_picks_a_module_by_name(vm):
    assert hypercall(vm, Hc.POLICY_CHOOSE, "lithos") == (Status.OK, {"module": "lithos"})
    assert hypercall(vm, Hc.POLICY_CHOOSE, "nosuch")[0] is Status.ENOENT
    assert hypercall(vm, Hc.POLICY_CHOOSE, "../etc")[0] is Status.EINVAL
    assert hypercall(vm, Hc.POLICY_CHOOSE, "x" * 65)[0] is Status.EINVAL
    assert hypercall(vm, Hc.POLICY_CHOOSE, "explodes") == (
        Status.EIO,
        "RuntimeError: the module registry is on fire",
    )
    assert vm.chosen == ["lithos"]


def test_a_kernel_error_from_the_vm_keeps_its_errno(vm):
    def full(name):
        raise OutOfMemory("no room for another module")

    vm.choose_module = full
    assert hypercall(vm, Hc.POLICY_CHOOSE, "lithos") == (
        Status.ENOMEM,
        "ENOMEM: no room for another module",
    )


def test_balloon_gives_pages_back_and_takes_them_again(vm):
    assert hypercall(vm, Hc.BALLOON, 10) == (Status.OK, 6)
    assert hypercall(vm, Hc.BALLOON, 3)[0] is Status.EINVAL  # would leave fewer than 4
    assert hypercall(vm, Hc.BALLOON, -4) == (Status.OK, 10)
    assert hypercall(vm, Hc.BALLOON, -7)[0] is Status.ENOMEM  # only 6 are out
    assert vm.balloon.given_pages == 6


def test_gpu_submit_serves_a_gpu_queue_and_refuses_any_other(vm):
    ring = Ring()
    vm.memory, vm.queues = ring.memory, {0: ring.device, 1: ring.device}
    ring.memory.write(BUFFERS, b"launch")
    ring.driver.add([(BUFFERS, 6)], [(BUFFERS + 128, 64)])
    assert hypercall(vm, Hc.GPU_SUBMIT, 0) == (Status.OK, 1)
    assert ring.memory.read(BUFFERS + 128, 7) == b"\x00LAUNCH"
    status, message = hypercall(vm, Hc.GPU_SUBMIT, 1)  # a queue, but not a GPU's
    assert status is Status.ENOENT and "no GPU queue 1" in message
    assert hypercall(vm, Hc.GPU_SUBMIT, 0, 64)[0] is Status.EINVAL  # the ABI is checked


@pytest.mark.parametrize(
    ("number", "args", "status", "words"),
    [
        (6, (), Status.ENOSYS, "no hypercall 6"),
        (-1, (), Status.ENOSYS, "no hypercall -1"),
        (1 << 80, (), Status.ENOSYS, "no hypercall"),
        ("KICK", (0,), Status.EINVAL, "number is an int"),
        (True, (), Status.EINVAL, "number is an int"),
        (2.0, (0,), Status.EINVAL, "number is an int"),
        (Hc.KICK, (), Status.EINVAL, "KICK takes 1 argument(s), got 0"),
        (Hc.VM_INFO, (1,), Status.EINVAL, "takes 0 argument(s)"),
        (Hc.KICK, (True,), Status.EINVAL, "queue must be an int, got bool"),
        (Hc.KICK, ("0",), Status.EINVAL, "queue must be an int, got str"),
        (Hc.KICK, (1 << 16,), Status.EINVAL, "queue value 65536 is outside 0..65535"),
        (Hc.CONSOLE_WRITE, (0, 4097), Status.EINVAL, "length value 4097"),
        (Hc.POLICY_CHOOSE, (3,), Status.EINVAL, "name must be a str"),
        (Hc.POLICY_CHOOSE, ("",), Status.EINVAL, "name length 0"),
        (Hc.BALLOON, (1 << 21,), Status.EINVAL, "pages value"),
    ],
)
def test_a_bad_hypercall_is_an_error_status(vm, number, args, status, words):
    got = hypercall(vm, number, *args)
    assert got.status is status and words in got.value


# -- fuzzing: several guests, arbitrary numbers and arguments ------------------------------------

plain = st.one_of(
    st.integers(-(1 << 70), 1 << 70),
    st.integers(-4, 70_000),
    st.text(max_size=80),
    st.sampled_from(["lithos", "clock", "explodes", "nosuch"]),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=True),
    st.binary(max_size=8),
)
RING_END = FakeVm("probe").layout.end
calls = st.tuples(
    st.integers(0, 2),  # which guest
    st.one_of(st.integers(-2, 8), st.sampled_from(list(Hc)), plain),
    st.lists(plain, max_size=4),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(calls, min_size=1, max_size=25), st.binary(min_size=RING_END, max_size=RING_END))
def test_arbitrary_hypercalls_from_several_guests_never_raise(batch, ring_bytes):
    vms = [FakeVm(f"guest{k}") for k in range(3)]
    vms[1].memory.write(0, ring_bytes)  # one guest's whole ring is garbage
    for which, number, args in batch:
        vm = vms[which]
        others = [(v.console[:], v.balloon.given_pages, v.chosen[:]) for v in vms if v is not vm]
        result = hypercall(vm, number, *args)
        assert isinstance(result, Result) and isinstance(result.status, Status)
        if result.status is not Status.OK:
            assert isinstance(result.value, str) and result.value
        # one guest's call never touches another guest
        assert others == [(v.console, v.balloon.given_pages, v.chosen) for v in vms if v is not vm]
        assert 4 <= vm.balloon.held_pages <= 16
