"""Physical memory, demand paging and swap, and the kernel's accounting of its own memory."""

from __future__ import annotations

import resource
import subprocess
import sys
import time
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernel import Kernel
from kernel.errors import InvalidArgument, OutOfMemory, SegmentationFault, SyscallError
from kernel.memory import (
    MAX_ACCESS_BYTES,
    PAGE_SIZE,
    PTES_PER_TABLE,
    AddressSpace,
    ClockPolicy,
    MemoryManager,
)
from kernel.traps import MemMap, MemRead, MemWrite


def test_pages_get_entries_and_frames_on_first_touch():
    mm = MemoryManager(16)
    a = AddressSpace(1)
    base = mm.map(a, 4)
    assert a.resident == 0 and a.table == {}
    mm.access(a, base + PAGE_SIZE, 1, b"x")
    assert a.resident == 1 and mm.faults == 1
    assert list(a.table) == [base // PAGE_SIZE + 1]


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


def test_exit_releases_frames_swap_and_mapped_pages():
    mm = MemoryManager(8)
    a = AddressSpace(1)
    base = mm.map(a, 20)
    for i in range(20):
        mm.access(a, base + i * PAGE_SIZE, 1, b"z")
    assert mm.swap.used > 0 and mm.committed == 20
    mm.release(a)
    assert len(mm.free_frames) == 8 and mm.swap.used == 0
    assert mm.committed == 0 and a.table == {} and a.mapped == 0


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
    base = mm.map(a, 12)
    for i in range(12):
        mm.access(a, base + i * PAGE_SIZE, PAGE_SIZE, bytes([i]) * PAGE_SIZE)
    assert policy.calls == 3 and faults == ["invalid"]
    for i in range(12):
        data, _ = mm.access(a, base + i * PAGE_SIZE, PAGE_SIZE)
        assert data == bytes([i]) * PAGE_SIZE


# -- the kernel accounts for its own memory ------------------------------------------------


def test_a_mapping_frames_and_swap_cannot_back_is_refused_before_anything_is_made():
    mm = MemoryManager(8, swap_slots=24)  # room for 32 pages in all
    a = AddressSpace(1)
    with pytest.raises(OutOfMemory, match="cannot map 33 pages: frames and swap can back 32 more"):
        mm.map(a, 33)
    assert (a.mapped, a.starts, a.table, mm.committed) == (0, [], {}, 0)
    mm.map(a, 20)
    with pytest.raises(OutOfMemory, match="can back 12 more"):
        mm.map(AddressSpace(2), 13)  # every address space draws on the same frames and swap
    mm.map(a, 12)
    mm.release(a)
    assert mm.map(AddressSpace(3), 32) == 16 * PAGE_SIZE  # released pages can be mapped again


def test_a_mapping_of_exactly_frames_plus_swap_is_backed_at_every_touch():
    mm = MemoryManager(4, swap_slots=12)
    a = AddressSpace(1)
    base = mm.map(a, 16)
    for rounds in range(2):  # the second round swaps every page in while swap is full
        for i in range(16):
            addr = base + i * PAGE_SIZE
            if rounds == 0:
                mm.access(a, addr, 2, bytes([i, 255 - i]))
            else:
                assert mm.access(a, addr, 2)[0] == bytes([i, 255 - i])
    assert mm.swap.used == 12 and a.resident == 4 and mm.swap_ins > 0


def test_frames_in_the_balloon_back_no_mapping_and_mapped_pages_keep_theirs():
    mm = MemoryManager(16, swap_slots=16)
    mm.balloon_inflate(10)
    with pytest.raises(OutOfMemory, match="can back 22 more"):
        mm.map(AddressSpace(1), 23)
    mm.balloon_deflate(10)
    mm.map(AddressSpace(1), 30)
    with pytest.raises(OutOfMemory, match="all but 2 pages"):
        mm.balloon_inflate(3)
    assert not mm.ballooned


def test_mapping_a_million_pages_makes_nothing_per_page():
    mm = MemoryManager(4, swap_slots=1 << 30)  # a sparse swap file: nothing is written yet
    a = AddressSpace(1)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        base = mm.map(a, 1 << 20)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 4096, f"mapping 1M pages took {grown} bytes of kernel memory"
    for page in (0, 1 << 19, (1 << 20) - 1):
        mm.access(a, base + page * PAGE_SIZE, 4, b"abcd")
    assert len(a.table) == 3
    mm.close()


def test_page_tables_count_against_the_tasks_limit():
    a = AddressSpace(1, limit_pages=100)
    with pytest.raises(OutOfMemory, match="may hold 100 pages, page tables included"):
        a.map(100)  # 100 pages and the page-table page that maps them
    a.map(99)
    assert a.charged == 100
    with pytest.raises(OutOfMemory):
        a.map(1)
    big = AddressSpace(2, limit_pages=10 * PTES_PER_TABLE)
    big.map(4 * PTES_PER_TABLE)
    assert big.table_pages == 5  # the region starts at page 16: it spans five tables


def test_a_tasks_limit_comes_from_the_kernel_config():
    k = Kernel(frames=64, task_pages=50)
    answers: dict[int, list[str]] = {}

    def prog(proc):
        for pages in (49, 1):
            try:
                yield MemMap(pages)
                answers.setdefault(proc.pid, []).append("ok")
            except SyscallError as exc:
                answers.setdefault(proc.pid, []).append(exc.errno)

    pids = [k.spawn(prog), k.spawn(prog)]  # the limit is each task's own
    k.run()
    assert [answers[pid] for pid in pids] == [["ok", "ENOMEM"], ["ok", "ENOMEM"]]
    k.shutdown()


def test_an_access_is_checked_whole_before_any_page_is_touched():
    mm = MemoryManager(8)
    a = AddressSpace(1)
    base = mm.map(a, 2)
    with pytest.raises(SegmentationFault):
        mm.access(a, base + PAGE_SIZE, PAGE_SIZE + 1, b"y" * (PAGE_SIZE + 1))  # into the guard page
    assert a.table == {} and mm.faults == 0
    with pytest.raises(InvalidArgument, match="at most"):
        mm.access(a, base, MAX_ACCESS_BYTES + 1)


def test_one_memread_or_memwrite_moves_a_bounded_number_of_bytes():
    k = Kernel(frames=64)
    errors = []

    def prog(proc):
        base = yield MemMap(2)
        for trap in (MemRead(base, MAX_ACCESS_BYTES + 1), MemWrite(base, bytes(1 << 21))):
            try:
                yield trap
            except InvalidArgument as exc:
                errors.append(str(exc))

    k.spawn(prog)
    k.run()
    assert len(errors) == 2 and all(f"at most {MAX_ACCESS_BYTES} bytes" in e for e in errors)
    k.shutdown()


@pytest.mark.parametrize("pages", [0, -1, 1.5, True, "3", None, 2**64 + 0.5])
def test_memmap_takes_only_a_positive_int(pages):
    k = Kernel()
    errors = []

    def prog(proc):
        try:
            yield MemMap(pages)
        except SyscallError as exc:
            errors.append(exc.errno)

    k.spawn(prog)
    k.run()
    assert errors == ["EINVAL"] and k.mm.committed == 0
    k.shutdown()


FRAMES, SWAP = 4, 12
ROOM = FRAMES + SWAP
EDGES = [0, 1, ROOM - 1, ROOM, ROOM + 1, 10**18, 2**64, -1, -(2**64)]
sizes = st.one_of(
    st.sampled_from(EDGES),
    st.integers(-2, ROOM + 2),
    st.floats(allow_nan=True),
    st.booleans(),
    st.text(max_size=2),
    st.none(),
)


@settings(max_examples=300, deadline=None)
@given(requests=st.lists(st.tuples(sizes, st.lists(st.integers(0, ROOM))), max_size=5))
def test_mappings_at_the_edges_succeed_or_fail_whole_and_structures_follow_touched_pages(requests):
    mm = MemoryManager(FRAMES, swap_slots=SWAP)
    a = AddressSpace(1)
    committed, regions, touched = 0, [], set()
    for pages, touches in requests:
        is_count = type(pages) is int and pages > 0
        try:
            base = mm.map(a, pages)
        except InvalidArgument:
            assert not is_count
        except OutOfMemory:
            assert is_count and pages > ROOM - committed
        else:
            assert is_count and pages <= ROOM - committed
            committed += pages
            regions.append((base, pages))
            for t in touches:
                if t < pages:  # touch only inside the region; each page keeps its own number
                    addr = base + t * PAGE_SIZE
                    mm.access(a, addr, 8, (addr // PAGE_SIZE).to_bytes(8, "little"))
                    touched.add(addr)
        # What the kernel holds follows what was touched and mapped, never what was asked.
        assert mm.committed == a.mapped == committed
        assert len(a.starts) == len(regions)
        assert len(a.table) == len(touched)
        assert mm.swap.used + a.resident == len(touched)
    for addr in touched:
        data, _ = mm.access(a, addr, 8)
        assert data == (addr // PAGE_SIZE).to_bytes(8, "little")
    mm.release(a)
    assert mm.committed == 0 and len(mm.free_frames) == FRAMES and mm.swap.used == 0
    mm.close()


# -- through the shell ------------------------------------------------------------------------


def test_memhog_one_page_beyond_frames_and_swap_gets_enomem_and_the_shell_goes_on(malv_boot):
    k = malv_boot(frames=64)  # 64 frames and 1024 swap slots
    out = k.shell("run memhog 1089")
    assert out.splitlines()[0] == (
        "memhog: ENOMEM: cannot map 1089 pages: frames and swap can back 1088 more"
    )
    assert k.shell("run echo still here") == "still here\n"
    assert k.shell("run memhog 1088").endswith("1088 pages written and read back, 0 corrupt\n")


def _cap_address_space() -> None:
    limit = 4 << 30
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def test_memhog_of_a_billion_pages_under_a_4gib_cap_answers_in_seconds():
    """The attack: `run memhog 999999999` once made the kernel build one page-table
    entry per page asked for, until the host killed it (or, capped, it hung)."""
    script = "run memhog 999999999; free; poweroff"
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "image.cli", "boot", "--headless", "--run", script],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        preexec_fn=_cap_address_space,
    )
    wall_s = time.monotonic() - start
    lines = done.stdout.splitlines()
    enomem = [line for line in lines if "ENOMEM" in line]
    assert enomem == [
        "memhog: ENOMEM: cannot map 999999999 pages: frames and swap can back 34816 more"
    ], done.stdout + done.stderr
    assert any(line.startswith("Mem:") for line in lines)  # the next command answered
    assert "powering off" in lines
    assert wall_s < 60
