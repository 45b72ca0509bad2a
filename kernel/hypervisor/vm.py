"""Guest VMs: the hypervisor, its VMs and their lifecycle.

A `Hypervisor` is made on a host kernel.  Each VM it creates is a guest
`Kernel` on the host's machine — the same kernel code, with its own tasks,
memory, capabilities, module registry and console — whose vCPUs run only on
the time the credit scheduler (credit.py) grants them.  All guests share the
machine's clock.

Lifecycle: create -> start (boot the guest) -> pause / resume -> destroy
(shut the guest down: its tasks, memory and modules are released).  A guest
whose init dies, or that panics, halts and is marked *crashed*; the host and
the other guests go on.

The host's shell reaches the hypervisor only through the `VmControl` trap:
`Hypervisor.__init__` installs `control` as the host kernel's `vm_control`
hook.  The kernel never imports this package.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable
from typing import Any

import attrs

from kernel.config import MIN_FRAMES, BootPlan, KernelConfig, ServerSpec
from kernel.errors import SyscallError
from kernel.hypervisor import port as ports
from kernel.hypervisor import snapshot as snapshots
from kernel.hypervisor.credit import DEFAULT_WEIGHT, CreditScheduler, Domain, check_weight_cap
from kernel.hypervisor.hypercall import Balloon, Hc, dispatch, read_call
from kernel.hypervisor.journal import Journal, VcpuPort
from kernel.hypervisor.virtqueue import Device, GuestMemory
from kernel.ipc import Notification
from kernel.kernel import Kernel
from kernel.mlaas import loader
from kernel.mlaas.faults import ModuleError
from kernel.programs import ProgramTable

Reply = Callable[..., None]  # reply(value) or reply(exc=error), as the VmControl trap takes it

QUIESCE_POLL_NS = 100_000  # how often a snapshot checks whether its VM is quiet
QUIESCE_LIMIT_NS = 10_000_000_000  # a VM that is not quiet by then is not snapshotted


class VmError(SyscallError):
    """A VM operation was refused: no such VM, a bad setting, the wrong state."""

    errno = "EVM"


class VmState(enum.Enum):
    CREATED = "created"  # made, not booted
    RUNNING = "running"
    PAUSED = "paused"  # its vCPUs get no grants; time goes on for the others
    CRASHED = "crashed"  # its init died or it panicked
    HALTED = "halted"  # powered off from inside
    DESTROYED = "destroyed"


@attrs.frozen
class VmSettings:
    """What a host gives a VM when it makes it, and remembers after it is
    destroyed: a snapshot of the VM restores only within these."""

    config: KernelConfig
    weight: int
    cap: int
    allowed_modules: tuple[str, ...]
    isolated_modules: bool
    gpu_share: int


@attrs.frozen
class VmInfo:
    """One row of `Hypervisor.list()`."""

    name: str
    state: str
    vcpus: int
    weight: int
    cap: int  # percent of one host CPU; 0 = no cap
    cpu_ns: int  # host CPU time its vCPUs have run
    allowed_modules: tuple[str, ...]
    gpu_share: int  # percent of the host's vGPU; 0 = no vGPU


class Vm:
    """A guest: its kernel, its scheduling domain, its console output."""

    def __init__(
        self,
        hv: Hypervisor,
        name: str,
        allowed_modules: tuple[str, ...],
        console: list[str],
        gpu_share: int = 0,
    ) -> None:
        self.hv = hv
        self.name = name
        self.allowed_modules = allowed_modules
        self.gpu_share = gpu_share
        self._console = console  # everything the guest wrote to its console
        self.kernel: Kernel = None  # type: ignore[assignment]  # set by Hypervisor.create
        self.domain: Domain = None  # type: ignore[assignment]
        self.state = VmState.CREATED
        self.crash_reason = ""
        self._waiting: Reply | None = None  # a VmControl caller waiting for the guest's prompt
        # The window of guest memory the host shares, and what the host sees of it.
        self.window = GuestMemory(ports.WINDOW_BYTES)
        self.vcpus: VcpuPort = None  # type: ignore[assignment]
        self.journal: Journal = None  # type: ignore[assignment]
        self.memory: ports.JournaledMemory = None  # type: ignore[assignment]
        self.queues: dict[int, ports.HostQueue] = {}
        self.gpu_queues: frozenset[int] = frozenset()
        self.balloon: Balloon = None  # type: ignore[assignment]
        self.backend_pid = 0  # the host task serving its GPU queue

    # -- what the hypercall dispatcher sees of a VM (hypercall.VmContext) -------------------

    def console_write(self, text: str) -> None:
        self._console.append(text)

    def choose_module(self, name: str) -> str:
        """The absolute path of the module `name`, if the host allows it this VM
        (absolute: what the guest logs of it must not depend on the working directory)."""
        try:
            return os.path.abspath(self.hv.host.mlaas.offer(name, self.allowed_modules))
        except ModuleError as exc:
            raise PermissionError(exc.args[0]) from None

    def hypercall(self, number: int, args: tuple[Any, ...]) -> tuple[int, Any]:
        """The guest kernel's `hypercall` hook: read the call, dispatch it, and
        journal it as read (plain values, or its refusal) with the answer."""
        call = read_call(number, args)
        status, value = dispatch(self, call)
        answer = (int(status), value)
        self.journal.note("hc", call.number, call.args, answer)
        return answer

    @property
    def console_output(self) -> str:
        return "".join(self._console)

    def info(self) -> VmInfo:
        return VmInfo(
            self.name, self.state.value, len(self.kernel.cpus), self.domain.weight,
            self.domain.cap, self.domain.used_ns, self.allowed_modules, self.gpu_share,
        )  # fmt: skip

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, wait: bool = True) -> Vm:
        """Boot the guest.  With `wait`, run the machine (every kernel on it)
        until the guest's shell prompts; without, only start its boot (from
        inside the event loop)."""
        self._expect(VmState.CREATED, "start")
        self.state = VmState.RUNNING
        self.hv.host.log.info("hypervisor", "vm starting", vm=self.name)
        try:
            self._start_backend()
            self.journal.note("boot")
            self.kernel.boot(wait=False)
        except Exception as exc:  # a plan naming a program that cannot start
            self.kernel.halt(f"panic: boot failed: {exc}")  # _halted marks it crashed
            return self
        if wait:
            self.kernel.run_until_prompt()
        self.journal.note("echo", 30)  # as after a host's boot: warnings only
        self.kernel.log.echo_level = 30
        return self

    def pause(self) -> None:
        self._expect(VmState.RUNNING, "pause")
        self.state = VmState.PAUSED
        self.hv.scheduler.set_paused(self.kernel, True)
        self.hv.host.log.info("hypervisor", "vm paused", vm=self.name)

    def resume(self) -> None:
        self._expect(VmState.PAUSED, "resume")
        self.state = VmState.RUNNING
        self.hv.scheduler.set_paused(self.kernel, False)
        self.hv.host.log.info("hypervisor", "vm resumed", vm=self.name)

    def destroy(self) -> None:
        """Shut the guest down and release it: tasks, memory, modules, vCPUs."""
        if self.state is VmState.DESTROYED:
            return
        self.kernel.halt_hooks.remove(self._halted)
        self._stop_backend()
        self.kernel.shutdown()
        self.hv.scheduler.remove(self.kernel)
        self.hv.machine.detach(self.kernel)
        if self.hv.host.tty.attached is self.kernel.tty:
            self.hv.host.tty.detach()
        self.state = VmState.DESTROYED
        self._answer(exc=VmError(f"vm {self.name!r} was destroyed"))
        self.hv.host.log.info("hypervisor", "vm destroyed", vm=self.name)

    # -- snapshots ---------------------------------------------------------------------------

    def snapshot(self, path: str) -> snapshots.SnapshotInfo:
        """Save the VM to `path` (from outside the event loop): pause it, run the
        machine until it is quiet, write the file, and leave it as it was."""
        done: list[Any] = []
        self.snapshot_then(path, lambda value=None, exc=None: done.append((value, exc)))
        deadline = self.hv.machine.now_ns + QUIESCE_LIMIT_NS
        while not done and self.hv.machine.now_ns < deadline:
            self.hv.machine.run(until=self.hv.machine.now_ns + QUIESCE_POLL_NS)
        if not done:
            raise VmError(f"vm {self.name!r} did not quiesce for its snapshot")
        value, exc = done[0]
        if exc is not None:
            raise exc
        return value

    def snapshot_then(self, path: str, reply: Reply) -> None:
        """Start a snapshot from inside the event loop; reply with its
        `SnapshotInfo` when it is written (the VM must be quiet first)."""
        if self.state not in (VmState.RUNNING, VmState.PAUSED):
            raise VmError(f"cannot snapshot vm {self.name!r}: it is {self.state.value}")
        was_running = self.state is VmState.RUNNING
        if was_running:
            self.pause()
        for queue in self.queues.values():
            queue.signal(ports.QUIESCE)
        loop = self.hv.machine.loop

        def check(_arg: Any = None) -> None:
            if self.state is not VmState.PAUSED:  # destroyed or crashed meanwhile
                reply(exc=VmError(f"vm {self.name!r} is {self.state.value}: no snapshot"))
                return
            if not self._quiet():
                loop.call_later(QUIESCE_POLL_NS, check)
                return
            try:
                image = snapshots.image_of(self, was_running)
                size = snapshots.write(path, image)
            except snapshots.SnapshotError as exc:
                reply(exc=VmError(str(exc)))
            else:
                info = snapshots.SnapshotInfo(
                    path, self.name, image["at_ns"], size, len(image["journal"])
                )
                self.hv.host.log.info("hypervisor", "vm snapshot", vm=self.name, path=path,
                                      bytes=size)  # fmt: skip
                reply(info)
            finally:
                if was_running and self.state is VmState.PAUSED:
                    self.resume()

        check()

    def _quiet(self) -> bool:
        """No host CPU grant held, no CPU event pending, nothing outstanding on a queue."""
        guest = self.kernel
        if any(v.kernel is guest for v in self.hv.scheduler.running):
            return False
        if any(cpu.event is not None for cpu in guest.cpus):
            return False
        return all(q.quiet and not q.device.outstanding for q in self.queues.values())

    def _start_backend(self) -> None:
        """Start the host task that serves the guest's GPU queue on the host's
        vGPU driver (by messages to it: the hypervisor imports no driver)."""
        queue = self.queues.get(ports.GPU_QUEUE)
        if queue is None:
            return
        host = self.hv.host
        gpu = host.servers.get("gpu")
        if gpu is None:
            raise VmError(f"vm {self.name!r} has a GPU share, but the host has no vGPU")
        queue.irq = Notification()
        self.backend_pid = host.spawn(
            "vgpu-backend", (self.name, str(self.gpu_share)), name=f"vgpu-backend:{self.name}",
            caps={"gpu": gpu, "queue": queue, "kick": queue.irq},
        )  # fmt: skip

    def _stop_backend(self) -> None:
        host = self.hv.host
        task = host.tasks.get(self.backend_pid)
        if task is not None and not host.halted:
            host.kill(task, f"vm {self.name} is gone", -9)
        self.backend_pid = 0

    def shell(self, line: str) -> str:
        """Type a line into the guest's shell, from outside the event loop;
        return what the commands printed (`Kernel.shell`)."""
        self._expect(VmState.RUNNING, "console")
        return self.kernel.shell(line)

    # -- from inside the loop (the VmControl trap) --------------------------------------------

    def start_then(self, reply: Reply) -> None:
        """Start the guest's boot; reply when its shell first prompts."""
        self.start(wait=False)
        if self.state is not VmState.RUNNING:
            reply(exc=VmError(f"vm {self.name!r} crashed: {self.crash_reason}"))
            return
        self._when_prompted(reply, None, f"{self.name}: started")

    def console_then(self, line: str, reply: Reply, attached: bool = False) -> None:
        """Type `line` into the guest's shell; reply with what it printed once
        the shell prompts again.  (Not on a paused guest: it would never
        answer, and the caller could not resume it.)  A line typed at the
        attached console after which Ctrl-] left it runs unwatched."""
        self._expect(VmState.RUNNING, "console")
        if attached and self.hv.host.tty.attached is not self.kernel.tty:
            self.kernel.tty.feed(line)
            reply("")
            return
        if self._waiting is not None:
            raise VmError(f"vm {self.name!r}: its console is busy")
        capture: list[str] = []
        self._when_prompted(reply, capture)
        self.kernel.tty.feed(line)

    def attach_console(self) -> None:
        """`vm console NAME`: the host's terminal routes Ctrl-C and Ctrl-P to
        this guest until Ctrl-], which also stops waiting for a line typed
        into the guest (what it runs goes on)."""
        self._expect(VmState.RUNNING, "attach to")
        self.hv.host.tty.attach(self.kernel.tty, self._left_console)

    def _left_console(self) -> None:
        capture = self.kernel.tty.capture
        if self._waiting is not None and capture is not None:  # a console line, not a boot
            self._answer("".join(capture))

    def _when_prompted(
        self, reply: Reply, capture: list[str] | None, answer: str | None = None
    ) -> None:
        """Reply when the guest's shell next waits for a line: with `answer`,
        or with what was written to the console meanwhile."""
        tty = self.kernel.tty
        self._waiting = reply
        tty.capture = capture

        def prompted(_prompt: str) -> None:
            self._answer(answer if answer is not None else "".join(capture or ()))

        tty.on_prompt = prompted

    def _answer(self, value: Any = None, exc: SyscallError | None = None) -> None:
        reply, self._waiting = self._waiting, None
        if reply is not None:
            self.kernel.tty.on_prompt = None
            self.kernel.tty.capture = None
            reply(value, exc)

    # -- state -----------------------------------------------------------------------------------

    def _halted(self, kernel: Kernel) -> None:
        """The guest kernel halted (its `halt_hooks`)."""
        if kernel.halt_reason.startswith("panic"):
            self._crashed(kernel.halt_reason)
        elif self.state is not VmState.DESTROYED:
            self.state = VmState.HALTED
            self._answer(exc=VmError(f"vm {self.name!r} halted: {kernel.halt_reason}"))

    def _crashed(self, reason: str) -> None:
        self.state = VmState.CRASHED
        self.crash_reason = reason
        self.hv.host.log.error("hypervisor", "vm crashed", vm=self.name, reason=reason)
        self._answer(exc=VmError(f"vm {self.name!r} crashed: {reason}"))

    def _expect(self, state: VmState, what: str) -> None:
        if self.state is not state:
            raise VmError(f"cannot {what} vm {self.name!r}: it is {self.state.value}")


class Hypervisor:
    """Guest VMs on a host kernel's machine, their vCPUs on `cpus` host CPUs
    (by default as many as the host kernel has)."""

    def __init__(self, host: Kernel, cpus: int | None = None, **scheduler: Any) -> None:
        if host.vm_control is not None:
            raise ValueError(f"kernel {host.name!r} already hosts a hypervisor")
        self.host = host
        self.machine = host.machine
        self.scheduler = CreditScheduler(self.machine, cpus or host.config.cpus, **scheduler)
        self.vms: dict[str, Vm] = {}
        #: What this host gave each VM it made (or restored), by name, kept
        #: after the VM is destroyed: the bounds of a restore (snapshot.py).
        self.settings: dict[str, VmSettings] = {}
        self._seeds = 0
        host.vm_control = self.control
        host.halt_hooks.append(self._host_halted)

    def create(
        self,
        name: str,
        config: KernelConfig | None = None,
        *,
        weight: int = DEFAULT_WEIGHT,
        cap: int = 0,
        allowed_modules: tuple[str, ...] | list[str] = (),
        isolated_modules: bool = False,
        programs: ProgramTable | None = None,
        gpu_share: int = 0,
    ) -> Vm:
        """A new guest VM, not started.  `config` describes its kernel (by
        default 2 vCPUs, no GPU of its own, a seed of its own); its `name`
        becomes the VM's, so every log line of the guest names it.
        `allowed_modules` are the MLaaS modules it may choose;
        `isolated_modules` makes every module it loads run isolated.
        `gpu_share` (percent) gives it a vGPU: a context on the host's vGPU
        with that share, reached through a GPU virtqueue."""
        allowed = self.check_settings(name, weight, cap, allowed_modules, gpu_share)
        self._seeds += 1
        if config is None:
            config = KernelConfig(seed=self.host.seed + self._seeds, gpu=None)
        config = attrs.evolve(
            config, name=name, headless=self.host.config.headless, realtime=self.machine.realtime
        )
        if gpu_share and not any(ports.GPU_DEVICE in s.devices for s in config.plan.servers):
            config = attrs.evolve(config, plan=guest_plan(config.plan))
        console: list[str] = []
        vm = Vm(self, name, allowed, console, gpu_share)
        vm.vcpus = VcpuPort(self.scheduler)
        guest = Kernel(
            config,
            machine=self.machine,
            cpu_provider=vm.vcpus,
            programs=programs if programs is not None else self.host.programs,
            console=console.append,
        )
        vm.kernel = guest
        self._wire(vm, isolated_modules is True)
        vm.domain = self.scheduler.add(guest, name, weight, cap)
        self.vms[name] = vm
        self.settings[name] = VmSettings(
            config, weight, cap, allowed, isolated_modules is True, gpu_share
        )
        self.host.log.info(
            "hypervisor", "vm created", vm=name, vcpus=config.cpus, weight=weight, cap=cap
        )
        return vm

    def check_settings(
        self, name: Any, weight: Any, cap: Any, allowed_modules: Any, gpu_share: Any
    ) -> tuple[str, ...]:
        """Refuse a VM's settings (from `create`, or from a snapshot being
        restored) unless each is a plain value in range; the allowed modules."""
        if type(name) is not str or not name or not name.replace("-", "_").isidentifier():
            raise VmError(f"a vm name is letters, digits, '-', '_', got {name!r}")
        if name in self.vms:
            raise VmError(f"there is already a vm named {name!r}")
        try:
            check_weight_cap(weight, cap, self.scheduler.cpus)
        except ValueError as exc:
            raise VmError(str(exc)) from None
        if not isinstance(allowed_modules, (list, tuple)):
            raise VmError(f"allowed_modules must be module names, got {allowed_modules!r}")
        allowed = tuple(allowed_modules)
        if not all(type(m) is str and loader.NAME_RE.fullmatch(m) for m in allowed):
            # names only: a path would let a guest load a file by naming it
            raise VmError(f"allowed_modules must be module names, got {allowed_modules!r}")
        for module in allowed:
            try:
                loader.resolve(module, self.host.mlaas.search_path)
            except ModuleError as exc:
                raise VmError(f"allowed_modules: {exc.args[0]}") from None
        if type(gpu_share) is not int or not 0 <= gpu_share <= 100:
            raise VmError(f"gpu_share is a percent of the vGPU, 0 to 100, got {gpu_share!r}")
        return allowed

    def _wire(self, vm: Vm, isolated_modules: bool, queue_idx: int = 0) -> None:
        """Connect a guest kernel to its VM: journal, hypercalls, devices, modules."""
        guest = vm.kernel
        wire_guest(guest, vm.window, vm.gpu_share > 0, isolated_modules)
        guest.halt_hooks.append(vm._halted)
        if vm.journal is None:
            vm.journal = Journal(guest, vm.vcpus)
        guest.journal = vm.journal.note
        guest.hypercall = vm.hypercall
        vm.memory = ports.JournaledMemory(vm.window, vm.journal.note)
        vm.balloon = Balloon(total_pages=guest.config.frames, min_pages=MIN_FRAMES)
        if vm.gpu_share:
            device = Device(
                vm.memory, ports.GPU_LAYOUT, _no_handler,
                lambda: guest.device_interrupt(ports.GPU_DEVICE, 1), queue_idx,
            )  # fmt: skip
            vm.queues[ports.GPU_QUEUE] = ports.HostQueue(self.host, ports.GPU_QUEUE, device)
            vm.gpu_queues = frozenset({ports.GPU_QUEUE})

    # -- snapshots (snapshot.py) -----------------------------------------------------------------

    def restore(self, path: str, key_file: str | None = None) -> Vm:
        """Bring back the VM saved in the snapshot at `path` (from outside the
        event loop); it continues exactly where it was taken.  `key_file`
        names another host's snapshot key: its snapshots restore here too."""
        vm = snapshots.restore(self, snapshots.read(path, key_file), path)
        vm.kernel.log.echo_level = 30
        self.host.log.info("hypervisor", "vm restored", vm=vm.name, path=path)
        return vm

    def get(self, name: str) -> Vm:
        vm = self.vms.get(name)
        if vm is None:
            known = ", ".join(self.vms) or "none"
            raise VmError(f"no vm named {name!r} (vms: {known})")
        return vm

    def list(self) -> list[VmInfo]:
        return [vm.info() for vm in self.vms.values()]

    def destroy(self, name: str) -> None:
        self.get(name).destroy()
        del self.vms[name]

    def _host_halted(self, host: Kernel) -> None:
        """The host powered off or panicked: its guests go down with it."""
        for vm in self.vms.values():
            if not vm.kernel.halted:
                vm.kernel.halt(f"host halted: {host.halt_reason}")

    def shutdown(self) -> None:
        """Destroy every VM (the host is shutting down)."""
        for name in list(self.vms):
            self.destroy(name)

    # -- the VmControl trap's hook --------------------------------------------------------------

    def control(self, op: str, args: tuple[Any, ...], reply: Reply) -> None:
        """Do `op` for the host's shell; answer through `reply`, now or (start,
        console) when the guest's shell prompts."""
        try:
            handler = _OPS.get(op)
            if handler is None:
                raise VmError(f"unknown vm operation {op!r}; known: {', '.join(_OPS)}")
            handler(self, args, reply)
        except VmError as exc:
            reply(exc=exc)
        except (ValueError, TypeError) as exc:  # a refused config value
            reply(exc=VmError(str(exc)))

    def _op_list(self, args: tuple[Any, ...], reply: Reply) -> None:
        reply(tuple(attrs.asdict(info) for info in self.list()))

    def _op_create(self, args: tuple[Any, ...], reply: Reply) -> None:
        name, settings = _name_and_settings(args, ("cpus", "weight", "cap", "gpu"))
        config = KernelConfig(
            seed=self.host.seed + self._seeds + 1, gpu=None, cpus=settings.get("cpus", 2)
        )
        vm = self.create(
            name,
            config,
            weight=settings.get("weight", DEFAULT_WEIGHT),
            cap=settings.get("cap", 0),
            gpu_share=settings.get("gpu", 0),
        )
        reply(attrs.asdict(vm.info()))

    def _op_start(self, args: tuple[Any, ...], reply: Reply) -> None:
        self._vm_of(args).start_then(reply)

    def _op_stop(self, args: tuple[Any, ...], reply: Reply) -> None:
        vm = self._vm_of(args)
        self.destroy(vm.name)
        reply(f"{vm.name}: stopped")

    def _op_pause(self, args: tuple[Any, ...], reply: Reply) -> None:
        self._vm_of(args).pause()
        reply(f"{args[0]}: paused")

    def _op_resume(self, args: tuple[Any, ...], reply: Reply) -> None:
        self._vm_of(args).resume()
        reply(f"{args[0]}: resumed")

    def _op_console(self, args: tuple[Any, ...], reply: Reply) -> None:
        if (
            len(args) not in (2, 3)
            or type(args[1]) is not str
            or not args[1].strip()
            or args[2:] not in ((), ("attached",))
        ):
            raise VmError("console takes a vm name and a command line (and 'attached')")
        self._vm_of(args[:1]).console_then(args[1], reply, attached=len(args) == 3)

    def _op_attach(self, args: tuple[Any, ...], reply: Reply) -> None:
        vm = self._vm_of(args)
        vm.attach_console()
        reply(vm.name)

    def _op_detach(self, args: tuple[Any, ...], reply: Reply) -> None:
        self.host.tty.detach()
        reply(None)

    def _op_snapshot(self, args: tuple[Any, ...], reply: Reply) -> None:
        if len(args) != 2 or not all(type(a) is str and a for a in args):
            raise VmError("snapshot takes a vm name and a file")

        def written(info: Any = None, exc: SyscallError | None = None) -> None:
            if exc is not None:
                reply(exc=exc)
            else:
                reply(
                    f"{info.vm}: saved to {info.path} ({info.bytes} bytes, "
                    f"{info.inputs} inputs, at {info.at_ns / 1e9:.6f} s)"
                )

        self.get(args[0]).snapshot_then(args[1], written)

    def _op_restore(self, args: tuple[Any, ...], reply: Reply) -> None:
        if not 1 <= len(args) <= 2 or not all(type(a) is str and a for a in args):
            raise VmError("restore takes a snapshot file, and another host's key file")
        try:
            vm = self.restore(args[0], args[1] if len(args) == 2 else None)
        except snapshots.SnapshotError as exc:
            raise VmError(str(exc)) from None
        reply(f"{vm.name}: restored from {args[0]} ({vm.state.value})")

    def _vm_of(self, args: tuple[Any, ...]) -> Vm:
        if len(args) != 1 or type(args[0]) is not str:
            raise VmError(f"expected one vm name, got {args!r}")
        return self.get(args[0])


def wire_guest(guest: Kernel, window: GuestMemory, gpu: bool, isolated_modules: bool) -> None:
    """What a guest kernel has from its hypervisor, live or replayed: its
    devices, a log naming it, modules asked of the host by hypercall (the
    host offers only those it allows this guest: `Mlaas.offer`)."""
    guest.log.name_in_lines = True
    attach_devices(guest, window, gpu)
    guest.mlaas.host_choice = host_choice(guest)
    guest.mlaas.require_isolation = isolated_modules


def adopt(
    hv: Hypervisor, image: dict[str, Any], replay: Any, entries: list[Any], given: VmSettings
) -> Vm:
    """Make a VM of a replayed guest kernel (snapshot.restore), with the
    settings this host `given` it: move it onto the host's machine, and give
    back what the host held for it (checked by snapshot.restore)."""
    meta = image["vm"]
    guest: Kernel = replay.kernel
    vm = Vm(hv, meta["name"], given.allowed_modules, replay.console, given.gpu_share)
    vm.kernel, vm.window = guest, replay.window
    hv.machine.adopt(guest, [seq for _time, seq in image["pending"]])
    vm.vcpus = VcpuPort(hv.scheduler)
    vm.vcpus.calls = image["calls"]
    guest.cpu_provider = vm.vcpus
    vm.journal = Journal(guest, vm.vcpus)
    vm.journal.entries = list(entries)
    queues = image["queues"]
    idx = queues.get(str(ports.GPU_QUEUE), {}).get("idx", 0)
    hv._wire(vm, given.isolated_modules, idx)
    for number, queue in vm.queues.items():
        queue.state = dict(queues[str(number)]["state"])
    vm.balloon.given_pages = image["balloon_given"]
    domain = hv.scheduler.add(guest, vm.name, given.weight, given.cap)
    plain = image["domain"]
    domain.credit_ns, domain.used_ns, domain.active = (
        plain["credit_ns"], plain["used_ns"], plain["active"] is True,
    )  # fmt: skip
    domain.paused = True
    for index, cpu_id in plain["waiting"]:
        hv.scheduler.waiting.insert(index, guest.cpus[cpu_id])
    vm.domain = domain
    vm.state = VmState.PAUSED
    hv.vms[vm.name] = vm
    hv.settings[vm.name] = given
    vm._start_backend()
    if meta["was_running"]:
        vm.resume()
    return vm


def guest_plan(plan: BootPlan) -> BootPlan:
    """`plan` with the guest's GPU driver, which reaches the host's vGPU
    through the GPU queue, as its `gpu` server."""
    servers = [s for s in plan.servers if s.name != "gpu"]
    servers.append(ServerSpec("gpu", "vgpu-front", devices=(ports.GPU_DEVICE,)))
    return attrs.evolve(plan, servers=tuple(servers))


def attach_devices(guest: Kernel, window: GuestMemory, gpu: bool) -> None:
    """The devices a guest kernel's plan may hand its servers (the same on a
    replayed guest as on the live one)."""
    if gpu and ports.GPU_DEVICE not in guest.devices:  # (a restored guest keeps its own)
        guest.devices[ports.GPU_DEVICE] = ports.GuestQueue(
            ports.GPU_QUEUE, window, ports.GPU_LAYOUT, ports.GPU_BUFFERS, Notification()
        )


def host_choice(guest: Kernel) -> Callable[[str], str]:
    """A guest's `Mlaas.host_choice`: the policy hypercall."""

    def choose(name: str) -> str:
        assert guest.hypercall is not None
        status, value = guest.hypercall(Hc.POLICY_CHOOSE, (name,))
        if status:
            raise ModuleError(str(value))
        return str(value)

    return choose


def _no_handler(request: Any) -> bytes:
    raise RuntimeError("a GPU queue is served by its back end, not at the kick")


_OPS: dict[str, Callable[[Hypervisor, tuple[Any, ...], Reply], None]] = {
    "list": Hypervisor._op_list,
    "create": Hypervisor._op_create,
    "start": Hypervisor._op_start,
    "stop": Hypervisor._op_stop,
    "pause": Hypervisor._op_pause,
    "resume": Hypervisor._op_resume,
    "console": Hypervisor._op_console,
    "attach": Hypervisor._op_attach,
    "detach": Hypervisor._op_detach,
    "snapshot": Hypervisor._op_snapshot,
    "restore": Hypervisor._op_restore,
}


def _name_and_settings(args: tuple[Any, ...], keys: tuple[str, ...]) -> tuple[str, dict[str, int]]:
    """`(NAME, "key=N", ...)` -> the name and the integer settings."""
    if not args or type(args[0]) is not str:
        raise VmError("create takes a vm name, then key=value settings")
    settings: dict[str, int] = {}
    for word in args[1:]:
        key, eq, value = str(word).partition("=")
        if not eq or key not in keys:
            raise VmError(f"settings are {', '.join(k + '=N' for k in keys)}, got {word!r}")
        try:
            settings[key] = int(value)
        except ValueError:
            raise VmError(f"{key} must be an integer, got {value!r}") from None
    return args[0], settings
