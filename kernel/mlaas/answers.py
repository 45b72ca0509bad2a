"""Answers at the edge: a module's answer turned into plain built-in values.

A module may answer with anything: an int subclass whose `__eq__`, `__lt__`
or `__hash__` lie, a numpy scalar, an object whose dunders raise or hang, a
generator that never ends.  The kernel never compares, hashes or formats
such an object.  Each function here runs *inside the guard* (`Mlaas.ask`),
reads the answer once, and returns plain values (`int`, `str`, `list`,
`dict` of exact built-in types) or raises `InvalidAnswer`; the checks
against the kernel's own tables then use only those values.

How an integer is read: an `int` is taken as it is; an int subclass by its
real value (`int.__index__`, CPython's own slot: no method of the subclass
runs); anything else through `operator.index` (numpy integer scalars), whose
result is read the same way.  `bool` is not an integer answer.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Mapping
from itertools import islice
from typing import Any

from kernel.mlaas.faults import GUARD_FILES, InvalidAnswer, describe_value

GUARD_FILES.add(__file__)

_int_value = int.__index__
_str_value = str.__str__


def plain_int(value: Any, what: str) -> int:
    """`value` as an exact int, or `InvalidAnswer` naming `what`."""
    kind = type(value)
    if kind is int:
        return value
    if kind is bool or issubclass(kind, (float, str, bytes, bytearray)):
        raise InvalidAnswer(f"{what} is {describe_value(value)}, not an integer")
    if not issubclass(kind, int):
        try:
            value = operator.index(value)  # numpy integers; runs the answer's __index__
        except TypeError:
            raise InvalidAnswer(f"{what} is {describe_value(value)}, not an integer") from None
    return _int_value(value)


def plain_str(value: Any, what: str) -> str:
    if type(value) is str:
        return value
    if issubclass(type(value), str):
        return _str_value(value)
    raise InvalidAnswer(f"{what} is {describe_value(value)}, not a string")


def plain_optional_int(value: Any, what: str) -> int | None:
    return None if value is None else plain_int(value, what)


def plain_items(value: Any, what: str, limit: int) -> list[Any]:
    """At most `limit` items of an iterable answer (not a string or a mapping)."""
    if value is None:
        return []
    if issubclass(type(value), (str, bytes, bytearray, dict)) or not isinstance(value, Iterable):
        raise InvalidAnswer(f"{what} is {describe_value(value)}, not a collection")
    return list(islice(iter(value), limit))


def plain_page(item: Any, what: str) -> int | tuple[int, int]:
    """A prefetch item: a vpn, or a ``(pid, vpn)`` pair."""
    if issubclass(type(item), tuple):
        pair = tuple.__getitem__(item, slice(None))  # the tuple's real items
        if len(pair) != 2:
            raise InvalidAnswer(f"{what} has {describe_value(item)}, not a (pid, vpn) pair")
        return plain_int(pair[0], f"a pid in {what}"), plain_int(pair[1], f"a vpn in {what}")
    return plain_int(item, f"an item of {what}")


def plain_int_map(value: Any, what: str, limit: int) -> dict[int, int]:
    """A mapping answer copied into a dict of ints (at most `limit` entries)."""
    if not isinstance(value, Mapping):
        raise InvalidAnswer(f"{what} is {describe_value(value)}, not a mapping")
    items = list(islice(iter(value.items()), limit + 1))
    if len(items) > limit:
        raise InvalidAnswer(f"{what} has more than {limit} entries")
    out: dict[int, int] = {}
    for item in items:
        if not issubclass(type(item), tuple) or tuple.__len__(item) != 2:
            raise InvalidAnswer(f"{what} is not a mapping of integers to integers")
        key, mask = tuple.__getitem__(item, 0), tuple.__getitem__(item, 1)
        out[plain_int(key, f"a key of {what}")] = plain_int(mask, f"a value of {what}")
    return out
