"""Device memory: per-context allocation, quotas, coalescing, and clear errors."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from drivers.vgpu.errors import (
    InvalidArgument,
    OutOfMemory,
    QuotaExceeded,
    UnknownAllocation,
    UnknownContext,
)
from drivers.vgpu.memory import DeviceMemory


def snapshot(mem: DeviceMemory):
    return mem.free_ranges(), mem.allocations(), [mem.used_bytes(c) for c in mem.contexts]


def test_allocations_are_aligned_and_charged_to_their_context():
    mem = DeviceMemory(4096, alignment=256)
    mem.add_context(0)
    h = mem.alloc(0, 100)
    assert mem.allocation(0, h).size_bytes == 256 and mem.used_bytes(0) == 256
    assert mem.free_bytes == 4096 - 256


def test_freed_neighbours_coalesce_so_memory_is_reusable_whole():
    mem = DeviceMemory(1024, alignment=256)
    mem.add_context(0)
    a, b, c, d = (mem.alloc(0, 256) for _ in range(4))
    mem.free(0, a)
    mem.free(0, c)
    assert mem.largest_free_bytes == 256  # fragmented: two separate holes
    with pytest.raises(OutOfMemory, match="512 free in all|512 bytes are free"):
        mem.alloc(0, 512)
    mem.free(0, b)
    assert mem.free_ranges() == [(0, 768)]
    assert mem.allocation(0, mem.alloc(0, 768)).offset == 0
    assert d in {x.handle for x in mem.allocations(0)}


def test_out_of_memory_reports_free_and_largest_range_and_changes_nothing():
    mem = DeviceMemory(1000, alignment=1)
    mem.add_context(0)
    mem.alloc(0, 600)
    before = snapshot(mem)
    with pytest.raises(OutOfMemory, match="no free range of 500 bytes; 400 bytes are free"):
        mem.alloc(0, 500)
    assert snapshot(mem) == before


def test_a_context_over_its_quota_is_refused_while_others_allocate():
    mem = DeviceMemory(10_000, alignment=1)
    mem.add_context(0, quota_bytes=1000)
    mem.add_context(1)
    mem.alloc(0, 800)
    with pytest.raises(QuotaExceeded, match="context 0: allocating 300 bytes would use 1100"):
        mem.alloc(0, 300)
    assert mem.used_bytes(0) == 800
    mem.alloc(1, 5000)
    assert mem.used_bytes(1) == 5000


def test_a_context_cannot_free_or_name_another_contexts_allocation():
    mem = DeviceMemory(4096)
    mem.add_context(0)
    mem.add_context(1)
    h = mem.alloc(0, 100)
    with pytest.raises(UnknownAllocation, match="context 1 holds no allocation"):
        mem.free(1, h)
    with pytest.raises(UnknownAllocation):
        mem.allocation(1, h)
    mem.free(0, h)
    with pytest.raises(UnknownAllocation):  # double free
        mem.free(0, h)


@pytest.mark.parametrize("size", [0, -5, 1.5, True])
def test_non_positive_or_non_integer_sizes_are_invalid(size):
    mem = DeviceMemory(4096)
    mem.add_context(0)
    with pytest.raises(InvalidArgument, match="positive integer of bytes"):
        mem.alloc(0, size)


def test_unknown_contexts_are_refused():
    mem = DeviceMemory(4096)
    with pytest.raises(UnknownContext, match="no GPU memory context 7"):
        mem.alloc(7, 10)
    with pytest.raises(UnknownContext):
        mem.used_bytes(7)
    mem.add_context(7)
    with pytest.raises(InvalidArgument, match="already exists"):
        mem.add_context(7)


def test_removing_a_context_frees_everything_it_held():
    mem = DeviceMemory(4096, alignment=256)
    mem.add_context(0)
    mem.add_context(1)
    for _ in range(3):
        mem.alloc(0, 300)
    keep = mem.alloc(1, 256)
    mem.remove_context(0)
    assert mem.contexts == [1] and [a.handle for a in mem.allocations()] == [keep]
    assert mem.free_bytes == 4096 - 256


class AllocatorMachine(RuleBasedStateMachine):
    """Random allocations, frees and context changes keep the books exact."""

    def __init__(self):
        super().__init__()
        self.mem = DeviceMemory(1 << 16, alignment=64)
        self.next_ctx = 0

    @rule(quota=st.none() | st.integers(1, 1 << 15))
    def add_context(self, quota):
        self.mem.add_context(self.next_ctx, quota)
        self.next_ctx += 1

    @precondition(lambda self: self.mem.contexts)
    @rule(data=st.data(), size=st.integers(-10, 1 << 14))
    def alloc(self, data, size):
        ctx = data.draw(st.sampled_from(self.mem.contexts))
        before = snapshot(self.mem)
        try:
            self.mem.alloc(ctx, size)
        except (OutOfMemory, InvalidArgument):
            assert snapshot(self.mem) == before

    @precondition(lambda self: self.mem.allocations())
    @rule(data=st.data(), wrong_ctx=st.booleans())
    def free(self, data, wrong_ctx):
        alloc = data.draw(st.sampled_from(self.mem.allocations()))
        ctx = alloc.ctx + 1 if wrong_ctx else alloc.ctx
        before = snapshot(self.mem)
        try:
            self.mem.free(ctx, alloc.handle)
        except (UnknownAllocation, UnknownContext):
            assert wrong_ctx and snapshot(self.mem) == before

    @precondition(lambda self: self.mem.contexts)
    @rule(data=st.data())
    def remove_context(self, data):
        self.mem.remove_context(data.draw(st.sampled_from(self.mem.contexts)))

    @invariant()
    def books_balance(self):
        mem = self.mem
        allocs = mem.allocations()
        ranges = sorted([(a.offset, a.size_bytes) for a in allocs] + mem.free_ranges())
        position = 0
        for offset, size in ranges:  # allocations and free ranges tile memory exactly
            assert offset == position and size > 0
            position += size
        assert position == mem.capacity_bytes
        free = mem.free_ranges()
        for (o1, s1), (o2, _) in zip(free, free[1:], strict=False):
            assert o1 + s1 < o2  # neighbours are always merged
        for ctx in mem.contexts:
            used = sum(a.size_bytes for a in allocs if a.ctx == ctx)
            assert mem.used_bytes(ctx) == used
            quota = mem.quota_bytes(ctx)
            assert quota is None or used <= quota


TestAllocatorMachine = AllocatorMachine.TestCase
TestAllocatorMachine.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
