"""The virtio split ring: round trips, index wrap-around, and every malformed
chain a guest can write, each refused without an exception in the host."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from rings import BUFFERS, MEMORY_BYTES, Ring

from kernel.errors import InvalidArgument
from kernel.hypervisor.virtqueue import (
    DESC_F_INDIRECT,
    DESC_F_NEXT,
    DESC_F_WRITE,
    MAX_KEPT_ERRORS,
    STATUS_HANDLER_ERROR,
    STATUS_OK,
    STATUS_TOO_LONG,
    Device,
    Driver,
    GuestMemory,
    GuestMemoryError,
    QueueFull,
    RingLayout,
    ffi,
)

# -- raw ring writes, packed by hand: they also pin the cffi layout to the spec's bytes


def put_desc(ring: Ring, i: int, addr: int, length: int, flags: int = 0, nxt: int = 0) -> None:
    ring.memory.write(
        ring.layout.desc_addr + 16 * i, struct.pack("<QIHH", addr, length, flags, nxt)
    )


def publish(ring: Ring, *heads: int) -> None:
    """Put raw heads in the available ring and advance its index past them."""
    avail = ring.layout.avail_addr
    (idx,) = struct.unpack("<H", ring.memory.read(avail + 2, 2))
    for head in heads:
        ring.memory.write(avail + 4 + 2 * (idx % ring.layout.size), struct.pack("<H", head))
        idx = (idx + 1) & 0xFFFF
    ring.memory.write(avail + 2, struct.pack("<H", idx))


def used_entries(ring: Ring) -> list[tuple[int, int]]:
    used = ring.layout.used_addr
    (idx,) = struct.unpack("<H", ring.memory.read(used + 2, 2))
    return [
        struct.unpack("<II", ring.memory.read(used + 4 + 8 * (k % ring.layout.size), 8))
        for k in range(idx)
    ]


# -- layout ---------------------------------------------------------------------------------------


def test_packed_layout_follows_the_spec_sizes_and_alignments():
    layout = RingLayout.packed(1, 256)
    assert layout.desc_addr == 16 and layout.desc_bytes == 16 * 256
    assert layout.avail_addr == 16 + 16 * 256 and layout.avail_bytes == 4 + 2 * 256 + 2
    assert layout.used_addr % 4 == 0 and layout.used_bytes == 4 + 8 * 256 + 2
    layout.validate(GuestMemory(layout.end))


@pytest.mark.parametrize("size", [0, 3, 12, 65536, -8])
def test_queue_size_must_be_a_power_of_two_up_to_32768(size):
    with pytest.raises(InvalidArgument, match="power of two"):
        RingLayout(size, 0, 0, 0).validate(GuestMemory(MEMORY_BYTES))


def test_largest_queue_fits_and_works():
    memory = GuestMemory(1 << 20)
    layout = RingLayout.packed(0, 32768)
    device = Device(memory, layout, lambda req: b"ok")
    driver = Driver(memory, layout)
    memory.write(900_000, b"x")
    driver.add([(900_000, 1)], [(900_100, 8)])
    assert device.process() == 1
    assert driver.used() == [(0, 3)]


@pytest.mark.parametrize(
    ("layout", "reason"),
    [
        (RingLayout(8, MEMORY_BYTES - 64, 0, 512), "outside guest memory"),
        (RingLayout(8, 8, 256, 512), "not 16-byte aligned"),
        (RingLayout(8, 0, 129, 512), "not 2-byte aligned"),
        (RingLayout(8, 0, 128, 146), "not 4-byte aligned"),
        (RingLayout(8, 0, 64, 512), "overlaps"),
    ],
)
def test_a_ring_outside_memory_misaligned_or_overlapping_is_refused(layout, reason):
    with pytest.raises(InvalidArgument, match=reason):
        layout.validate(GuestMemory(MEMORY_BYTES))


def test_guest_memory_accesses_are_bounds_checked():
    memory = GuestMemory(4096)
    memory.write(4090, b"abcdef")
    assert memory.read(4090, 6) == b"abcdef"
    for addr, n in [(4091, 6), (-1, 1), (0, 4097)]:
        with pytest.raises(GuestMemoryError):
            memory.read(addr, n)
    with pytest.raises(GuestMemoryError):
        memory.write(4095, b"ab")


# -- round trips ----------------------------------------------------------------------------------


def test_a_request_goes_round_the_ring_and_raises_one_interrupt(ring):
    assert ring.request(b"hello") == (6, bytes([STATUS_OK]) + b"HELLO")
    assert ring.interrupts == 1
    assert not ring.device.errors and ring.device.broken is None


def test_a_chain_of_several_buffers_is_gathered_and_scattered(ring):
    mem = ring.memory
    mem.write(BUFFERS, b"abc")
    mem.write(BUFFERS + 100, b"defg")
    head = ring.driver.add(
        [(BUFFERS, 3), (BUFFERS + 100, 4)], [(BUFFERS + 200, 2), (BUFFERS + 300, 16)]
    )
    ring.driver.kick()
    assert ring.driver.used() == [(head, 8)]
    assert mem.read(BUFFERS + 200, 2) == bytes([STATUS_OK]) + b"A"
    assert mem.read(BUFFERS + 300, 6) == b"BCDEFG"
    assert len(ring.driver.free) == ring.layout.size


def test_several_chains_published_before_one_kick_are_all_served(ring):
    for k in range(3):
        ring.memory.write(BUFFERS + 64 * k, b"r%d" % k)
        ring.driver.add([(BUFFERS + 64 * k, 2)], [(BUFFERS + 4096 + 64 * k, 8)])
    ring.driver.kick()
    assert [length for _, length in ring.driver.used()] == [3, 3, 3]
    assert ring.interrupts == 1
    assert [ring.memory.read(BUFFERS + 4096 + 64 * k + 1, 2) for k in range(3)] == [
        b"R0",
        b"R1",
        b"R2",
    ]


def test_the_16_bit_indices_wrap_around():
    ring = Ring(size=4, start_idx=0xFFFD)
    for k in range(10):  # crosses 0xFFFF -> 0 on both rings
        assert ring.request(b"n%d" % k) == (3, bytes([STATUS_OK]) + b"N%d" % k)
    assert ring.driver.avail_idx == (0xFFFD + 10) & 0xFFFF == ring.device.last_avail
    assert ring.device.used_idx == 7 and not ring.device.errors


def test_chains_published_across_the_index_wrap_are_served_in_one_kick():
    ring = Ring(size=8, start_idx=0xFFFE)
    for k in range(4):  # avail slots 6, 7, 0, 1 as the index goes 0xFFFE .. 0x0001
        ring.memory.write(BUFFERS + 64 * k, b"w%d" % k)
        ring.driver.add([(BUFFERS + 64 * k, 2)], [(BUFFERS + 4096 + 64 * k, 8)])
    ring.driver.kick()
    assert ring.driver.used() == [(0, 3), (2, 3), (4, 3), (6, 3)]
    assert ring.device.served == 4 and ring.device.used_idx == 2
    assert [ring.memory.read(BUFFERS + 4096 + 64 * k + 1, 2) for k in range(4)] == [
        b"W0",
        b"W1",
        b"W2",
        b"W3",
    ]


def test_the_cffi_structs_have_the_spec_layout():
    assert (ffi.sizeof("struct virtq_desc"), ffi.offsetof("struct virtq_desc", "next")) == (16, 14)
    assert ffi.offsetof("struct virtq_avail", "ring") == 4
    assert ffi.sizeof("struct virtq_used_elem") == 8
    assert ffi.offsetof("struct virtq_used", "ring") == 4


def test_the_device_keeps_only_the_latest_reasons(ring):
    for _ in range(MAX_KEPT_ERRORS + 10):
        put_desc(ring, 0, MEMORY_BYTES, 1, W)
        publish(ring, 0)
        ring.device.process()
    assert len(ring.device.errors) == MAX_KEPT_ERRORS
    assert ring.device.failed == MAX_KEPT_ERRORS + 10


def test_a_full_queue_refuses_the_next_chain_in_the_guest(ring):
    for k in range(ring.layout.size):
        ring.driver.add([], [(BUFFERS + 16 * k, 8)])
    with pytest.raises(QueueFull):
        ring.driver.add([], [(BUFFERS, 8)])


def test_an_answer_too_long_for_the_writable_buffers_gets_a_status_only(ring):
    assert ring.request(b"x" * 40, room=8) == (1, bytes([STATUS_TOO_LONG]))


def test_a_handler_that_raises_fails_its_request_and_the_device_goes_on():
    def flaky(req):
        if req.data == b"boom":
            raise ValueError("no")
        return req.data

    ring = Ring(handler=flaky)
    assert ring.request(b"boom") == (1, bytes([STATUS_HANDLER_ERROR]))
    assert ring.request(b"fine", slot=1) == (5, bytes([STATUS_OK]) + b"fine")
    assert list(ring.device.errors) == [(0, "the handler raised ValueError: no")]
    assert ring.device.failed == 1


def test_no_interrupt_when_the_driver_asks_for_none(ring):
    ring.memory.write(ring.layout.avail_addr, struct.pack("<H", 1))
    ring.request(b"quiet")
    assert ring.interrupts == 0


# -- malformed chains: each refused with a reason, the queue still serves the next --------------


def refused(ring: Ring, head: int) -> str:
    """Publish `head`, kick, and return the device's reason for refusing it."""
    publish(ring, head)
    assert ring.device.process() == 1
    assert used_entries(ring)[-1] == (head, 0)
    assert ring.device.broken is None
    got_head, reason = ring.device.errors[-1]
    assert got_head == head
    # the queue goes on: a good request after the bad one is served
    ring.driver.avail_idx = ring.device.last_avail
    ring.driver.last_used = ring.device.used_idx
    assert ring.request(b"next", slot=3)[0] == 5
    return reason


BUF = BUFFERS
W = DESC_F_WRITE
N = DESC_F_NEXT


@pytest.mark.parametrize(
    ("descs", "reason"),
    [
        ({0: (MEMORY_BYTES, 1, W)}, "outside guest memory"),
        ({0: (MEMORY_BYTES - 4, 8, W)}, "outside guest memory"),
        ({0: ((1 << 64) - 1, 2, W)}, "outside guest memory"),
        ({0: (BUF, 4, N, 1), 1: (MEMORY_BYTES - 1, 2, W)}, "descriptor 1: buffer"),
        ({0: (BUF, 4, N, 8)}, "next index 8 is past the queue size 8"),
        ({0: (BUF, 4, N, 0xFFFF)}, "next index 65535 is past"),
        ({0: (BUF, 4, N, 1), 1: (BUF, 4, N, 2), 2: (BUF, 4, N, 1)}, "next index 1 makes a loop"),
        ({0: (BUF, 4, N, 0)}, "makes a loop"),
        ({0: (BUF, 4, W | N, 1), 1: (BUF, 4, 0)}, "a readable buffer after a writable one"),
        ({0: (BUF, 16, DESC_F_INDIRECT | W)}, "indirect descriptors are not offered"),
        ({0: (BUF, 4, 0)}, "no writable buffer"),
    ],
)
def test_a_malformed_chain_is_refused_with_its_reason(ring, descs, reason):
    for i, (addr, length, flags, *nxt) in descs.items():
        put_desc(ring, i, addr, length, flags, *nxt)
    assert reason in refused(ring, 0)


def test_a_chain_longer_than_the_queue_is_refused(ring):
    n = ring.layout.size
    for i in range(n):  # every descriptor, and the last leads back to the first
        put_desc(ring, i, BUF + 16 * i, 8, W | N, (i + 1) % n)
    assert "longer than the queue size 8" in refused(ring, 0)


def test_a_head_past_the_queue_size_breaks_the_queue(ring):
    publish(ring, 8)
    assert ring.device.process() == 0
    assert "names descriptor 8, past the queue size 8" in ring.device.broken
    assert used_entries(ring) == []
    publish(ring, 0)
    assert ring.device.process() == 0  # a broken queue serves nothing more


def test_an_available_index_run_too_far_ahead_breaks_the_queue(ring):
    ring.memory.write(ring.layout.avail_addr + 2, struct.pack("<H", 9))
    assert ring.device.process() == 0
    assert "more than the queue size 8" in ring.device.broken


# -- fuzzing: arbitrary ring contents never make the host raise ----------------------------------


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    descs=st.lists(
        st.tuples(
            st.one_of(st.integers(0, MEMORY_BYTES + 64), st.integers(0, (1 << 64) - 1)),
            st.one_of(st.integers(0, 256), st.integers(0, (1 << 32) - 1)),
            st.integers(0, 0xFFFF),
            st.one_of(st.integers(0, 9), st.integers(0, 0xFFFF)),
        ),
        min_size=8,
        max_size=8,
    ),
    avail=st.lists(st.integers(0, 0xFFFF), min_size=8, max_size=8),
    flags=st.integers(0, 0xFFFF),
    avail_idx=st.integers(0, 0xFFFF),
)
# Three chains served, then a head past the queue size: the three stay served and counted.
@example(descs=[(0, 0, 0, 0)] * 8, avail=[0, 0, 0, 8, 0, 0, 0, 0], flags=0, avail_idx=4)
def test_arbitrary_ring_contents_never_raise_in_the_host(descs, avail, flags, avail_idx):
    ring = Ring()
    for i, (addr, length, dflags, nxt) in enumerate(descs):
        put_desc(ring, i, addr, length, dflags, nxt)
    base = ring.layout.avail_addr
    ring.memory.write(base, struct.pack("<HH8H", flags, avail_idx, *avail))
    served = ring.device.process()
    used = used_entries(ring)
    assert served == len(used) == ring.device.used_idx
    if ring.device.broken is None:
        assert served == avail_idx
    else:
        assert isinstance(ring.device.broken, str) and ring.device.broken
    assert all(head < 8 for head, _ in used)
    # the handler never raises, so every refused chain is a malformed one, answered with length 0
    assert sum(length == 0 for _, length in used) == ring.device.failed
    assert all(isinstance(reason, str) and reason for _, reason in ring.device.errors)
