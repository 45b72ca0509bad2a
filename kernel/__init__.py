"""malvos: a unikernel-style, message-passing microkernel.

    from kernel import boot

    with boot(headless=True, seed=0) as k:
        print(k.shell("ps"))

`kernel` imports no driver, module or program: servers and programs are
found by name through the ``malvos.programs`` entry points.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kernel.caps import Rights
from kernel.clock import EventLoop, RealtimeLoop
from kernel.errors import SyscallError
from kernel.kernel import BANNER, VERSION, Kernel, KernelHalted
from kernel.task import Proc
from kernel.traps import Message, Received

__all__ = [
    "BANNER", "VERSION", "EventLoop", "Kernel", "KernelHalted", "Message", "Proc",
    "RealtimeLoop", "Received", "Rights", "SyscallError", "boot",
]  # fmt: skip


def boot(
    *,
    headless: bool = True,
    seed: int = 0,
    console: Callable[[str], None] | None = None,
    **config: Any,
) -> Kernel:
    """Boot a kernel to the shell prompt and return it.

    Headless kernels run at maximum speed in virtual time; `console` receives
    everything written to the console (by default it is only kept in
    `kernel.tty.transcript`).  Other keyword arguments go to `Kernel`
    (cpus, frames, log_format, loop, slice_ns, ...).
    """
    if not headless:
        config.setdefault("realtime", True)
    k = Kernel(seed=seed, console=console, **config)
    return k.boot()
