"""malvos: a unikernel-style, message-passing microkernel.

    from kernel import Machine, boot

    with boot(headless=True, seed=0) as k:
        print(k.shell("ps"))

    machine = Machine()  # a host for several kernels, sharing its clock
    a, b = machine.boot(name="a"), machine.boot(name="b")
    machine.run(until=machine.now_ns + 10**9)  # one virtual second, for both

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
from kernel.machine import Machine
from kernel.task import Proc
from kernel.traps import Message, Received

__all__ = [
    "BANNER", "VERSION", "BootPlan", "ConfigError", "EventLoop", "Kernel", "KernelConfig",
    "KernelHalted", "Machine", "Message", "Proc", "RealtimeLoop", "Received", "Rights",
    "ServerSpec", "SyscallError", "boot",
]  # fmt: skip


def boot(
    config: KernelConfig | None = None,
    *,
    console: Callable[[str], None] | None = None,
    machine: Machine | None = None,
    **settings: Any,
) -> Kernel:
    """Boot a kernel to the shell prompt and return it.

    The kernel is described by `config`, or by keyword settings, the fields of
    `KernelConfig` (``boot(seed=3, cpus=4, gpu=None)``).  Headless kernels (the
    default) run at maximum speed in virtual time; `console` receives
    everything written to the console (by default it is only kept in
    `kernel.tty.transcript`).  `machine` puts the kernel on a host shared
    with other kernels; by default it gets a machine of its own.
    """
    return Kernel(config, console=console, machine=machine, **settings).boot()
