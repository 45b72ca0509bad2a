"""What a guest's GPU requests look like on its GPU queue (`drivers/vgpu`).

A guest reaches its host's vGPU by API remoting, as in LAKE: the guest's
front end (frontend.py) turns each request its programs Call it with into a
msgpack record on the GPU virtqueue, and the host's back end (backend.py)
serves it on the VM's context and writes back an answer record.  Only plain
values cross: a `LaunchSpec` travels as a map of its fields.

    request   [op, guest ctx, argument]     op: one of `OPS`; ctx 0 for none
    answer    [label, payload]              as the host driver's Message

The back end trusts nothing in a request: `decode_request` and `launch_spec`
check every type and range and raise `WireError`, which the back end answers
as ``["error", reason]``.
"""

from __future__ import annotations

import math
from typing import Any

import attrs
import msgpack

from drivers.vgpu.server import LaunchSpec

OPS = ("create_context", "alloc", "free", "launch", "sync", "destroy", "stats")
MAX_ID = (1 << 31) - 1  # ids, sizes in blocks and streams: what the engine's tables hold
MAX_BYTES = 1 << 50
MAX_STREAM = 1023  # a guest context's streams; (context, stream) maps to one host stream
MAX_BLOCK_US = 1e7
MAX_NAME = 64

# LaunchSpec's fields and the checks each gets: (types, lowest, highest).
_SPEC_FIELDS: dict[str, tuple[tuple[type, ...], float, float]] = {
    "grid_blocks": ((int,), 1, MAX_ID),
    "block_us": ((int, float), 0.0, MAX_BLOCK_US),
    "blocks_per_tpc": ((int,), 1, 64),
    "mem_fraction": ((int, float), 0.0, 1.0),
    "priority": ((int,), -1000, 1000),
    "stream": ((int,), 0, MAX_STREAM),
}


class WireError(ValueError):
    """A request the back end cannot serve as written."""


def encode(*record: Any) -> bytes:
    return msgpack.packb(record, use_bin_type=True)


def decode(data: bytes) -> list[Any]:
    """One record (a request or an answer), or WireError."""
    try:
        record = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises many kinds for bad input
        raise WireError(f"undecodable request: {type(exc).__name__}") from None
    if not isinstance(record, list) or not record or type(record[0]) is not str:
        raise WireError("a request is a list [op, ctx, argument]")
    return record


def decode_request(data: bytes) -> tuple[str, int, Any]:
    """(op, guest ctx, argument) of a request, checked for shape."""
    record = decode(data)
    if len(record) != 3:
        raise WireError("a request is a list [op, ctx, argument]")
    op, ctx, arg = record
    if op not in OPS:
        raise WireError(f"unknown request {op[:MAX_NAME]!r}")
    return op, check_id("context", ctx, zero=True), arg


def check_id(what: str, value: Any, zero: bool = False) -> int:
    if type(value) is not int or not (0 if zero else 1) <= value <= MAX_ID:
        raise WireError(f"{what} must be an id, got {_short(value)}")
    return value


def check_bytes(what: str, value: Any) -> int:
    if type(value) is not int or not 0 < value <= MAX_BYTES:
        raise WireError(f"{what} must be a positive number of bytes, got {_short(value)}")
    return value


def spec_fields(spec: LaunchSpec) -> dict[str, Any]:
    """A LaunchSpec as the plain map a request carries."""
    return attrs.asdict(spec)


def launch_spec(fields: Any) -> LaunchSpec:
    """The LaunchSpec a request's map describes, every field checked."""
    if not isinstance(fields, dict):
        raise WireError(f"launch needs a map of LaunchSpec fields, got {type(fields).__name__}")
    unknown = set(fields) - {"name", "mask", *_SPEC_FIELDS}
    if unknown or "name" not in fields:
        raise WireError(f"launch needs name and LaunchSpec fields, got {sorted(map(str, fields))}")
    name = fields["name"]
    if type(name) is not str or not 0 < len(name) <= MAX_NAME:
        raise WireError(f"a kernel name is 1 to {MAX_NAME} characters, got {_short(name)}")
    values: dict[str, Any] = {"name": name}
    for key, (types, low, high) in _SPEC_FIELDS.items():
        if key not in fields:
            continue
        value = fields[key]
        if type(value) not in types or not low <= value <= high or not math.isfinite(value):
            raise WireError(f"{key} must be within {low}..{high}, got {_short(value)}")
        values[key] = value
    mask = fields.get("mask")
    if mask is not None and (type(mask) is not int or not 0 < mask < 1 << 64):
        raise WireError(f"mask must be a TPC bit mask, got {_short(mask)}")
    values["mask"] = mask
    return LaunchSpec(**values)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
