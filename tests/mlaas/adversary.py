"""Hostile answers and probes for the MLaaS containment tests.

The broken modules in broken/ take their weapons from here: ints whose
comparisons, hash and conversions lie; floats that pass for ints; objects
whose every dunder method goes off (raises, exits or hangs); an exception
whose ``__str__`` goes off; an int whose ``__del__`` does.  The probes tell
what the kernel did with them: which dunders went off (`DETONATIONS`),
whether a thread still runs a module's code, whether a view leads back to
the kernel, and whether a KeyboardInterrupt or SystemExit got out.

A hang here lasts `HANG_S`: longer than any bound the tests put on wall time,
so a kernel that cannot stop it fails the test instead of hanging the suite.
"""

from __future__ import annotations

import contextlib
import enum
import gc
import os
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

#: Longer than the 30 s the tests allow: "forever", as far as the kernel's limits go.
HANG_S = 35.0
#: A workload's run is bounded in virtual time too, so that a kernel that keeps
#: taking a bad answer fails the test instead of running on.
RUN_LIMIT_NS = 60_000_000_000
#: Every dunder of a hostile object that ran, in order.  The kernel judges an
#: answer by its type: the one dunder it may run, inside the guard, is
#: `__index__` (`operator.index`, how a numpy integer scalar becomes an int).
DETONATIONS: list[str] = []
NORMALISING = "Bomb.__index__"


def stray_detonations() -> list[str]:
    """The dunders that went off other than while an integer answer was read."""
    return [what for what in DETONATIONS if what != NORMALISING]


def hang() -> None:
    """Busy-loop for `HANG_S`: only an interruption ends it sooner."""
    deadline = time.monotonic() + HANG_S
    while time.monotonic() < deadline:
        pass


class Detonation(RuntimeError):
    """What a dunder that was told to raise raises."""


def go_off(how: str, what: str) -> Any:
    """A hostile dunder ran: record it, then raise, exit or hang as told."""
    DETONATIONS.append(what)
    if how == "raise":
        raise Detonation(what)
    if how == "exit":
        sys.exit(f"{what} called sys.exit")
    hang()
    return None


# -- values that lie about what they are ----------------------------------------------


class LyingInt(int):
    """An int that claims to equal everything and to be neither smaller nor bigger
    than anything, hashes like 7 and converts to 7.  Only `int.__index__` (the int
    slot, not this class's) tells its real value."""

    def __eq__(self, other: object) -> bool:
        return True

    def __ne__(self, other: object) -> bool:
        return False

    def __lt__(self, other: object) -> bool:
        return False

    def __gt__(self, other: object) -> bool:
        return False

    def __le__(self, other: object) -> bool:
        return True

    def __ge__(self, other: object) -> bool:
        return True

    def __hash__(self) -> int:
        return 7

    def __index__(self) -> int:
        return 7

    def __int__(self) -> int:
        return 7

    def __float__(self) -> float:
        return 7.0

    def __bool__(self) -> bool:
        return True

    def __and__(self, other: object) -> int:
        return 1

    __rand__ = __and__

    def __repr__(self) -> str:
        return "7"

    __str__ = __repr__


def _raising(name: str) -> Callable[..., Any]:
    def dunder(self: Any, *args: Any) -> Any:
        return go_off("raise", f"{type(self).__name__}.{name}")

    dunder.__name__ = name
    return dunder


_INT_DUNDERS = (
    "__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__", "__hash__", "__index__",
    "__int__", "__float__", "__bool__", "__and__", "__rand__", "__or__", "__ror__",
    "__repr__", "__str__", "__format__", "__add__", "__radd__", "__sub__", "__rsub__",
)  # fmt: skip

#: An int all of whose dunders raise: its real value is still a plain int.
RaisingInt = type("RaisingInt", (int,), {n: _raising(n) for n in _INT_DUNDERS})
#: A float, and a str, whose dunders and string methods raise: only `float` and
#: `str` themselves can read them.
RaisingFloat = type("RaisingFloat", (float,), {n: _raising(n) for n in _INT_DUNDERS})
_STR_METHODS = (
    "__len__", "__iter__", "__getitem__", "__contains__", "__mod__", "isprintable", "isascii",
    "isidentifier", "split", "replace", "encode", "startswith", "partition", "join",
)  # fmt: skip
RaisingStr = type(
    "RaisingStr", (str,), {n: _raising(n) for n in _INT_DUNDERS + _STR_METHODS if n != "__and__"}
)


class LyingFloat(float):
    """A float that lies in comparisons as `LyingInt` does and offers `__index__` and
    `__int__` with its value truncated: it would pass for an int if anyone asked it."""

    __eq__ = LyingInt.__eq__
    __ne__ = LyingInt.__ne__
    __lt__ = LyingInt.__lt__
    __gt__ = LyingInt.__gt__
    __le__ = LyingInt.__le__
    __ge__ = LyingInt.__ge__

    def __hash__(self) -> int:
        return 7

    def __index__(self) -> int:
        return int(float(self))

    def __int__(self) -> int:
        return int(float(self))


class DelInt(int):
    """A good int answer whose `__del__` goes off when the kernel lets go of it."""

    def __new__(cls, value: int, how: str) -> DelInt:
        obj = super().__new__(cls, value)
        obj.how = how
        return obj

    def __del__(self) -> None:
        go_off(self.how, "__del__")


# -- objects whose dunders go off -----------------------------------------------------


class Bomb:
    """An answer every dunder of which goes off as `how` says ("raise", "exit" or
    "hang"), attribute lookups included."""

    __slots__ = ("how",)

    def __init__(self, how: str) -> None:
        self.how = how

    def __getattr__(self, name: str) -> Any:
        return go_off(self.how, f"Bomb.{name}")


_BOMB_DUNDERS = (
    "__repr__", "__str__", "__format__", "__bytes__", "__eq__", "__ne__", "__lt__", "__le__",
    "__gt__", "__ge__", "__hash__", "__bool__", "__len__", "__iter__", "__next__",
    "__contains__", "__getitem__", "__index__", "__int__", "__float__", "__complex__",
    "__call__", "__copy__", "__deepcopy__", "__reduce__", "__reduce_ex__", "__round__",
    "__trunc__", "__and__", "__rand__", "__or__", "__add__", "__radd__", "__neg__",
    "__abs__", "__enter__", "__exit__", "__getstate__",
)  # fmt: skip


def _bomb_dunder(name: str) -> Callable[..., Any]:
    def dunder(self: Bomb, *args: Any) -> Any:
        return go_off(self.how, f"Bomb.{name}")

    dunder.__name__ = name
    return dunder


for _name in _BOMB_DUNDERS:
    setattr(Bomb, _name, _bomb_dunder(_name))


class BombError(Exception):
    """An exception whose `__str__` and `__repr__` go off as `how` says."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how

    def __str__(self) -> str:
        return go_off(self.how, "BombError.__str__")

    def __repr__(self) -> str:
        return go_off(self.how, "BombError.__repr__")


class IterBomb:
    """Claims to be iterable; `__iter__` raises."""

    def __iter__(self) -> Iterator[int]:
        raise Detonation("IterBomb.__iter__")


def fails_after(items: list[Any], count: int) -> Iterator[Any]:
    """Yields `count` of `items`, then raises."""
    yield from items[:count]
    raise Detonation(f"iterator failed after {count} items")


def endless(item: Any) -> Iterator[Any]:
    """Yields `item` forever: the kernel must stop reading."""
    while True:
        yield item


class PairsMapping(Mapping):
    """A mapping kept as a list of pairs, so that keys whose hash and ``==`` lie stay
    distinct.  A key is found by identity, or by its real int value."""

    def __init__(self, pairs: list[tuple[Any, Any]]) -> None:
        self._pairs = list(pairs)

    def __getitem__(self, key: Any) -> Any:
        for k, v in self._pairs:
            if k is key:
                return v
        if type(key) is int:
            for k, v in self._pairs:
                if isinstance(k, int) and int.__index__(k) == key:
                    return v
        raise KeyError("no such key")

    def __iter__(self) -> Iterator[Any]:
        return iter([k for k, _ in self._pairs])

    def __len__(self) -> int:
        return len(self._pairs)


# -- probes ---------------------------------------------------------------------------


@contextlib.contextmanager
def no_escape() -> Iterator[None]:
    """Turn a KeyboardInterrupt or SystemExit that got out of the kernel into a test
    failure (a KeyboardInterrupt would otherwise stop the whole pytest session)."""
    try:
        yield
    except (KeyboardInterrupt, SystemExit) as exc:
        raise AssertionError(
            f"{type(exc).__name__} from module code reached the kernel's caller"
        ) from None


def run(k: Any) -> None:
    """Run a kernel's workload to the end, within `RUN_LIMIT_NS` of virtual time;
    nothing a module raises may reach here."""
    with no_escape():
        k.run(until=k.loop.now_ns + RUN_LIMIT_NS)


def wait_for(predicate: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    """Poll `predicate` until it holds or `timeout_s` of wall time passed."""
    deadline = time.monotonic() + timeout_s
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)


def threads_in(path: str) -> list[int]:
    """The threads (other than this one) whose stack is inside the file at `path`."""
    names = {path, os.path.realpath(path)}
    me = threading.get_ident()
    found = []
    for tid, frame in sys._current_frames().items():
        f: types.FrameType | None = frame
        while f is not None and tid != me:
            if f.f_code.co_filename in names:
                found.append(tid)
                break
            f = f.f_back
    return found


_PLAIN = (type(None), bool, int, float, complex, str, bytes, range)
_CONTAINERS = (tuple, list, set, frozenset, dict, types.MappingProxyType)
#: Kernel internals no view may lead to, by class name.
KERNEL_CLASSES = frozenset(
    {"Kernel", "Task", "MemoryManager", "Mlaas", "ModuleRecord", "Scheduler", "AddressSpace"}
)


def back_doors(root: Any) -> list[str]:
    """What `root` leads to that is neither a plain value nor another view object:
    each as "path: module.Class".  Views are objects of `kernel.mlaas` classes; what
    they hold (their slots and __dict__, through `gc.get_referents`) is followed, and
    so is what containers hold.  Classes are not followed (every class leads to its
    module); functions, methods, cells, modules, weak references and kernel objects
    are back doors."""
    found: list[str] = []
    seen: set[int] = set()
    stack: list[tuple[Any, str]] = [(root, type(root).__name__)]
    while stack:
        obj, path = stack.pop()
        if id(obj) in seen or isinstance(obj, type):
            continue
        seen.add(id(obj))
        cls = type(obj)
        if cls in _PLAIN or isinstance(obj, enum.Enum):
            continue
        if isinstance(obj, np.ndarray) and obj.dtype != object:
            continue
        if cls.__name__ in KERNEL_CLASSES or not (
            cls in _CONTAINERS or cls.__module__.startswith("kernel.mlaas")
        ):
            found.append(f"{path}: {cls.__module__}.{cls.__qualname__}")
            continue
        for i, ref in enumerate(gc.get_referents(obj)):
            stack.append((ref, f"{path}/{type(ref).__name__}[{i}]"))
    return found
