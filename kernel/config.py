"""Kernel configuration: what a kernel is, and what its boot starts.

A `KernelConfig` is the one description of a kernel that the CLI, the pytest
plugin, `kernel.boot` and (later) the hypervisor's VM configs all build.  It is
frozen and validated at the edge: a bad value is refused here, with a message
naming the field, before any kernel exists.

The `BootPlan` inside it says which servers boot starts, which kernel devices
each is handed, and which program is init.  The kernel itself hard-codes no
server: a host boots the console and the vGPU driver (`BootPlan.standard`), a
guest may boot a different device set, and a kernel without a GPU in its plan
has no vGPU server at all.
"""

from __future__ import annotations

from typing import Any

import attrs

from kernel.log import FORMATS
from kernel.sched import DEFAULT_SLICE_NS

#: The devices a kernel can hand a server, by the cap name the server sees:
#: the terminal, its interrupt notification, the MLaaS core (which the vGPU
#: driver uses to offer the device to kernel-space inference), and a guest's
#: GPU virtqueue (which only a hypervisor gives a kernel).
DEVICES = ("tty", "irq", "mlaas", "gpuq")

#: The vGPU driver's device presets (drivers/vgpu/presets.py; a test keeps the
#: two lists equal, since the kernel does not import drivers).
GPU_PRESETS = ("a100", "h100", "v100")

TRAP_COST_NS = 200  # fixed cost of entering and leaving the kernel
DEFAULT_FRAMES = 2048  # 8 MiB of physical memory
MAX_CPUS = 64
MIN_FRAMES = 4  # the memory manager needs a few frames to evict between
MAX_FRAMES = 1 << 20  # 4 GiB of 4 KiB frames
DEFAULT_TASK_PAGES = 1 << 18  # 1 GiB that one task may map, its page tables included
MAX_TASK_PAGES = 1 << 32
MAX_SLICE_NS = 10_000_000_000
MAX_TRAP_COST_NS = 1_000_000


class ConfigError(ValueError):
    """A configuration value was refused; the message names the field."""


# -- validators: each names the field it refuses -----------------------------


def _int_in(low: int, high: int | None = None):
    def check(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
        _int(instance, attribute, value)  # bool is an int subclass, and is refused too
        if value < low or (high is not None and value > high):
            bound = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise ConfigError(f"{attribute.name} must be {bound}, got {value}")

    return check


def _int(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if type(value) is not int:
        raise ConfigError(f"{attribute.name} must be an integer, got {value!r}")


def _bool(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if type(value) is not bool:
        raise ConfigError(f"{attribute.name} must be True or False, got {value!r}")


def _str(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if type(value) is not str:
        raise ConfigError(f"{attribute.name} must be a string, got {value!r}")


def _name(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    _str(instance, attribute, value)
    if not value or not value.replace("-", "_").isidentifier():
        raise ConfigError(
            f"{attribute.name} must be a name (letters, digits, '-', '_'), got {value!r}"
        )


def _one_of(choices: tuple[str, ...], allow_none: bool = False):
    def check(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
        if value is None and allow_none:
            return
        if value not in choices or type(value) is not str:
            also = " or None" if allow_none else ""
            raise ConfigError(
                f"{attribute.name} must be one of {', '.join(choices)}{also}, got {value!r}"
            )

    return check


def _str_tuple(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if type(value) is not tuple or not all(type(v) is str for v in value):
        raise ConfigError(f"{attribute.name} must be a tuple of strings, got {value!r}")


def _tuple(items: Any) -> Any:
    """Lists become tuples, so a plan read from a manifest stays frozen."""
    return tuple(items) if isinstance(items, list) else items


# -- the boot plan -----------------------------------------------------------


@attrs.frozen
class ServerSpec:
    """One server that boot starts.

    `name` is the cap name under which init (and the shell) hold a send cap
    to the server's endpoint; `program` is its name in the program table;
    `devices` are the kernel devices it is handed (see `DEVICES`).
    """

    name: str = attrs.field(validator=_name)
    program: str = attrs.field(validator=_name)
    args: tuple[str, ...] = attrs.field(default=(), converter=_tuple, validator=_str_tuple)
    devices: tuple[str, ...] = attrs.field(default=(), converter=_tuple, validator=_str_tuple)

    @devices.validator
    def _known_devices(self, attribute: attrs.Attribute, value: tuple[str, ...]) -> None:
        for device in value:
            if device not in DEVICES:
                raise ConfigError(
                    f"devices: server {self.name!r} asks for {device!r}; "
                    f"a kernel has {', '.join(DEVICES)}"
                )


@attrs.frozen
class BootPlan:
    """The servers boot starts, in order, then init with a cap to each."""

    servers: tuple[ServerSpec, ...] = attrs.field(converter=_tuple)
    init: str = attrs.field(default="init", validator=_name)

    @servers.validator
    def _servers(self, attribute: attrs.Attribute, value: Any) -> None:
        if type(value) is not tuple or not all(isinstance(s, ServerSpec) for s in value):
            raise ConfigError(f"servers must be a tuple of ServerSpec, got {value!r}")
        names = [s.name for s in value]
        for name in names:
            if names.count(name) > 1:
                raise ConfigError(f"servers: two servers are named {name!r}")

    @classmethod
    def standard(
        cls, gpu: str | None = "a100", init: str = "init", gpu_args: tuple[str, ...] = ()
    ) -> BootPlan:
        """A host's plan: the console, and the vGPU driver when there is a GPU
        (`gpu_args` follow the preset on the driver's command line)."""
        servers = [ServerSpec("console", "console", devices=("tty", "irq"))]
        if gpu is not None:
            # The driver gets the MLaaS core too: it offers the vGPU to kernel-space inference.
            servers.append(ServerSpec("gpu", "vgpu", args=(gpu, *gpu_args), devices=("mlaas",)))
        return cls(tuple(servers), init)


# -- the kernel configuration ------------------------------------------------

_check_gpu = _one_of(GPU_PRESETS, allow_none=True)


@attrs.frozen
class KernelConfig:
    """Everything that makes one kernel; `Kernel(config)` and `boot(config)` take it.

    `headless` kernels have no person at the console and run at maximum
    speed; `realtime` (by default: not headless) paces virtual time to the
    wall clock.  `plan` defaults to the standard plan for `gpu`.
    """

    seed: int = attrs.field(default=0, validator=_int)
    cpus: int = attrs.field(default=2, validator=_int_in(1, MAX_CPUS))
    frames: int = attrs.field(default=DEFAULT_FRAMES, validator=_int_in(MIN_FRAMES, MAX_FRAMES))
    #: The most pages one task may hold mapped, the page tables that map them
    #: included (kernel/memory.py).  Frames plus swap bound all tasks together.
    task_pages: int = attrs.field(default=DEFAULT_TASK_PAGES, validator=_int_in(1, MAX_TASK_PAGES))
    slice_ns: int = attrs.field(default=DEFAULT_SLICE_NS, validator=_int_in(1_000, MAX_SLICE_NS))
    trap_cost_ns: int = attrs.field(default=TRAP_COST_NS, validator=_int_in(1, MAX_TRAP_COST_NS))
    gpu: str | None = attrs.field(default="a100", validator=_check_gpu)
    log_format: str = attrs.field(default="console", validator=_one_of(FORMATS))
    name: str = attrs.field(default="", validator=_str)
    headless: bool = attrs.field(default=True, validator=_bool)
    realtime: bool = attrs.field(
        default=attrs.Factory(lambda self: not self.headless, takes_self=True), validator=_bool
    )
    plan: BootPlan = attrs.field()

    @plan.default
    def _standard_plan(self) -> BootPlan:
        # attrs runs validators after every default is made: check gpu first,
        # so that a bad preset is reported as gpu's, not as the plan's.
        _check_gpu(self, attrs.fields(KernelConfig).gpu, self.gpu)
        return BootPlan.standard(self.gpu)

    @plan.validator
    def _plan(self, attribute: attrs.Attribute, value: Any) -> None:
        if not isinstance(value, BootPlan):
            raise ConfigError(f"plan must be a BootPlan, got {value!r}")
        if self.gpu is None and any(s.program == "vgpu" for s in value.servers):
            raise ConfigError("plan: it starts the vgpu server, but gpu is None")
