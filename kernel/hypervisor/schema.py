"""Checking plain values from outside against a declared shape.

A snapshot's image (snapshot.py) is read from a file, and even an authentic
file is untrusted: every value in it is checked here before anything is
rebuilt from it.  A schema is a tree of nodes that says, for each place in
the image, its type, its range or length and, for a container, the shape of
what it holds:

    Record({"name": Str(64), "cpus": Int(1, 64), "waiting": List(Tuple(Int(0, 9)), 8)})

`check(schema, value, budget)` returns a fresh copy of `value` built only of
built-in types (dict, list, str, bytes, int, bool, None), or raises
`Invalid` naming the first bad place (``domain.waiting[0][1]: 99 is outside
0..63``).  Types are exact (a bool is not an int, an int subclass is not an
int): nothing of a value is called, so no value can run code while it is
checked.  A `Budget` bounds the whole: its items and the bytes of its
strings; and `Plain`, the one node that takes any plain value, bounds its
depth.  (A place is named only when a check fails, as the error unwinds:
checking costs no string building.)
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from kernel.text import printable

I64_MIN, I64_MAX = -(1 << 63), (1 << 63) - 1


class Invalid(ValueError):
    """A value does not fit its schema; the message names where and why, in one line."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.steps: list[str] = []  # the place, innermost first: "[3]", ".name", ...

    def inside(self, step: str) -> Invalid:
        self.steps.append(step)
        return self

    def __str__(self) -> str:
        place = "".join(reversed(self.steps)).lstrip(".")
        return f"{place or 'the image'}: {self.reason}"


class Budget:
    """What one check may still visit: items (every value counts one) and
    the bytes of strings and byte strings."""

    def __init__(self, items: int, text_bytes: int) -> None:
        self.items = items
        self.text_bytes = text_bytes

    def take(self, text_bytes: int = 0) -> None:
        self.items -= 1
        self.text_bytes -= text_bytes
        if self.items < 0 or self.text_bytes < 0:
            raise Invalid("the image is larger than a snapshot may be")


class Node:
    """One place in a schema.  `read` checks `value` and returns its plain copy."""

    def read(self, value: Any, budget: Budget) -> Any:
        raise NotImplementedError


def _kind(value: Any) -> str:
    """A value's type, as a message names it (never by calling the value)."""
    for plain, name in _NAMES:
        if type(value) is plain:
            return name
    return "an object"


_NAMES = (
    (int, "an int"), (bool, "a bool"), (str, "a str"), (bytes, "bytes"), (float, "a float"),
    (list, "a list"), (dict, "a map"), (type(None), "nil"),
)  # fmt: skip


def _expected(value: Any, what: str) -> Invalid:
    return Invalid(f"expected {what}, got {_kind(value)}")


class Int(Node):
    def __init__(self, low: int = I64_MIN, high: int = I64_MAX) -> None:
        self.low, self.high = low, high

    def read(self, value: Any, budget: Budget) -> int:
        budget.take()
        if type(value) is not int:
            raise _expected(value, "an int")
        if not self.low <= value <= self.high:
            shown = value if I64_MIN <= value <= I64_MAX else "a number"
            raise Invalid(f"{shown} is outside {self.low}..{self.high}")
        return value


class Bool(Node):
    def read(self, value: Any, budget: Budget) -> bool:
        budget.take()
        if type(value) is not bool:
            raise _expected(value, "a bool")
        return value


class Nil(Node):
    def read(self, value: Any, budget: Budget) -> None:
        budget.take()
        if value is not None:
            raise _expected(value, "nil")
        return None


class Str(Node):
    """A str of at most `max_len` characters; with `pattern`, one it matches whole."""

    def __init__(self, max_len: int, pattern: str | None = None, min_len: int = 0) -> None:
        self.max_len, self.min_len = max_len, min_len
        self.pattern = re.compile(pattern) if pattern is not None else None

    def read(self, value: Any, budget: Budget) -> str:
        if type(value) is not str:
            budget.take()
            raise _expected(value, "a str")
        budget.take(len(value))
        if not self.min_len <= len(value) <= self.max_len:
            raise Invalid(f"a str of {len(value)} characters; {self.min_len}..{self.max_len}")
        if self.pattern is not None and not self.pattern.fullmatch(value):
            raise Invalid(f"{printable(value, 64)!r} is not of the form {self.pattern.pattern}")
        return value


class Bytes(Node):
    def __init__(self, max_len: int) -> None:
        self.max_len = max_len

    def read(self, value: Any, budget: Budget) -> bytes:
        if type(value) is not bytes:
            budget.take()
            raise _expected(value, "bytes")
        budget.take(len(value))
        if len(value) > self.max_len:
            raise Invalid(f"{len(value)} bytes; at most {self.max_len}")
        return value


class Maybe(Node):
    """nil, or a value of `node`."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def read(self, value: Any, budget: Budget) -> Any:
        if value is None:
            budget.take()
            return None
        return self.node.read(value, budget)


class List(Node):
    def __init__(self, item: Node, max_len: int, min_len: int = 0) -> None:
        self.item, self.max_len, self.min_len = item, max_len, min_len

    def read(self, value: Any, budget: Budget) -> list[Any]:
        budget.take()
        if type(value) is not list:
            raise _expected(value, "a list")
        if not self.min_len <= len(value) <= self.max_len:
            raise Invalid(f"a list of {len(value)}; {self.min_len}..{self.max_len} items")
        read, plain = self.item.read, []
        for i, item in enumerate(value):
            try:
                plain.append(read(item, budget))
            except Invalid as exc:
                raise exc.inside(f"[{i}]") from None
        return plain


class Tuple(Node):
    """A list of fixed length, each item of its own node."""

    def __init__(self, *items: Node) -> None:
        self.items = items

    def read(self, value: Any, budget: Budget) -> list[Any]:
        budget.take()
        if type(value) is not list:
            raise _expected(value, "a list")
        if len(value) != len(self.items):
            raise Invalid(f"a list of {len(value)}; expected {len(self.items)} items")
        plain = []
        for i, (node, item) in enumerate(zip(self.items, value, strict=True)):
            try:
                plain.append(node.read(item, budget))
            except Invalid as exc:
                raise exc.inside(f"[{i}]") from None
        return plain


class Record(Node):
    """A map with exactly these str keys, each value of its node."""

    def __init__(self, fields: Mapping[str, Node]) -> None:
        self.fields = dict(fields)

    def read(self, value: Any, budget: Budget) -> dict[str, Any]:
        budget.take()
        if type(value) is not dict:
            raise _expected(value, "a map")
        for key in value:
            if type(key) is not str or key not in self.fields:
                shown = repr(key)[:40] if type(key) in (str, int) else _kind(key)
                raise Invalid(f"an unknown key {shown}")
        plain = {}
        for key, node in self.fields.items():
            if key not in value:
                raise Invalid(f"the key {key!r} is missing")
            try:
                plain[key] = node.read(value[key], budget)
            except Invalid as exc:
                raise exc.inside(f".{key}") from None
        return plain


class Map(Node):
    """A map of at most `max_len` entries, keys and values each of their node."""

    def __init__(self, key: Node, value: Node, max_len: int) -> None:
        self.key, self.value, self.max_len = key, value, max_len

    def read(self, value: Any, budget: Budget) -> dict[Any, Any]:
        budget.take()
        if type(value) is not dict:
            raise _expected(value, "a map")
        if len(value) > self.max_len:
            raise Invalid(f"a map of {len(value)} entries; at most {self.max_len}")
        plain: dict[Any, Any] = {}
        for k, v in value.items():
            try:
                key = self.key.read(k, budget)
            except Invalid as exc:
                raise exc.inside(" key") from None
            try:
                plain[key] = self.value.read(v, budget)
            except Invalid as exc:
                raise exc.inside(f"[{key!r}]"[:48]) from None
        return plain


class Switch(Node):
    """A value whose shape depends on a tag in it: `tag(value)` picks the node
    from `cases` (it must not fail on any plain value; None when there is no tag)."""

    def __init__(self, tag: Callable[[Any], Any], cases: Mapping[Any, Node], what: str) -> None:
        self.tag, self.cases, self.what = tag, dict(cases), what

    def read(self, value: Any, budget: Budget) -> Any:
        node = self.cases.get(self.tag(value))
        if node is None:
            budget.take()
            raise Invalid(f"not {self.what}")
        return node.read(value, budget)


class Plain(Node):
    """Any plain value: nil, bool, a 64-bit int, str, bytes, and lists and
    maps (with str or int keys) of them, nested at most `depth` deep."""

    def __init__(self, depth: int, max_len: int, limit: int | None = None) -> None:
        self.depth, self.max_len = depth, max_len
        self.limit = depth if limit is None else limit  # the depth the outermost allows
        self._leaves: dict[type, Node] = {
            int: Int(),
            str: Str(max_len),
            bytes: Bytes(max_len),
            bool: Bool(),
        }
        inner = _Deeper(self, depth - 1) if depth > 0 else None
        self._list = List(inner, max_len) if inner is not None else None
        key = Switch(lambda v: type(v) if type(v) in (int, str) else None,
                     {int: Int(), str: Str(max_len)}, "an int or a str")  # fmt: skip
        self._map = Map(key, inner, max_len) if inner is not None else None

    def read(self, value: Any, budget: Budget) -> Any:
        kind = type(value)
        if kind is list or kind is dict:
            container = self._list if kind is list else self._map
            if container is None:
                budget.take()
                raise Invalid(f"nested deeper than {self.limit}")
            return container.read(value, budget)
        return self._leaves.get(kind, Nil()).read(value, budget)


class _Deeper(Node):
    """`Plain` one level down: made when first reached, so depth costs nothing until used."""

    def __init__(self, outer: Plain, depth: int) -> None:
        self.outer, self.depth = outer, depth
        self._plain: Plain | None = None

    def read(self, value: Any, budget: Budget) -> Any:
        if self._plain is None:
            self._plain = Plain(self.depth, self.outer.max_len, self.outer.limit)
        return self._plain.read(value, budget)


def check(schema: Node, value: Any, budget: Budget) -> Any:
    """`value`, checked against `schema`, as a fresh tree of plain values; `Invalid` if not."""
    return schema.read(value, budget)
