"""Plain, printable, bounded text: what untrusted values become before a person reads them.

A module's log fields, exit reports and descriptions, and a program's log
records, pass through here on their way to the kernel log, `lsmod`,
`modinfo` or a terminal.  Nothing of the value's own code runs: types are
read with `type`, subclasses of the built-in scalars through the base
class's slots, and anything else is named by its type.

This file imports nothing but the standard library, so the isolated
module's child process can use it without loading the kernel log.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

# -- what a module may put in one record ---------------------------------------------------

MAX_EVENT_CHARS = 128
MAX_KEY_CHARS = 32
MAX_VALUE_CHARS = 256
MAX_FIELDS = 16
#: The event, keys and values of one module record together, in characters.
MAX_RECORD_CHARS = 4096
#: Fields the kernel writes itself.  A module's field of the same name is kept
#: as ``module.NAME``: a key with a dot, which no module key can be.
KERNEL_FIELDS = frozenset(
    {"t_ns", "subsystem", "kernel", "level", "event", "module", "task", "pid", "vm",
     "fields_dropped"}
)  # fmt: skip

# -- plain, printable text ----------------------------------------------------------

_str_slice = str.__getitem__  # a str subclass's characters, with none of its methods run
_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_TRUNCATED = "..."


def _escape(ch: str) -> str:
    named = _NAMED_ESCAPES.get(ch)
    if named is not None:
        return named
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def printable(text: str, limit: int | None = MAX_VALUE_CHARS) -> str:
    """`text` as one line that a terminal shows as it is, at most `limit` characters.

    Every character Python does not call printable (`str.isprintable`: C0 and
    C1 controls, DEL and so ESC sequences, bidi overrides such as U+202E,
    line and paragraph separators, surrogates, unassigned code points) is
    written as its Python escape (``\\x1b``, ``\\n``, ``\\u202e``).  Text cut to
    `limit` ends in ``...``.  A str subclass is read through `str` itself:
    none of its methods runs.
    """
    head = _str_slice(text, slice(0, None if limit is None else limit + 1))
    if head.isprintable():
        pieces = None
        length = len(head)
    else:
        pieces = [ch if ch.isprintable() else _escape(ch) for ch in head]
        length = sum(map(len, pieces))
    if limit is None or length <= limit:
        return head if pieces is None else "".join(pieces)
    if pieces is None:
        return head[: limit - len(_TRUNCATED)] + _TRUNCATED
    kept, room = [], limit - len(_TRUNCATED)
    for piece in pieces:  # whole escapes only: never half of ``\x1b``
        room -= len(piece)
        if room < 0:
            break
        kept.append(piece)
    return "".join(kept) + _TRUNCATED


def printable_block(text: str, limit: int) -> str:
    """Like `printable`, but line breaks stay: for a module's description."""
    head = _str_slice(text, slice(0, limit + 1))
    lines = [printable(line, None) for line in head.split("\n")]
    block = "\n".join(lines)
    return block if len(block) <= limit else block[: limit - len(_TRUNCATED)] + _TRUNCATED


_type_qualname = type.__dict__["__qualname__"].__get__


def type_label(value: Any) -> str:
    """``<TypeName>``: `value`'s real type, by the name the type object holds."""
    return f"<{printable(_type_qualname(type(value)), 64)}>"


def _plain_int(n: int) -> int | str:
    """An exact int: itself within 64 bits (what msgpack and every JSON reader
    take), its digits up to 240 of them, else its size.  The size test comes
    first: a 10**100000 never reaches `str`."""
    if -(1 << 63) <= n < 1 << 63:
        return n
    bits = n.bit_length()
    return int.__repr__(n) if bits <= 792 else f"<int of {bits} bits>"


def _plain_float(x: float) -> float | str:
    return x if math.isfinite(x) else float.__repr__(x)  # JSON has no nan or inf


def plain_value(value: Any, limit: int = MAX_VALUE_CHARS) -> str | int | float | bool:
    """What a module gave as a log field, as a str, int, float or bool.

    Nothing of the module's runs: types are read with `type` (never
    ``__class__``), subclasses of int, float and str are read through the base
    class's own slot (``int.__index__`` copies the value out), containers of
    the exact built-in types are written out up to `limit` characters, and
    anything else is named by its type: ``<Bomb>``.
    """
    t = type(value)
    if t is bool:
        return value
    if t is str:
        return printable(value, limit)
    if t is int:
        return _plain_int(value)
    if t is float:
        return _plain_float(value)
    if issubclass(t, int):  # a real subtype: issubclass of a class runs no method of it
        return _plain_int(int.__index__(value))
    if issubclass(t, float):
        return _plain_float(float.__float__(value))
    if issubclass(t, str):
        return printable(value, limit)
    return value_text(value, limit)


def value_text(value: Any, limit: int) -> str:
    """Any value as printable text of at most `limit` characters, strings quoted
    (``'a\\x1b'``, ``[1, 2]``, ``<Bomb>``), with none of its methods run."""
    return _Writer(limit).text(value)


class _Writer:
    """Writes a nested value as text within a budget of characters.  The budget
    also bounds the work: a list of a million empty lists stops after a few."""

    __slots__ = ("parts", "left")
    _MAX_DEPTH = 8
    _OPEN_CLOSE: dict[type, str] = {list: "[]", tuple: "()", set: "{}", frozenset: "{}"}

    def __init__(self, limit: int) -> None:
        self.parts: list[str] = []
        self.left = limit

    def text(self, value: Any) -> str:
        limit = self.left
        self.write(value, 0)
        return printable("".join(self.parts), limit)

    def put(self, text: str) -> None:
        self.parts.append(text)
        self.left -= len(text)

    def write(self, value: Any, depth: int) -> None:
        t = type(value)
        if t is bool or value is None:
            self.put("True" if value is True else "False" if value is False else "None")
        elif issubclass(t, str):  # quoted, and cut before it is copied
            self.put(repr(_str_slice(value, slice(0, max(self.left, 0) + 1))))
        elif issubclass(t, (int, float)):
            plain = plain_value(value)
            self.put(plain if type(plain) is str else repr(plain))
        elif depth >= self._MAX_DEPTH or t not in (list, tuple, set, frozenset, dict):
            self.put(type_label(value) if depth < self._MAX_DEPTH else "...")
        elif t is dict:
            self.items(value.items(), "{}", depth, pairs=True)
        else:
            brackets = "(,)" if t is tuple and len(value) == 1 else self._OPEN_CLOSE[t]
            self.items(value, brackets, depth, pairs=False)

    def items(self, items: Any, brackets: str, depth: int, *, pairs: bool) -> None:
        self.put(brackets[0])
        for n, item in enumerate(items):
            if self.left <= 0:
                return
            if n:
                self.put(", ")
            if pairs:
                self.write(item[0], depth + 1)
                self.put(": ")
                item = item[1]
            self.write(item, depth + 1)
        self.put(brackets[1:])


def plain_fields(
    event: Any, fields: Mapping[Any, Any]
) -> tuple[str, dict[str, str | int | float | bool]]:
    """A module's event and fields as one bounded record's worth of plain values
    (the limits above).  Keys that are not short ASCII identifiers, and fields
    past `MAX_FIELDS` or past `MAX_RECORD_CHARS`, are dropped and counted in
    ``fields_dropped``; a key the kernel writes itself becomes ``module.KEY``."""
    text = plain_value(event, MAX_EVENT_CHARS)
    text = text if type(text) is str else repr(text)
    out: dict[str, str | int | float | bool] = {}
    size, dropped = len(text), 0
    for key, value in fields.items():
        if (
            type(key) is not str
            or not 0 < len(key) <= MAX_KEY_CHARS
            or not key.isascii()
            or not key.isidentifier()
            or len(out) >= MAX_FIELDS
        ):
            dropped += 1
            continue
        plain = plain_value(value)
        size += len(key) + (len(plain) if type(plain) is str else 24)
        if size > MAX_RECORD_CHARS:
            dropped += 1
            continue
        out[f"module.{key}" if key in KERNEL_FIELDS else key] = plain
    if dropped:
        out["fields_dropped"] = dropped
    return text, out
