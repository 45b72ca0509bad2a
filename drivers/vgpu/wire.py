"""What a guest's GPU requests look like on its GPU queue (`drivers/vgpu`).

A guest reaches its host's vGPU by API remoting, as in LAKE: the guest's
front end (frontend.py) turns each request its programs Call it with into a
fixed binary record on the GPU virtqueue, and the host's back end
(backend.py) serves it on the VM's context and writes back an answer.

A request (version 1, little-endian) is a 16-byte header, and for a launch
the launch record of `LaunchSpec.to_wire` (104 bytes) after it:

    offset  type  field
    0       u8    version (1)
    1       u8    op: its index in `OPS`
    2       u16   flags: bit 0, the request has no argument (arg is 0);
                  bit 1, quiet: answer it without an interrupt
    4       u32   ctx: the guest context it names (0 for none)
    8       i64   arg: the op's argument (see below)

    create_context  arg: quota bytes (or none)   stats, destroy  no argument
    alloc           arg: bytes                   free            arg: handle
    launch          arg: the guest's id for the kernel (ascending), then the launch record
    sync            arg: kernel id (or none: all of the context's)

An answer is the msgpack record ``[label, payload]``, as the host driver's
Message (the host's answers are trusted by the guest; a guest's bytes are not).

The back end trusts nothing in a request: `decode_request` and
`LaunchSpec.from_wire` check the length, the version, every field and the
padding, and raise `WireError` (or the driver's `InvalidArgument`), which
the back end answers as ``["error", reason]``.  Nothing is allocated in
proportion to what a guest wrote.
"""

from __future__ import annotations

import struct
from typing import Any, NamedTuple

import msgpack

from drivers.vgpu.errors import InvalidArgument
from drivers.vgpu.server import LAUNCH_WIRE, LaunchSpec

VERSION = 1
OPS = ("create_context", "alloc", "free", "launch", "sync", "destroy", "stats")
OP_CODES = {op: i for i, op in enumerate(OPS)}
MAX_ID = (1 << 31) - 1  # ids, sizes in blocks and streams: what the engine's tables hold
MAX_BYTES = 1 << 40  # a terabyte: past any preset, and what a snapshot holds
MAX_STREAM = 1023  # a guest context's streams; (context, stream) maps to one host stream
MAX_BLOCK_US = 1e7
MAX_NAME = 64  # a kernel name's UTF-8 bytes
NO_ARG = 1  # the request header's flags: no argument
QUIET = 2  # answer without an interrupt (the guest collects it with a later one)

#: LaunchSpec's numeric fields and the range the host accepts of each (`LaunchSpec.from_wire`).
SPEC_LIMITS: dict[str, tuple[float, float]] = {
    "grid_blocks": (1, MAX_ID),
    "block_us": (0.0, MAX_BLOCK_US),
    "blocks_per_tpc": (1, 64),
    "mem_fraction": (0.0, 1.0),
    "priority": (-1000, 1000),
    "stream": (0, MAX_STREAM),
}

REQUEST = struct.Struct("<BBHIq")
LAUNCH_REQUEST_BYTES = REQUEST.size + LAUNCH_WIRE.size


class WireError(ValueError):
    """A request the back end cannot serve as written."""


def encode_request(
    op: str, ctx: int, arg: int | None = None, spec: LaunchSpec | None = None, quiet: bool = False
) -> bytes:
    """A request's bytes (a launch carries `spec`'s record after the header)."""
    flags = (NO_ARG if arg is None else 0) | (QUIET if quiet else 0)
    header = REQUEST.pack(VERSION, OP_CODES[op], flags, ctx, arg or 0)
    return header if spec is None else header + spec.to_wire()


class Request(NamedTuple):
    """A request as the back end reads it, in plain values."""

    op: str
    ctx: int  # the guest context it names (0: none)
    arg: int | None
    spec: LaunchSpec | None  # a launch's
    quiet: bool  # answer without an interrupt


def decode_request(data: bytes | memoryview) -> Request:
    """A request's fields, every one checked."""
    size = len(data)
    if size not in (REQUEST.size, LAUNCH_REQUEST_BYTES):
        raise WireError(f"a request is {REQUEST.size} or {LAUNCH_REQUEST_BYTES} bytes, got {size}")
    version, code, flags, ctx, arg = REQUEST.unpack_from(data)
    if version != VERSION:
        raise WireError(f"request version {version} is not {VERSION}")
    if code >= len(OPS):
        raise WireError(f"unknown request {code}")
    if flags & ~(NO_ARG | QUIET) or flags & NO_ARG and arg != 0:
        raise WireError(f"request flags {flags:#x} with argument {arg} are not a request's")
    op = OPS[code]
    if (op == "launch") != (size == LAUNCH_REQUEST_BYTES):
        raise WireError("a launch, and only a launch, carries a launch record")
    spec = None
    if op == "launch":
        try:
            spec = LaunchSpec.from_wire(memoryview(data)[REQUEST.size :])
        except InvalidArgument as exc:
            raise WireError(str(exc)) from None
    return Request(
        op, check_id("context", int(ctx), zero=True), None if flags & NO_ARG else int(arg), spec,
        bool(flags & QUIET),
    )  # fmt: skip


def check_launch(spec: Any) -> LaunchSpec:
    """`spec` as the host will read it: a LaunchSpec whose record round-trips,
    or WireError (the front end refuses such a launch itself)."""
    if not isinstance(spec, LaunchSpec):
        raise WireError(f"launch needs a LaunchSpec, got {type(spec).__name__}")
    try:
        return LaunchSpec.from_wire(spec.to_wire())
    except InvalidArgument as exc:
        raise WireError(str(exc)) from None


def encode(*record: Any) -> bytes:
    """An answer's bytes: ``[label, payload]``."""
    return msgpack.packb(record, use_bin_type=True)


def decode(data: bytes) -> list[Any]:
    """An answer's ``[label, payload]``, or WireError."""
    try:
        record = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises many kinds for bad input
        raise WireError(f"undecodable answer: {type(exc).__name__}") from None
    if not isinstance(record, list) or len(record) != 2 or type(record[0]) is not str:
        raise WireError("an answer is a list [label, payload]")
    return record


def check_id(what: str, value: Any, zero: bool = False) -> int:
    if type(value) is not int or not (0 if zero else 1) <= value <= MAX_ID:
        raise WireError(f"{what} must be an id, got {_short(value)}")
    return value


def check_bytes(what: str, value: Any) -> int:
    if type(value) is not int or not 0 < value <= MAX_BYTES:
        raise WireError(f"{what} must be a positive number of bytes, got {_short(value)}")
    return value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
