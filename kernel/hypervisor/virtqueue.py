"""Virtqueues: the virtio 1.x split ring, in memory a guest and its host share.

A queue of size N is three parts of guest-physical memory, laid out as the
cffi structs below (virtio 1.x §2.7, little-endian):

    descriptor table  N x virtq_desc          16 bytes each, 16-byte aligned
    available ring    flags, idx, ring[N], used_event       2-byte aligned
    used ring         flags, idx, ring[N] of {id, len}, avail_event  4-byte aligned

The guest side (`Driver`) writes a chain of descriptors (readable ones first,
then writable ones), publishes its head in the available ring and kicks.  The
host side (`Device`) pops each published head, walks the chain, hands the
request bytes to a handler, writes the answer into the writable buffers and
pushes a used entry (head id, bytes written), then raises an interrupt.

The host trusts nothing the guest wrote.  Every descriptor is checked before
use; a bad chain is answered with a used entry of length 0 and its reason is
kept in `Device.errors` (the latest few: a guest cannot grow host memory by
writing bad chains).  A ring the host cannot read a chain from at all (a
head index past the queue size, an available index that ran ahead by more
than the queue size) marks the queue broken with a reason, as a virtio
device sets DEVICE_NEEDS_RESET.  No guest-written value makes the host raise.

A good answer is one status byte (`STATUS_OK`, or an error) followed by the
handler's reply, so its used length is at least 1.

A back end that answers later (`take`) reads a request through a view
(`GuestMemory.view`, a memoryview over the cffi arena, bounds-checked), not
a copy, where the chain has one readable buffer: it must convert what it
reads to plain values at once, since the guest may write the buffer again.
"""

from __future__ import annotations

import struct
import sys
from collections import deque
from collections.abc import Callable, Sequence
from itertools import pairwise
from typing import Protocol

import attrs
import cffi

from kernel.errors import InvalidArgument, SegmentationFault

if sys.byteorder != "little":  # cffi structs use the host's byte order; virtio's is little
    raise ImportError("virtqueues need a little-endian host")

ffi = cffi.FFI()
ffi.cdef(
    """
    struct virtq_desc { uint64_t addr; uint32_t len; uint16_t flags; uint16_t next; };
    struct virtq_avail { uint16_t flags; uint16_t idx; uint16_t ring[]; };
    struct virtq_used_elem { uint32_t id; uint32_t len; };
    struct virtq_used { uint16_t flags; uint16_t idx; struct virtq_used_elem ring[]; };
    """
)

DESC_SIZE = ffi.sizeof("struct virtq_desc")  # 16
USED_ELEM_SIZE = ffi.sizeof("struct virtq_used_elem")  # 8
AVAIL_RING_OFFSET = ffi.offsetof("struct virtq_avail", "ring")  # 4
USED_RING_OFFSET = ffi.offsetof("struct virtq_used", "ring")  # 4
IDX_OFFSET = ffi.offsetof("struct virtq_avail", "idx")  # 2, the same in virtq_used

DESC_ALIGN, AVAIL_ALIGN, USED_ALIGN = 16, 2, 4
MAX_QUEUE_SIZE = 32768

# virtq_desc.flags
DESC_F_NEXT = 1
DESC_F_WRITE = 2
DESC_F_INDIRECT = 4
# virtq_avail.flags: the driver asks for no interrupt
AVAIL_F_NO_INTERRUPT = 1

# The first byte of every answer a device writes.
STATUS_OK = 0
STATUS_HANDLER_ERROR = 1  # the handler raised: the request was not served
STATUS_TOO_LONG = 2  # the answer did not fit the writable buffers

MAX_REQUEST_BYTES = 1 << 20  # one chain's readable bytes the host will copy
MAX_KEPT_ERRORS = 64  # the reasons a device keeps


class GuestMemoryError(SegmentationFault):
    """An access outside guest memory."""


class Memory(Protocol):
    """Guest-physical memory as the host sees it: bytes with bounds."""

    size: int

    def read(self, addr: int, n: int) -> bytes: ...

    def write(self, addr: int, data: bytes) -> None: ...


def view(memory: Memory, addr: int, n: int) -> bytes | memoryview:
    """`n` bytes of `memory` at `addr`: a view where the memory offers one
    (`GuestMemory.view`), else a copy; GuestMemoryError outside it."""
    make = getattr(memory, "view", None)
    return make(addr, n) if make is not None else memory.read(addr, n)


class GuestMemory:
    """A flat cffi byte buffer of guest-physical memory, every access bounds-checked."""

    def __init__(self, size: int) -> None:
        if type(size) is not int or size <= 0:
            raise InvalidArgument(f"guest memory needs a positive size, got {size!r}")
        self.size = size
        self._arena = ffi.new("uint8_t[]", size)
        self._buf = ffi.buffer(self._arena)
        self._view = memoryview(self._buf)

    def contains(self, addr: int, n: int) -> bool:
        return 0 <= addr and 0 <= n and addr + n <= self.size

    def _check(self, addr: int, n: int) -> None:
        if type(addr) is not int or type(n) is not int or not self.contains(addr, n):
            raise GuestMemoryError(f"{addr!r}+{n!r} is outside guest memory of {self.size} bytes")

    def read(self, addr: int, n: int) -> bytes:
        self._check(addr, n)
        return bytes(self._buf[addr : addr + n])

    def view(self, addr: int, n: int) -> memoryview:
        """The `n` bytes at `addr`, without a copy: they change as the memory does."""
        self._check(addr, n)
        return self._view[addr : addr + n]

    def write(self, addr: int, data: bytes) -> None:
        self._check(addr, len(data))
        self._buf[addr : addr + len(data)] = data


def _align_up(value: int, align: int) -> int:
    return (value + align - 1) & ~(align - 1)


@attrs.frozen
class RingLayout:
    """Where a queue's three parts lie in guest memory."""

    size: int
    desc_addr: int
    avail_addr: int
    used_addr: int

    @property
    def desc_bytes(self) -> int:
        return DESC_SIZE * self.size

    @property
    def avail_bytes(self) -> int:
        return AVAIL_RING_OFFSET + 2 * self.size + 2  # + used_event

    @property
    def used_bytes(self) -> int:
        return USED_RING_OFFSET + USED_ELEM_SIZE * self.size + 2  # + avail_event

    @property
    def end(self) -> int:
        return max(
            self.desc_addr + self.desc_bytes,
            self.avail_addr + self.avail_bytes,
            self.used_addr + self.used_bytes,
        )

    @classmethod
    def packed(cls, base: int, size: int) -> RingLayout:
        """The three parts one after another from `base`, each at its alignment."""
        desc = _align_up(base, DESC_ALIGN)
        avail = _align_up(desc + DESC_SIZE * size, AVAIL_ALIGN)
        used = _align_up(avail + AVAIL_RING_OFFSET + 2 * size + 2, USED_ALIGN)
        return cls(size, desc, avail, used)

    def validate(self, memory: Memory) -> None:
        """Raise InvalidArgument unless the layout is a legal ring inside `memory`."""
        n = self.size
        if type(n) is not int or n < 1 or n > MAX_QUEUE_SIZE or n & (n - 1):
            raise InvalidArgument(f"queue size must be a power of two up to 32768, got {n!r}")
        parts = [
            ("descriptor table", self.desc_addr, self.desc_bytes, DESC_ALIGN),
            ("available ring", self.avail_addr, self.avail_bytes, AVAIL_ALIGN),
            ("used ring", self.used_addr, self.used_bytes, USED_ALIGN),
        ]
        for name, addr, length, align in parts:
            if type(addr) is not int or addr < 0 or addr + length > memory.size:
                raise InvalidArgument(f"the {name} at {addr!r}+{length} is outside guest memory")
            if addr % align:
                raise InvalidArgument(f"the {name} at {addr:#x} is not {align}-byte aligned")
        ordered = sorted(parts, key=lambda p: p[1])
        for (a_name, a, a_len, _), (b_name, b, _, _) in pairwise(ordered):
            if a + a_len > b:
                raise InvalidArgument(f"the {a_name} overlaps the {b_name}")


# The hot accessors pack and unpack with `struct`, in the same little-endian
# layout the cdef above declares (checked here, at import): making a cffi
# object for every field read cost most of a request's time.
_U16 = struct.Struct("<H")
_DESC = struct.Struct("<QIHH")
_USED_ELEM = struct.Struct("<II")
assert _DESC.size == ffi.sizeof("struct virtq_desc")
assert _USED_ELEM.size == ffi.sizeof("struct virtq_used_elem")


def _u16(memory: Memory, addr: int) -> int:
    value: int = _U16.unpack(memory.read(addr, 2))[0]
    return value


def _put_u16(memory: Memory, addr: int, value: int) -> None:
    memory.write(addr, _U16.pack(value & 0xFFFF))


def _read_desc(memory: Memory, layout: RingLayout, i: int) -> tuple[int, int, int, int]:
    addr, n, flags, nxt = _DESC.unpack(memory.read(layout.desc_addr + DESC_SIZE * i, DESC_SIZE))
    return addr, n, flags, nxt


def _write_desc(
    memory: Memory, layout: RingLayout, i: int, addr: int, n: int, flags: int, nxt: int
) -> None:
    memory.write(layout.desc_addr + DESC_SIZE * i, _DESC.pack(addr, n, flags, nxt))


# -- the guest side ------------------------------------------------------------------------------


class QueueFull(Exception):
    """The driver has fewer free descriptors than the chain needs."""


class Driver:
    """The guest's half of a queue: it owns the descriptor table and the available ring."""

    def __init__(
        self,
        memory: Memory,
        layout: RingLayout,
        notify: Callable[[], object] | None = None,
        start_idx: int = 0,
    ) -> None:
        layout.validate(memory)
        self.memory, self.layout, self.notify = memory, layout, notify
        self.free = list(range(layout.size - 1, -1, -1))
        self.chains: dict[int, list[int]] = {}  # head -> its descriptors, until used
        self.avail_idx = start_idx & 0xFFFF
        self.last_used = start_idx & 0xFFFF
        _put_u16(memory, layout.avail_addr, 0)
        _put_u16(memory, layout.avail_addr + IDX_OFFSET, self.avail_idx)
        _put_u16(memory, layout.used_addr, 0)
        _put_u16(memory, layout.used_addr + IDX_OFFSET, self.avail_idx)

    def add(self, readable: Sequence[tuple[int, int]], writable: Sequence[tuple[int, int]]) -> int:
        """Write a chain of (addr, len) buffers, readable ones first, and publish
        its head in the available ring.  Returns the head's descriptor index."""
        bufs = [(a, n, 0) for a, n in readable] + [(a, n, DESC_F_WRITE) for a, n in writable]
        if not bufs:
            raise InvalidArgument("a chain needs at least one buffer")
        if len(bufs) > len(self.free):
            raise QueueFull(f"{len(bufs)} descriptors needed, {len(self.free)} free")
        ids = [self.free.pop() for _ in bufs]
        for k, (i, (addr, n, flags)) in enumerate(zip(ids, bufs, strict=True)):
            last = k == len(ids) - 1
            nxt = 0 if last else ids[k + 1]
            flags |= 0 if last else DESC_F_NEXT
            _write_desc(self.memory, self.layout, i, addr, n, flags, nxt)
        head = ids[0]
        self.chains[head] = ids
        slot = self.avail_idx % self.layout.size
        _put_u16(self.memory, self.layout.avail_addr + AVAIL_RING_OFFSET + 2 * slot, head)
        # The index is written last: the device must never see a head before its chain.
        self.avail_idx = (self.avail_idx + 1) & 0xFFFF
        _put_u16(self.memory, self.layout.avail_addr + IDX_OFFSET, self.avail_idx)
        return head

    def kick(self) -> None:
        """Tell the device there is work (later: the KICK hypercall)."""
        if self.notify is not None:
            self.notify()

    def used(self) -> list[tuple[int, int]]:
        """Collect the (head, length written) entries the device pushed since the
        last call, and free their descriptors."""
        out = []
        used_idx = _u16(self.memory, self.layout.used_addr + IDX_OFFSET)
        while self.last_used != used_idx:
            slot = self.last_used % self.layout.size
            head, length = _USED_ELEM.unpack(
                self.memory.read(
                    self.layout.used_addr + USED_RING_OFFSET + USED_ELEM_SIZE * slot,
                    USED_ELEM_SIZE,
                )
            )
            self.free.extend(reversed(self.chains.pop(head, [])))
            out.append((head, length))
            self.last_used = (self.last_used + 1) & 0xFFFF
        return out


# -- the host side ---------------------------------------------------------------------------------


class ChainError(Exception):
    """One chain the device refused, with the reason."""


@attrs.frozen
class Request:
    """What a handler gets: the head, the request bytes, and room for the answer."""

    head: int
    data: bytes | memoryview  # a view of guest memory: read it at once, into plain values
    writable_bytes: int


Handler = Callable[[Request], bytes]


class Device:
    """The host's half of a queue: it reads the available ring and writes the used ring."""

    def __init__(
        self,
        memory: Memory,
        layout: RingLayout,
        handler: Handler,
        interrupt: Callable[[], object] | None = None,
        start_idx: int = 0,
    ) -> None:
        layout.validate(memory)
        self.memory, self.layout = memory, layout
        self.handler, self.interrupt = handler, interrupt
        self.last_avail = start_idx & 0xFFFF
        self.used_idx = start_idx & 0xFFFF
        self.broken: str | None = None
        # (head, reason) of the latest failed requests; `failed` counts them all
        self.errors: deque[tuple[int, str]] = deque(maxlen=MAX_KEPT_ERRORS)
        self.failed = 0
        self.served = 0
        self._pending: dict[int, list[tuple[int, int]]] = {}  # taken, not finished: writable bufs

    # -- the chain walk: every check a guest's descriptor must pass

    def _walk(self, head: int) -> list[tuple[int, int, bool]]:
        """The chain from `head` as (addr, len, writable), or ChainError."""
        n = self.layout.size
        chain: list[tuple[int, int, bool]] = []
        seen: set[int] = set()
        i = head
        while True:
            seen.add(i)
            addr, length, flags, nxt = _read_desc(self.memory, self.layout, i)
            if flags & DESC_F_INDIRECT:
                raise ChainError(f"descriptor {i}: indirect descriptors are not offered")
            if addr + length > self.memory.size:
                raise ChainError(
                    f"descriptor {i}: buffer {addr:#x}+{length} is outside guest memory"
                )
            writable = bool(flags & DESC_F_WRITE)
            if chain and chain[-1][2] and not writable:
                raise ChainError(f"descriptor {i}: a readable buffer after a writable one")
            chain.append((addr, length, writable))
            if not flags & DESC_F_NEXT:
                return chain
            if nxt >= n:
                raise ChainError(f"descriptor {i}: next index {nxt} is past the queue size {n}")
            if len(chain) >= n:
                raise ChainError(f"the chain is longer than the queue size {n}")
            if nxt in seen:
                raise ChainError(f"descriptor {i}: next index {nxt} makes a loop")
            i = nxt

    def _fail(self, head: int, reason: str) -> int:
        self.errors.append((head, reason))
        self.failed += 1
        return 0

    def _request(self, head: int, as_view: bool = False) -> tuple[Request, list[tuple[int, int]]]:
        """The request a chain carries and its writable buffers, or ChainError.
        `as_view`: a one-buffer request's data is a view of guest memory."""
        chain = self._walk(head)
        readable = [(a, n) for a, n, w in chain if not w]
        if sum(n for _, n in readable) > MAX_REQUEST_BYTES:
            raise ChainError(f"the request is over {MAX_REQUEST_BYTES} bytes")
        writable = [(a, n) for a, n, w in chain if w]
        room = sum(n for _, n in writable)
        if room == 0:
            raise ChainError("the chain has no writable buffer for the status")
        if as_view and len(readable) == 1:
            data: bytes | memoryview = view(self.memory, *readable[0])
        else:
            data = b"".join(self.memory.read(a, n) for a, n in readable)
        return Request(head, data, room - 1), writable

    def _answer(self, head: int, writable: list[tuple[int, int]], reply: object) -> int:
        """Write a handler's reply (bytes, or an exception it raised) into the
        chain's writable buffers; the bytes written."""
        room = sum(n for _, n in writable)
        if isinstance(reply, BaseException):  # the handler's fault: this request fails
            self._fail(head, f"the handler raised {type(reply).__name__}: {reply}")
            answer = bytes([STATUS_HANDLER_ERROR])
        elif not isinstance(reply, (bytes, bytearray)):
            self._fail(head, f"the handler answered a {type(reply).__name__}, not bytes")
            answer = bytes([STATUS_HANDLER_ERROR])
        else:
            answer = bytes([STATUS_OK]) + bytes(reply)
            if len(answer) > room:
                answer = bytes([STATUS_TOO_LONG])
        pos = 0
        for addr, n in writable:
            piece = answer[pos : pos + n]
            if not piece:
                break
            self.memory.write(addr, piece)
            pos += len(piece)
        return len(answer)

    def _serve(self, head: int) -> int:
        """Serve one chain at once; the bytes written (0 for a refused chain)."""
        try:
            request, writable = self._request(head)
        except ChainError as exc:
            return self._fail(head, str(exc))
        try:
            reply: object = self.handler(request)
        except Exception as exc:  # the handler's fault: this request fails, the host goes on
            reply = exc
        return self._answer(head, writable, reply)

    def _push_used(self, head: int, written: int) -> None:
        slot = self.used_idx % self.layout.size
        self.memory.write(
            self.layout.used_addr + USED_RING_OFFSET + USED_ELEM_SIZE * slot,
            _USED_ELEM.pack(head, written),
        )
        self.used_idx = (self.used_idx + 1) & 0xFFFF
        _put_u16(self.memory, self.layout.used_addr + IDX_OFFSET, self.used_idx)

    def _break(self, reason: str) -> int:
        self.broken = reason
        return 0

    # -- served later: a back end that answers after virtual time passes

    def take(self) -> list[Request]:
        """Pop every chain the guest published, for a back end that answers
        later (`finish`).  A refused chain is answered at once (length 0)."""
        taken: list[Request] = []
        refused = 0
        for head in self._published():
            try:
                request, writable = self._request(head, as_view=True)
            except ChainError as exc:
                self._push_used(head, self._fail(head, str(exc)))
                refused += 1
                continue
            self._pending[head] = writable
            taken.append(request)
        if refused:
            self._notify()
        return taken

    def finish(
        self, request: Request, reply: bytes | BaseException, interrupt: bool = True
    ) -> None:
        """Answer a request `take` returned, and interrupt the guest (unless
        not `interrupt`: the guest collects the used entry when it next looks)."""
        writable = self._pending.pop(request.head, None)
        if writable is None or self.broken is not None:
            return  # not outstanding (answered already), or the queue broke meanwhile
        try:
            self._push_used(request.head, self._answer(request.head, writable, reply))
        except GuestMemoryError as exc:
            self._break(f"the ring is no longer inside guest memory: {exc}")
            return
        self.served += 1
        if interrupt:
            self._notify()

    @property
    def outstanding(self) -> int:
        """Requests taken and not yet finished."""
        return len(self._pending)

    def _published(self) -> list[int]:
        """The heads published since the last call, in order (advancing past
        them); stops at the first the ring cannot name, and breaks the queue."""
        if self.broken is not None:
            return []
        n = self.layout.size
        heads: list[int] = []
        try:
            avail_idx = _u16(self.memory, self.layout.avail_addr + IDX_OFFSET)
            pending = (avail_idx - self.last_avail) & 0xFFFF
            if pending > n:
                self._break(
                    f"the available index {avail_idx} is {pending} ahead of the device's "
                    f"{self.last_avail}, more than the queue size {n}"
                )
                return []
            for _ in range(pending):
                slot = self.last_avail % n
                head = _u16(self.memory, self.layout.avail_addr + AVAIL_RING_OFFSET + 2 * slot)
                if head >= n:
                    self._break(
                        f"available ring slot {slot} names descriptor {head}, "
                        f"past the queue size {n}"
                    )
                    break
                if head in self._pending:
                    self._break(f"descriptor {head} was published again before it was used")
                    break
                heads.append(head)
                self.last_avail = (self.last_avail + 1) & 0xFFFF
        except GuestMemoryError as exc:
            self._break(f"the ring is no longer inside guest memory: {exc}")
        return heads

    def _notify(self) -> None:
        try:
            flags = _u16(self.memory, self.layout.avail_addr)
        except GuestMemoryError:
            return
        if self.interrupt is not None and not flags & AVAIL_F_NO_INTERRUPT:
            self.interrupt()

    def process(self) -> int:
        """Serve every chain the guest published (the answer to a kick).
        Returns how many; a queue that breaks serves nothing more."""
        if self.broken is not None:
            return 0
        n = self.layout.size
        served, avail_flags = 0, 0
        try:
            avail_flags = _u16(self.memory, self.layout.avail_addr)
            avail_idx = _u16(self.memory, self.layout.avail_addr + IDX_OFFSET)
            pending = (avail_idx - self.last_avail) & 0xFFFF
            if pending > n:
                return self._break(
                    f"the available index {avail_idx} is {pending} ahead of the device's "
                    f"{self.last_avail}, more than the queue size {n}"
                )
            for _ in range(pending):
                slot = self.last_avail % n
                head = _u16(self.memory, self.layout.avail_addr + AVAIL_RING_OFFSET + 2 * slot)
                if head >= n:  # the chains served before it stay served, and are told
                    self._break(
                        f"available ring slot {slot} names descriptor {head}, "
                        f"past the queue size {n}"
                    )
                    break
                self._push_used(head, self._serve(head))
                self.last_avail = (self.last_avail + 1) & 0xFFFF
                served += 1
        except GuestMemoryError as exc:  # the guest's memory shrank under its ring
            self._break(f"the ring is no longer inside guest memory: {exc}")
        self.served += served
        if served and self.interrupt is not None and not avail_flags & AVAIL_F_NO_INTERRUPT:
            self.interrupt()
        return served
