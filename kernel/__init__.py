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
from kernel.config import BootPlan, ConfigError, KernelConfig, ServerSpec
from kernel.errors import SyscallError
from kernel.kernel import BANNER, VERSION, Kernel, KernelHalted
from kernel.task import Proc
from kernel.traps import Message, Received

__all__ = [
    "BANNER", "VERSION", "BootPlan", "ConfigError", "EventLoop", "Kernel", "KernelConfig",
    "KernelHalted", "Message", "Proc", "RealtimeLoop", "Received", "Rights", "ServerSpec",
    "SyscallError", "boot",
]  # fmt: skip


def boot(
    config: KernelConfig | None = None,
    *,
    console: Callable[[str], None] | None = None,
    loop: EventLoop | None = None,
    **settings: Any,
) -> Kernel:
    """Boot a kernel to the shell prompt and return it.

    The kernel is described by `config`, or by keyword settings, the fields of
    `KernelConfig` (``boot(seed=3, cpus=4, gpu=None)``).  Headless kernels (the
    default) run at maximum speed in virtual time; `console` receives
    everything written to the console (by default it is only kept in
    `kernel.tty.transcript`).
    """
    return Kernel(config, console=console, loop=loop, **settings).boot()
