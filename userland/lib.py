"""What userland programs share: console output and argument parsing."""

from __future__ import annotations

import functools

from kernel.errors import SyscallError
from kernel.traps import Message, Send


class UsageError(Exception):
    """A program or shell command was given bad arguments."""


def write(proc, text: str):
    """Print `text` on the console (the `console` cap of the program)."""
    con = proc.caps.get("console")
    if con is not None:
        yield Send(con, Message("write", text))


def println(proc, text: str = ""):
    yield from write(proc, text + "\n")


def int_arg(argv, i: int, what: str, default: int | None = None, minimum: int = 0) -> int:
    if i >= len(argv):
        if default is None:
            raise UsageError(f"missing {what}")
        return default
    try:
        value = int(argv[i])
    except ValueError:
        raise UsageError(f"{what} must be an integer, got {argv[i]!r}") from None
    if value < minimum:
        raise UsageError(f"{what} must be at least {minimum}, got {value}")
    return value


def program(fn):
    """Make a generator function a program: bad arguments or a refused
    request print one line (``name: reason``) and exit with status 2."""

    @functools.wraps(fn)
    def run(proc):
        try:
            return (yield from fn(proc))
        except (UsageError, SyscallError) as exc:
            yield from println(proc, f"{proc.name}: {exc}")
            return 2

    return run
