"""Small programs to run from the shell: `run NAME [ARGS] [&]`."""

from __future__ import annotations

from kernel.memory import PAGE_SIZE
from kernel.traps import (
    Call,
    Compute,
    MemMap,
    MemRead,
    MemWrite,
    Message,
    NewEndpoint,
    Recv,
    Reply,
    ReplyRecv,
    Sleep,
    Spawn,
    WaitPid,
)
from userland.lib import UsageError, int_arg, println, program


@program
def echo(proc):
    """echo [WORDS...]: print the words."""
    yield from println(proc, " ".join(proc.argv))


@program
def spin(proc):
    """spin [MS]: use the CPU for MS milliseconds of virtual time (forever without MS)."""
    ms = int_arg(proc.argv, 0, "milliseconds", default=-1, minimum=-1)
    while ms != 0:
        yield Compute(1000)
        if ms > 0:
            ms -= 1
    yield from println(proc, f"spin: done ({proc.argv[0] if proc.argv else 'forever'} ms)")


@program
def sleep(proc):
    """sleep MS: sleep for MS milliseconds of virtual time."""
    ms = int_arg(proc.argv, 0, "milliseconds")
    yield Sleep(ms * 1000)


@program
def memhog(proc):
    """memhog PAGES: write a pattern to PAGES pages, then read every byte back.

    With more pages than physical frames this exercises swapping: the data
    must survive the round trip to the swap device byte for byte."""
    pages = int_arg(proc.argv, 0, "pages", minimum=1)
    base = yield MemMap(pages)
    for i in range(pages):
        yield MemWrite(base + i * PAGE_SIZE, _pattern(proc.pid, i))
    bad = 0
    for i in range(pages):
        data = yield MemRead(base + i * PAGE_SIZE, PAGE_SIZE)
        bad += data != _pattern(proc.pid, i)
    yield from println(proc, f"memhog: {pages} pages written and read back, {bad} corrupt")
    return 1 if bad else 0


def _pattern(pid: int, page: int) -> bytes:
    seed = f"pid{pid}page{page}:".encode()
    return (seed * (PAGE_SIZE // len(seed) + 1))[:PAGE_SIZE]


@program
def pingpong(proc):
    """pingpong [N]: N Call/ReplyRecv round trips between two tasks."""
    n = int_arg(proc.argv, 0, "round trips", default=1000, minimum=1)
    ep = yield NewEndpoint()
    server = yield Spawn(_pong_server, caps={"ep": ep}, name="pong")
    for i in range(n):
        r = yield Call(ep, Message("ping", i))
        if r.msg.payload != i:
            raise UsageError(f"pong answered {r.msg.payload!r} to ping {i}")
    yield Call(ep, Message("stop"))
    yield WaitPid(server)
    yield from println(proc, f"pingpong: {n} round trips")


def _pong_server(proc):
    ep = proc.caps["ep"]
    r = yield Recv(ep)
    while r.msg.label != "stop":
        r = yield ReplyRecv(ep, r.reply, Message("pong", r.msg.payload))
    yield Reply(r.reply, Message("bye"))
