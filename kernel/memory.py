"""Physical memory, address spaces and demand paging.

Physical memory is a cffi-allocated arena of 4 KiB frames, so page contents
are real bytes.  Each task has an `AddressSpace`: the regions it mapped, and a
page table that maps virtual page numbers to a frame (present) or a swap slot
(swapped out).  A page gets its page-table entry and a frame on first touch;
when frames run out the pager evicts a victim to the swap area and faults it
back in later.

The kernel accounts for its own memory.  A mapping is refused with ENOMEM,
before anything is allocated for it, when frames and swap together could not
back it beside every mapping already made (strict commit: a touch never finds
the machine out of memory).  A task's mappings and the page tables they need
count against its limit (`KernelConfig.task_pages`).  The kernel's per-page
structures therefore grow with the pages a task touches, never with the pages
it asks for.

Which frame to evict and which pages to prefetch are policy: they are asked
of `MemoryManager.policy` (default: CLOCK, no prefetch).  A memory advisor
plugs in there; an answer that is not one of the candidates falls back to
CLOCK so no page is ever lost.  An advisor that needs to see accesses,
faults or evictions sets the matching `*_hook` (None costs nothing).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable
from typing import Any

import cffi

from kernel.errors import InvalidArgument, OutOfMemory, SegmentationFault
from kernel.swap import SwapArea

PAGE_SIZE = 4096
MINOR_FAULT_NS = 1_000  # zero-fill a fresh frame
SWAP_IO_NS = 80_000  # one page to or from the swap device (an SSD-class latency)
BALLOON_KEEP_FRAMES = 4  # frames a balloon never takes: the pager needs some to work with
MAX_PREFETCH_PAGES = 32  # pages one fault may prefetch
PTES_PER_TABLE = 512  # entries in one page-table page (a 4 KiB page of 8-byte entries, as x86-64)
MAX_ACCESS_BYTES = 1 << 20  # one MemRead or MemWrite: the kernel copies at most this much per trap
FIRST_VPN = 16  # pages below stay unmapped, so a null address faults

_ffi = cffi.FFI()


class Pte:
    """A page-table entry: a frame when present, else a swap slot (or neither: untouched)."""

    __slots__ = ("frame", "slot", "dirty")

    def __init__(self) -> None:
        self.frame = -1
        self.slot = -1
        self.dirty = False


def page_count(pages: Any) -> int:
    """A mapping's size as the caller gave it, checked: a positive int (not a bool)."""
    if type(pages) is not int or pages <= 0:
        raise InvalidArgument(f"MemMap needs a positive page count, got {pages!r}")
    return pages


class AddressSpace:
    """A task's virtual memory: the regions it mapped, and a page table of the
    pages it touched.

    A region costs two list items however large it is; an entry is made in
    `table` only when its page is first touched (`entry`).  `limit_pages`
    bounds what the task holds: its mapped pages plus the page-table pages
    needed to map them (None: no limit of its own).
    """

    def __init__(self, pid: int, limit_pages: int | None = None) -> None:
        self.pid = pid
        self.limit_pages = limit_pages
        self.table: dict[int, Pte] = {}  # vpn -> Pte, only for pages touched
        self.starts: list[int] = []  # first vpn of each region, ascending
        self.ends: list[int] = []  # one past the last vpn of each region
        self.next_vpn = FIRST_VPN
        self.mapped = 0  # pages in all regions
        self.table_pages = 0  # page-table pages the regions need
        self.resident = 0

    @property
    def charged(self) -> int:
        """Pages counted against `limit_pages`: mapped pages and their page tables."""
        return self.mapped + self.table_pages

    def map(self, pages: int) -> int:
        """Reserve a region of `pages` pages after the last one; returns its address.
        Nothing per page is made here.  ENOMEM if the task's limit would be passed."""
        pages = page_count(pages)
        base = self.next_vpn
        tables = self._new_tables(base, pages)
        if self.limit_pages is not None and self.charged + pages + tables > self.limit_pages:
            raise OutOfMemory(
                f"the task may hold {self.limit_pages} pages, page tables included; it holds "
                f"{self.charged} and {pages} more need {pages + tables}"
            )
        self.starts.append(base)
        self.ends.append(base + pages)
        self.next_vpn = base + pages + 1  # a guard page between regions
        self.mapped += pages
        self.table_pages += tables
        return base * PAGE_SIZE

    def _new_tables(self, base: int, pages: int) -> int:
        """Page-table pages that mapping `pages` pages at `base` adds: each covers
        PTES_PER_TABLE pages, and the first may be shared with the region before."""
        first, last = base // PTES_PER_TABLE, (base + pages - 1) // PTES_PER_TABLE
        shared = bool(self.ends) and (self.ends[-1] - 1) // PTES_PER_TABLE == first
        return last - first + 1 - shared

    def covers(self, first_vpn: int, last_vpn: int) -> bool:
        """Whether every page from `first_vpn` to `last_vpn` is mapped.  Regions
        are apart by guard pages, so a mapped run lies within one region."""
        i = bisect_right(self.starts, first_vpn) - 1
        return i >= 0 and last_vpn < self.ends[i]

    def entry(self, vpn: int) -> Pte | None:
        """The page-table entry of `vpn`, made on first touch; None if unmapped."""
        pte = self.table.get(vpn)
        if pte is None and self.covers(vpn, vpn):
            pte = self.table[vpn] = Pte()
        return pte

    def clear(self) -> None:
        self.table.clear()
        self.starts.clear()
        self.ends.clear()
        self.mapped = self.table_pages = self.resident = 0


class ClockPolicy:
    """The default eviction policy: the CLOCK second-chance algorithm."""

    name = "clock"

    def __init__(self) -> None:
        self.hand = 0

    def select_victim(self, mm: MemoryManager, candidates: list[int]) -> int:
        referenced = mm.referenced
        n = mm.nframes
        while True:
            frame = self.hand
            self.hand = (self.hand + 1) % n
            if mm.owner[frame] is None:
                continue
            if referenced[frame]:
                referenced[frame] = False
                continue
            return frame

    def prefetch(self, mm: MemoryManager, aspace: AddressSpace, vpn: int) -> list[int]:
        return []


class MemoryManager:
    def __init__(self, nframes: int, swap_slots: int | None = None, swap_path: str | None = None):
        if nframes < 4:
            raise ValueError(f"physical memory needs at least 4 frames, got {nframes}")
        self.nframes = nframes
        self.arena = _ffi.new("uint8_t[]", nframes * PAGE_SIZE)
        self.buf = _ffi.buffer(self.arena)
        self.owner: list[tuple[AddressSpace, int] | None] = [None] * nframes
        self.referenced = [False] * nframes
        self.free_frames = list(range(nframes - 1, -1, -1))
        self.swap = SwapArea(
            PAGE_SIZE, swap_slots if swap_slots is not None else nframes * 16, swap_path
        )
        self.policy: Any = ClockPolicy()
        self.on_policy_fault: Callable[[Any, str, str], None] | None = None
        self._fallback = ClockPolicy()
        # Notice hooks for a memory advisor: (aspace, vpn, frame), (aspace, vpn, major), (aspace, vpn, frame)
        self.access_hook: Callable[[AddressSpace, int, int], None] | None = None
        self.fault_hook: Callable[[AddressSpace, int, bool], None] | None = None
        self.evict_hook: Callable[[AddressSpace, int, int], None] | None = None
        self.prefetched = 0
        self.advice_ns = (
            0  # the memory advisor's inference during this fault: the faulting task waits for it
        )
        self.faults = 0
        self.swap_ins = 0
        self.swap_outs = 0
        #: Frames a guest gave back to its host (its balloon): out of use until taken again.
        self.ballooned: list[int] = []
        self.committed = 0  # pages mapped by every address space: what frames and swap must back

    # -- mapping ------------------------------------------------------------------

    def room_pages(self) -> int:
        """Pages a new mapping may still have: frames in use or free (not in the
        balloon) plus swap slots, less what is mapped already."""
        return self.nframes - len(self.ballooned) + self.swap.slots - self.committed

    def map(self, aspace: AddressSpace, pages: int) -> int:
        """Map `pages` pages into `aspace`; returns the region's address.  The
        kernel's one way to map: ENOMEM, with nothing allocated, when frames and
        swap could not back the mapping or the task's limit would be passed."""
        pages = page_count(pages)
        room = self.room_pages()
        if pages > room:
            raise OutOfMemory(
                f"cannot map {pages} pages: frames and swap can back {max(room, 0)} more"
            )
        base = aspace.map(pages)
        self.committed += pages
        return base

    # -- access -------------------------------------------------------------------

    def access(
        self, aspace: AddressSpace, addr: int, size: int, data: bytes | None = None
    ) -> tuple[bytes | None, int]:
        """Read `size` bytes at `addr`, or write `data` there.

        Returns (bytes read or None, I/O time in ns the caller must wait).
        """
        if type(addr) is not int or type(size) is not int or addr < 0 or size < 0:
            raise InvalidArgument(f"bad address range {addr!r}+{size!r}")
        if size > MAX_ACCESS_BYTES:
            raise InvalidArgument(f"one access moves at most {MAX_ACCESS_BYTES} bytes, not {size}")
        # The whole range is checked before any page is touched: a fault changes nothing.
        if size and not aspace.covers(addr // PAGE_SIZE, (addr + size - 1) // PAGE_SIZE):
            raise SegmentationFault(f"{addr:#x}+{size} is not all mapped")
        out = bytearray() if data is None else None
        io_ns = 0
        pos = 0
        while pos < size:
            vpn, off = divmod(addr + pos, PAGE_SIZE)
            chunk = min(PAGE_SIZE - off, size - pos)
            pte = aspace.entry(vpn)
            assert pte is not None  # the range is mapped
            if pte.frame < 0:
                io_ns += self._fault(aspace, vpn, pte)
            frame = pte.frame
            self.referenced[frame] = True
            if self.access_hook is not None:
                self.access_hook(aspace, vpn, frame)
            start = frame * PAGE_SIZE + off
            if data is None:
                out.extend(self.buf[start : start + chunk])  # type: ignore[union-attr]
            else:
                self.buf[start : start + chunk] = data[pos : pos + chunk]
                pte.dirty = True
            pos += chunk
        return (bytes(out) if out is not None else None), io_ns

    # -- paging -----------------------------------------------------------------

    def _fault(self, aspace: AddressSpace, vpn: int, pte: Pte) -> int:
        self.faults += 1
        major = pte.slot >= 0
        io_ns = self._load(aspace, vpn, pte)
        if self.fault_hook is not None:
            self.fault_hook(aspace, vpn, major)
        # A prefetch answer is vpns of this address space or (aspace, vpn) pairs.
        # Prefetched pages may evict others but never the page that faulted, and
        # they start unreferenced: they have to earn their place (Leap §4.2).
        for extra in list(self._ask("prefetch", aspace, vpn))[:MAX_PREFETCH_PAGES]:
            target, evpn = extra if isinstance(extra, tuple) else (aspace, extra)
            epte = target.table.get(evpn)
            if epte is not None and epte.frame < 0 and epte.slot >= 0:
                io_ns += self._load(target, evpn, epte, protect=pte.frame)
                self.referenced[epte.frame] = False
                self.prefetched += 1
        io_ns += self.advice_ns
        self.advice_ns = 0
        return io_ns

    def prefetch_page(self, aspace: AddressSpace, vpn: int) -> int:
        """Bring a swapped-out page in ahead of need (a background prefetch, for
        no task in particular).  Returns the device time, 0 if there was nothing to do."""
        pte = aspace.table.get(vpn)
        if pte is None or pte.frame >= 0 or pte.slot < 0:
            return 0
        io_ns = self._load(aspace, vpn, pte)
        self.referenced[pte.frame] = False
        self.prefetched += 1
        self.advice_ns = 0  # a background load: no task waits for the advice
        return io_ns

    def _load(self, aspace: AddressSpace, vpn: int, pte: Pte, protect: int = -1) -> int:
        io_ns = 0
        swapped = b""
        if pte.slot >= 0:
            # Read the page before a victim is evicted: the victim then takes its
            # slot, so a swap-in needs no free slot and a full swap area never
            # refuses a mapped page (strict commit holds at every touch).
            swapped = self.swap.read(pte.slot)
            if self.free_frames:
                self.swap.free(pte.slot)
            else:
                io_ns += self._evict(protect, pte.slot)
        elif not self.free_frames:
            io_ns += self._evict(protect)
        frame = self.free_frames.pop()
        base = frame * PAGE_SIZE
        if pte.slot >= 0:
            self.buf[base : base + PAGE_SIZE] = swapped
            pte.slot = -1
            self.swap_ins += 1
            io_ns += SWAP_IO_NS
        else:
            _ffi.memmove(self.arena + base, b"\0" * PAGE_SIZE, PAGE_SIZE)
            io_ns += MINOR_FAULT_NS
        pte.frame = frame
        pte.dirty = False
        self.owner[frame] = (aspace, vpn)
        self.referenced[frame] = True
        aspace.resident += 1
        return io_ns

    def _evict(self, protect: int = -1, slot: int = -1) -> int:
        """Write a victim frame to swap, into `slot` (one being loaded from) or a new one."""
        candidates = [f for f in range(self.nframes) if self.owner[f] is not None and f != protect]
        if not candidates:
            raise OutOfMemory("no frame can be evicted")
        victim = self._ask("select_victim", candidates)
        policy = self.policy
        if type(policy) is not ClockPolicy and not getattr(policy, "answers_checked", False):
            victim = self._checked_victim(victim, candidates)
        owner = self.owner[victim]
        assert owner is not None
        aspace, vpn = owner
        if self.evict_hook is not None:
            self.evict_hook(aspace, vpn, victim)
        pte = aspace.table[vpn]
        if slot < 0:
            slot = self.swap.alloc()
        base = victim * PAGE_SIZE
        self.swap.write(slot, self.buf[base : base + PAGE_SIZE])
        self.swap_outs += 1
        pte.slot = slot
        pte.frame = -1
        aspace.resident -= 1
        self.owner[victim] = None
        self.referenced[victim] = False
        self.free_frames.append(victim)
        return SWAP_IO_NS

    def _ask(self, method: str, *args: Any) -> Any:
        policy = self.policy
        fn = getattr(policy, method, None)
        if fn is None:
            return getattr(self._fallback, method)(self, *args)
        try:
            return fn(self, *args)
        except Exception as exc:  # the policy's fault, not the kernel's
            self._policy_fault("raised", f"{method} raised {type(exc).__name__}")
            return getattr(self._fallback, method)(self, *args)

    def _checked_victim(self, victim: Any, candidates: list[int]) -> int:
        """An unguarded policy's victim (one set here by hand, not an MLaaS
        binding, whose answers the guard checked) meets the same rule, its row's
        in the MLaaS callback table; CLOCK decides if it does not."""
        from kernel.mlaas.advisors import CALLBACK_TABLE
        from kernel.mlaas.faults import InvalidAnswer

        try:
            checked = CALLBACK_TABLE["select_victim"].check(victim, candidates)
        except InvalidAnswer as exc:
            self._policy_fault("invalid", str(exc))
            checked = None
        if checked is None:
            return self._fallback.select_victim(self, candidates)
        return int(checked)

    def _policy_fault(self, kind: str, message: str) -> None:
        """Report a misbehaving policy.  The handler (the MLaaS core) decides
        whether to eject it; with no handler the policy is detached."""
        if self.on_policy_fault is not None:
            self.on_policy_fault(self.policy, kind, message)
        else:
            self.policy = self._fallback

    # -- the balloon (a guest lends frames back to its host) ---------------------------

    def balloon_inflate(self, pages: int) -> int:
        """Take `pages` frames out of use, evicting pages to swap where none is
        free; returns the swap I/O time it took.  A few frames always stay."""
        if type(pages) is not int or pages < 1:
            raise InvalidArgument(f"the balloon takes a positive number of pages, got {pages!r}")
        left = self.nframes - len(self.ballooned) - BALLOON_KEEP_FRAMES
        if pages > left:
            raise OutOfMemory(f"only {max(left, 0)} more frames can go into the balloon")
        if pages > self.room_pages():  # what is mapped must stay backed
            raise OutOfMemory(
                f"mapped pages need all but {max(self.room_pages(), 0)} pages of frames and swap"
            )
        io_ns = 0
        for _ in range(pages):
            if not self.free_frames:
                io_ns += self._evict()
            self.ballooned.append(self.free_frames.pop())
        return io_ns

    def balloon_deflate(self, pages: int) -> None:
        """Put `pages` frames from the balloon back into use."""
        if type(pages) is not int or not 1 <= pages <= len(self.ballooned):
            raise InvalidArgument(
                f"the balloon holds {len(self.ballooned)} frames; cannot take back {pages!r}"
            )
        for _ in range(pages):
            self.free_frames.append(self.ballooned.pop())

    # -- lifecycle ------------------------------------------------------------------

    def release(self, aspace: AddressSpace) -> None:
        """Free every frame, swap slot and mapped page of an address space (task exit)."""
        for pte in aspace.table.values():
            if pte.frame >= 0:
                self.owner[pte.frame] = None
                self.referenced[pte.frame] = False
                self.free_frames.append(pte.frame)
            if pte.slot >= 0:
                self.swap.free(pte.slot)
        self.committed -= aspace.mapped
        aspace.clear()

    def info(self) -> dict[str, int]:
        used = self.nframes - len(self.free_frames)
        return {
            "page_size": PAGE_SIZE,
            "total_kib": self.nframes * PAGE_SIZE // 1024,
            "used_kib": used * PAGE_SIZE // 1024,
            "free_kib": len(self.free_frames) * PAGE_SIZE // 1024,
            "swap_total_kib": self.swap.slots * PAGE_SIZE // 1024,
            "swap_used_kib": self.swap.used * PAGE_SIZE // 1024,
            "faults": self.faults,
            "swap_ins": self.swap_ins,
            "swap_outs": self.swap_outs,
            "prefetched": self.prefetched,
            "balloon_kib": len(self.ballooned) * PAGE_SIZE // 1024,
            "committed_kib": self.committed * PAGE_SIZE // 1024,
        }

    def close(self) -> None:
        self.swap.close()
