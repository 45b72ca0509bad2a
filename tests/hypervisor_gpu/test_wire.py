"""The GPU queue's wire format: LaunchSpec's fixed record and the request header (wire.py)."""

from __future__ import annotations

import math
import struct
import tracemalloc

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.vgpu import wire
from drivers.vgpu.errors import InvalidArgument
from drivers.vgpu.server import LAUNCH_WIRE, LaunchSpec

names = st.text(
    st.characters(codec="utf-8", categories=("L", "N", "P", "S"), include_characters=" "),
    min_size=1,
    max_size=16,
)
specs = st.builds(
    LaunchSpec,
    name=names,
    grid_blocks=st.integers(1, wire.MAX_ID),
    block_us=st.floats(0.0, wire.MAX_BLOCK_US),
    blocks_per_tpc=st.integers(1, 64),
    mem_fraction=st.floats(0.0, 1.0),
    priority=st.integers(-1000, 1000),
    stream=st.integers(0, wire.MAX_STREAM),
    mask=st.one_of(st.none(), st.integers(1, 2**64 - 1)),
)


@given(specs)
def test_a_launch_spec_round_trips_through_its_record(spec):
    record = spec.to_wire()
    assert len(record) == LAUNCH_WIRE.size == 104
    assert LaunchSpec.from_wire(record) == spec
    assert LaunchSpec.from_wire(memoryview(record)) == spec


@given(specs, st.integers(0, wire.MAX_ID), st.integers(1, wire.MAX_ID), st.booleans())
def test_a_launch_request_round_trips_with_its_header(spec, ctx, kernel, quiet):
    data = wire.encode_request("launch", ctx, kernel, spec, quiet=quiet)
    assert wire.decode_request(data) == ("launch", ctx, kernel, spec, quiet)


@given(st.sampled_from([op for op in wire.OPS if op != "launch"]), st.integers(0, wire.MAX_ID),
       st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)))  # fmt: skip
def test_every_other_request_round_trips(op, ctx, arg):
    assert wire.decode_request(wire.encode_request(op, ctx, arg)) == (op, ctx, arg, None, False)


def _decoded_or_refused(data: bytes) -> object:
    try:
        return wire.decode_request(data)
    except wire.WireError as exc:
        return exc


def _plain(value: object) -> bool:
    return type(value) in (int, float, str, bool, type(None))


@given(st.binary(max_size=4096))
def test_arbitrary_bytes_are_refused_or_read_into_plain_values_and_never_raise_otherwise(data):
    tracemalloc.start()
    try:
        got = _decoded_or_refused(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024  # nothing in proportion to what the guest wrote
    if isinstance(got, wire.Request):
        assert all(_plain(v) for v in got[:3]) and type(got.quiet) is bool
        if got.spec is not None:
            assert all(_plain(v) for v in attrs.astuple(got.spec))


@given(st.binary(min_size=104, max_size=104))
def test_an_arbitrary_launch_record_is_a_checked_spec_or_refused(record):
    try:
        spec = LaunchSpec.from_wire(record)
    except InvalidArgument:
        return
    assert type(spec.name) is str and 0 < len(spec.name.encode()) <= wire.MAX_NAME
    assert spec.name.isprintable()
    for key, (low, high) in wire.SPEC_LIMITS.items():
        value = getattr(spec, key)
        assert type(value) in (int, float) and low <= value <= high and math.isfinite(value)
    assert spec.mask is None or type(spec.mask) is int and 0 < spec.mask < 2**64
    assert spec.to_wire() == record  # the one record that means this spec


def _record(**changes: object) -> bytes:
    fields = dict(version=1, flags=0, stream=0, grid=1, block_us=1.0, mem=0.0, priority=0,
                  per_tpc=2, name_len=1, mask=0, name=b"k")  # fmt: skip
    fields.update(changes)
    return LAUNCH_WIRE.pack(*fields.values())


@pytest.mark.parametrize(
    ("record", "words"),
    [
        (_record()[:-1], "104 bytes"),
        (_record() + b"\0", "104 bytes"),
        (_record(version=2), "version"),
        (_record(flags=2), "flags"),
        (_record(mask=5), "mask"),
        (_record(flags=1, mask=0), "mask"),
        (_record(name_len=0), "name"),
        (_record(name_len=65), "name"),
        (_record(name=b"k\0x"), "zero-padded"),
        (_record(name_len=2, name=b"\xff\xfe"), "UTF-8"),
        (_record(name_len=2, name=b"k\n"), "printable"),
        (_record(grid=0), "grid_blocks"),
        (_record(grid=2**31), "grid_blocks"),
        (_record(block_us=math.nan), "block_us"),
        (_record(block_us=math.inf), "block_us"),
        (_record(block_us=-1.0), "block_us"),
        (_record(mem=1.5), "mem_fraction"),
        (_record(priority=1001), "priority"),
        (_record(per_tpc=0), "blocks_per_tpc"),
        (_record(per_tpc=65), "blocks_per_tpc"),
        (_record(stream=1024), "stream"),
    ],
)
def test_a_bad_launch_record_is_refused_with_its_reason(record, words):
    with pytest.raises(InvalidArgument, match=words):
        LaunchSpec.from_wire(record)


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"", "bytes"),
        (wire.encode_request("sync", 1, 1) + b"\0", "bytes"),
        (struct.pack("<BBHIq", 2, 4, 0, 1, 1), "version"),
        (struct.pack("<BBHIq", 1, 7, 0, 1, 1), "unknown request"),
        (struct.pack("<BBHIq", 1, 4, 4, 1, 1), "flags"),
        (struct.pack("<BBHIq", 1, 4, 1, 1, 1), "flags"),
        (struct.pack("<BBHIq", 1, 4, 0, 2**31, 1), "context"),
        (struct.pack("<BBHIq", 1, 3, 0, 1, 1), "launch record"),
        (wire.encode_request("sync", 1, 1) + bytes(104), "launch record"),
        (wire.encode_request("launch", 1, 1) + bytes(104), "version"),
    ],
)
def test_a_bad_request_header_is_refused_with_its_reason(data, words):
    with pytest.raises(wire.WireError, match=words):
        wire.decode_request(data)


def test_a_spec_that_does_not_fit_the_record_is_refused_in_the_guest():
    with pytest.raises(InvalidArgument):
        LaunchSpec("k", grid_blocks=2**32, block_us=1.0).to_wire()
    with pytest.raises(wire.WireError, match="grid_blocks"):
        wire.check_launch(LaunchSpec("k", grid_blocks=2**31, block_us=1.0))
    with pytest.raises(wire.WireError, match="LaunchSpec"):
        wire.check_launch({"name": "k"})
