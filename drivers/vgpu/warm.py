"""Compiling the vGPU's numba code, visibly, or ahead of time (`drivers/vgpu`).

The sharing loop (`sharing/epoch.py`'s `DISPATCHERS`, with the engine and
every policy's callbacks compiled into it) takes numba about two minutes
of CPU to compile the first time; numba caches it (numba_cache.py), and
later runs load it in well under a second.  A run that is about to compile
says so once, with what it is compiling and about how long it takes, and
shows how long it has been going (`ensure_compiled`); `malv compile`
(`compile_everything`) does all of it ahead of time.

The notice goes to the host's standard error, never to the kernel's log:
whether a cache was warm depends on the host, and nothing the kernel
records may.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from numba import typeof

#: A compile not finished after this long is announced (loading the cache takes about 2 s).
QUIET_S = 3.0
#: How often the notice says how long the compile has taken so far.
TICK_S = 5.0
#: What the notice says a cold compile of the loop takes.
EXPECTED = "about two minutes of CPU"


def say(line: str, *, progress: bool = False) -> None:
    """Write a notice to standard error.  On a terminal a progress line
    replaces the one before it (and a line ends in CR LF: the booted
    terminal is in raw mode); elsewhere only every sixth progress line is
    written, each on its own line."""
    global _progress_lines
    err = sys.stderr
    if err.isatty():
        err.write(f"\r{line}\x1b[K" if progress else f"\r{line}\x1b[K\r\n")
    elif not progress or _progress_lines % 6 == 0:
        err.write(line + "\n")
    _progress_lines += progress
    err.flush()


_progress_lines = 0  # progress lines said so far


def loop_entries(dispatchers: dict[str, Any], dev: Any, pol: Any) -> list[tuple[str, Any, tuple]]:
    """The compiled loop's dispatchers (`epoch.DISPATCHERS`) with the
    argument types a run of tables `dev` and policy state `pol` calls them with."""
    d, p, i = typeof(dev), typeof(pol), typeof(0)
    args = {
        "enter": (d, p, p, i, i, i), "needs_room": (d,), "push_python_timer": (d, i, i),
        "inflight_masks": (d, typeof(dev.st[0])), "rehash": (d, typeof(dev.fifo_hash)),
        "set_clock": (d, i),
    }  # fmt: skip
    return [(name, fn, args[name]) for name, fn in dispatchers.items()]


def ensure_compiled(what: str, entries: Sequence[tuple[str, Any, tuple]]) -> float:
    """Compile (or load from numba's cache) each entry for its signature;
    if that takes longer than QUIET_S, say so, and how long it is taking.
    Returns the seconds it took."""
    pending = [(name, fn, sig) for name, fn, sig in entries if sig not in fn.overloads]
    if not pending:
        return 0.0
    start = time.monotonic()
    done = threading.Event()
    failed: list[BaseException] = []

    def work() -> None:
        try:
            for _, fn, sig in pending:
                fn.compile(sig)
        except BaseException as exc:  # re-raised on the caller's thread
            failed.append(exc)
        finally:
            done.set()

    threading.Thread(target=work, name="numba-compile", daemon=True).start()
    if not done.wait(QUIET_S):
        say(
            f"malvos: compiling {what} with numba, once ({EXPECTED}; numba caches it, and "
            "`malv compile` does it ahead of time)"
        )
        while not done.wait(TICK_S):
            say(f"malvos: still compiling {what}: {time.monotonic() - start:.0f} s", progress=True)
        say(f"malvos: compiled {what} in {time.monotonic() - start:.0f} s")
    if failed:
        raise failed[0]
    return time.monotonic() - start


def loop_cached() -> bool:
    """Whether numba's cache holds the sharing loop (its entry's index file
    is there; one left stale by an edit to the unit still compiles)."""
    from drivers.vgpu.sharing import epoch

    try:
        return os.path.exists(epoch.ENTER._cache._cache_file._index_path)
    except AttributeError:  # numba keeps it elsewhere: assume not
        return False


def compile_everything() -> dict[str, float]:
    """Warm every numba cache the system uses: the sharing loop (which the
    simulation and the booted driver share: a one-tenant simulation's tables
    have the driver's types) and the functional kernels.  Returns the
    seconds each part took."""
    import numpy as np

    from drivers.vgpu import functional
    from drivers.vgpu.policies import make_policy
    from drivers.vgpu.sharing import epoch
    from drivers.vgpu.sharing.sim import Simulation, Tenant
    from drivers.vgpu.traces import Workload
    from drivers.vgpu.work import KernelDesc

    kernel = KernelDesc(name="k", grid_blocks=8, blocks_per_tpc=2, block_duration_ns=1000)
    tenant = Tenant("t", Workload("w", (kernel,), 8000, (0,), "malv compile"), "closed")
    sim = Simulation([tenant], make_policy("mps"), duration_ns=10_000, compiled=False)
    sim.run()  # interpreted: its tables' types are what is wanted
    loop = sim.loop
    assert loop is not None
    loop._set_mode(False)
    name = "the GPU sharing loop"
    taken = {name: ensure_compiled(name, loop_entries(epoch.DISPATCHERS, loop.dev, loop.pol))}
    start = time.monotonic()
    x = np.ones((2, 2), np.float32)
    functional.mlp_forward(x, [x], [np.zeros(2, np.float32)])
    taken["the functional kernels"] = time.monotonic() - start
    return taken
