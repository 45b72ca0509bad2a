"""Physical memory, demand paging and swap."""

from __future__ import annotations

from kernel import Kernel
from kernel.errors import SegmentationFault
from kernel.memory import PAGE_SIZE, AddressSpace, ClockPolicy, MemoryManager
from kernel.traps import MemMap, MemRead, MemWrite


def test_pages_get_frames_on_first_touch():
    mm = MemoryManager(16)
    a = AddressSpace(1)
    base = a.map(4)
    assert a.resident == 0
    mm.access(a, base, 1, b"x")
    assert a.resident == 1 and mm.faults == 1


def test_a_memory_hungry_task_works_beyond_physical_memory_byte_for_byte():
    k = Kernel(frames=32)
    results = []

    def hog(proc):
        pages = 100
        base = yield MemMap(pages)
        for i in range(pages):
            yield MemWrite(base + i * PAGE_SIZE, bytes([i % 251]) * PAGE_SIZE)
        for i in reversed(range(pages)):
            results.append(
                (yield MemRead(base + i * PAGE_SIZE, PAGE_SIZE)) == bytes([i % 251]) * PAGE_SIZE
            )

    k.spawn(hog)
    k.run()
    assert len(results) == 100 and all(results)
    assert k.mm.swap_outs > 0 and k.mm.swap_ins > 0
    k.shutdown()


def test_unmapped_address_is_a_segfault_for_the_caller():
    k = Kernel()
    errors = []

    def prog(proc):
        try:
            yield MemRead(0, 8)
        except SegmentationFault as exc:
            errors.append(exc.errno)

    k.spawn(prog)
    k.run()
    assert errors == ["EFAULT"]
    k.shutdown()


def test_exit_releases_frames_and_swap():
    mm = MemoryManager(8)
    a = AddressSpace(1)
    base = a.map(20)
    for i in range(20):
        mm.access(a, base + i * PAGE_SIZE, 1, b"z")
    assert mm.swap.used > 0
    mm.release(a)
    assert len(mm.free_frames) == 8 and mm.swap.used == 0


def test_victim_hook_is_consulted_and_a_bad_answer_falls_back_to_clock():
    mm = MemoryManager(8)
    faults = []
    mm.on_policy_fault = lambda policy, kind, msg: (
        faults.append(kind),
        setattr(mm, "policy", ClockPolicy()),
    )

    class Oldest(ClockPolicy):
        calls = 0

        def select_victim(self, mm, candidates):
            self.calls += 1
            return 10_000 if self.calls == 3 else candidates[0]

    policy = Oldest()
    mm.policy = policy
    a = AddressSpace(1)
    base = a.map(12)
    for i in range(12):
        mm.access(a, base + i * PAGE_SIZE, PAGE_SIZE, bytes([i]) * PAGE_SIZE)
    assert policy.calls == 3 and faults == ["invalid"]
    for i in range(12):
        data, _ = mm.access(a, base + i * PAGE_SIZE, PAGE_SIZE)
        assert data == bytes([i]) * PAGE_SIZE
