"""The malvos microkernel: traps, IPC, capabilities, scheduling and the clock.

Design principles, in the spirit of curio's kernel:

* Keep the kernel small.  It handles traps, IPC, capabilities, CPU
  scheduling and time.  Everything else — the console, the GPU driver,
  policy modules, the shell — is a task that talks to it by message.
* Tasks ask for service only by yielding trap objects.  The handlers are
  gathered in one visible table (`syscall.TRAP_TABLE`).
* Time is virtual.  A CPU runs its task trap by trap and charges each trap a
  fixed cost (and `Compute` its duration).  It keeps going without touching
  the event heap until the next pending event is due, so an IPC ping-pong
  between two tasks never leaves this file's inner loop.
* A task can never hurt the kernel.  A bad trap raises an error inside the
  task; a task that dies releases its caps, memory and waiters; advisors that
  misbehave are reported and bypassed.
* Several kernels can share one event loop (the hypervisor's guests do).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from kernel.caps import Capability, Rights
from kernel.config import KernelConfig, ServerSpec
from kernel.cpu import Cpu, CpuProvider
from kernel.errors import InvalidArgument, PeerDied, SyscallError, UnknownTrap
from kernel.ipc import Endpoint, Notification
from kernel.log import KernelLog
from kernel.machine import Machine
from kernel.memory import MemoryManager
from kernel.mlaas.core import Mlaas
from kernel.programs import DEFAULT_PROGRAMS, ProgramTable
from kernel.sched import Scheduler
from kernel.syscall import BLOCK, TRAP_TABLE
from kernel.task import Proc, State, Task
from kernel.traps import Message, Received
from kernel.tty import Tty

VERSION = "0.1.0"
BANNER = f"malvos {VERSION} - a message-passing microkernel with a virtual GPU"

CTX_SWITCH_NS = 1_000  # cost of switching a CPU to another task


class KernelHalted(RuntimeError):
    """The kernel has powered off or panicked."""


class Kernel:
    """One kernel: its CPUs, tasks, memory, capabilities, MLaaS registry and console.

    Made from a `KernelConfig` (or its fields as keywords), on a `Machine` of its own unless
    given one; `boot()` starts the boot plan's servers and init and runs to the shell prompt
    (`kernel.boot` does both).  A kernel is a context manager that shuts it down at the end.
    """

    def __init__(
        self,
        config: KernelConfig | None = None,
        *,
        machine: Machine | None = None,
        cpu_provider: CpuProvider | None = None,
        programs: ProgramTable | None = None,
        console: Callable[[str], None] | None = None,
        **settings: Any,
    ) -> None:
        """A kernel described by `config`, or by keyword settings, the fields
        of `KernelConfig` (``Kernel(cpus=1, frames=64)``), not both.

        `machine` is the host it runs on, with other kernels (by default a
        machine of its own); `programs` is the program table; `console`
        receives everything written to the console.  A kernel given a
        `cpu_provider` has virtual CPUs that run only on the time it grants
        (kernel/cpu.py); without one they run on bare metal.
        """
        if config is None:
            config = KernelConfig(**settings)
        elif settings:
            raise TypeError(f"give a KernelConfig or settings, not both: {sorted(settings)}")
        self.config = config
        self.seed = config.seed
        self.rng = random.Random(config.seed)
        self.name = config.name
        self.machine = machine if machine is not None else Machine(realtime=config.realtime)
        self.loop = self.machine.loop
        self.threaded = False  # the loop runs on another thread than the host side
        self.log = KernelLog(lambda: self.loop.now_ns, config.log_format, kernel_name=config.name)
        self.programs = programs if programs is not None else DEFAULT_PROGRAMS
        self.sched = Scheduler(config.cpus, config.slice_ns)
        self.mm = MemoryManager(config.frames)
        self.cpu_provider = cpu_provider
        self.cpus = [Cpu(c, self, granted=cpu_provider is None) for c in range(config.cpus)]
        self.tasks: dict[int, Task] = {}
        self.exit_codes: dict[int, int] = {}  # exited, not yet waited for
        self.trap_cost_ns = config.trap_cost_ns
        self.ctx_switch_ns = CTX_SWITCH_NS
        self.boot_ns = self.loop.now_ns
        self.halted = False
        self.halt_reason = ""
        self.init_pid = 0
        self._next_pid = 1
        self.tty = Tty(self, console)
        self.tty.irq = Notification()
        self.mlaas = Mlaas(self)  # advisor modules: kernel/mlaas
        # The devices boot may hand a server, by the cap name it sees (config.DEVICES).
        self.devices: dict[str, Any] = {"tty": self.tty, "irq": self.tty.irq, "mlaas": self.mlaas}
        #: The hook behind the `VmControl` trap, set by a hypervisor hosted on
        #: this kernel (the kernel does not import it): ``vm_control(op, args,
        #: reply)`` answers by calling ``reply(value)`` or ``reply(exc=error)``,
        #: at once or later.  None: this kernel hosts no VMs.
        self.vm_control: Callable[..., None] | None = None
        #: Called with this kernel when it halts (a hypervisor marks a guest
        #: that panicked as crashed).  A hook that raises is logged and dropped.
        self.halt_hooks: list[Callable[[Kernel], None]] = []
        #: The hook behind the `Hypercall` trap, set by the hypervisor of a guest
        #: kernel: ``hypercall(number, args) -> (status, value)``.  None: not a guest.
        self.hypercall: Callable[[int, tuple[Any, ...]], Any] | None = None
        #: Told of every input from outside the kernel, before it takes effect:
        #: ``journal(kind, *data)`` for a CPU grant, a console line or signal, a
        #: device interrupt.  A hypervisor journals its guests' inputs to replay
        #: them (kernel/hypervisor/snapshot.py).  None: nobody listens.
        self.journal: Callable[..., None] | None = None
        #: How far this kernel has run: one per step of a CPU and per event of
        #: its own.  With virtual time it places an input exactly in the run.
        self.ticks = 0
        self._granted = 0  # vCPUs holding a grant now
        self._online_ns = 0  # virtual time at least one did, before `_online_since`
        self._online_since = 0
        #: The boot plan's servers' endpoints, by name (a hypervisor hands a
        #: guest's GPU back end the host's `gpu`).
        self.servers: dict[str, Capability] = {}
        #: The syscall table `_step` reads; a trace puts a traced copy here.
        self.trap_table: dict[type, Callable[..., Any]] = TRAP_TABLE
        #: The last trace (kernel/trace.py): started and stopped by the `Trace`
        #: trap, it shadows `_step`, `wake`, `handoff` and `trap_table` while
        #: it records.  None: never traced.
        self.tracer: Any = None
        self.machine.attach(self)

    # ===================================================================
    # Boot and the public API
    # ===================================================================

    def boot(self, wait: bool = True) -> Kernel:
        """Start the servers of the boot plan, in order, then init with a send
        cap to each server's endpoint; run until the shell prompts (unless
        `wait` is False: then the tasks start and the caller runs the loop,
        as a hypervisor does when it boots a guest from inside the loop)."""
        plan = self.config.plan
        self.tty.write_prompt(BANNER + "\n")
        self.log.echo = self.tty.write_prompt
        self.log.info(
            "kernel", "booting", version=VERSION, cpus=len(self.cpus), seed=self.seed,
            memory_kib=self.mm.nframes * 4, realtime=self.config.realtime,
        )  # fmt: skip
        self.servers = {server.name: self._start_server(server) for server in plan.servers}
        self.init_pid = self.spawn(plan.init, caps=self.server_caps())
        if wait and not self.threaded:
            self.run_until_prompt()
            self.log.echo_level = 30  # after boot the console shows warnings only
        return self

    def server_caps(self) -> dict[str, Capability]:
        """A send cap to each server of the boot plan, by name: init's caps."""
        return {n: ep.derive(Rights.WRITE | Rights.GRANT) for n, ep in self.servers.items()}

    def _start_server(self, server: ServerSpec) -> Capability:
        """Spawn a server owning a new endpoint and the devices the plan hands
        it; returns its endpoint cap."""
        missing = [d for d in server.devices if d not in self.devices]
        if missing:
            raise InvalidArgument(
                f"server {server.name!r} needs the device {missing[0]!r}, which this kernel "
                "does not have (gpuq is a guest's, given by its hypervisor)"
            )
        devices = {device: self.devices[device] for device in server.devices}
        pid = self.spawn(server.program, server.args, caps={"endpoint": Endpoint(), **devices})
        task = self.tasks[pid]
        return task.cspace.lookup(task.proc.caps["endpoint"])  # type: ignore[union-attr]

    def spawn(
        self,
        program: Any,
        args: tuple[str, ...] | list[str] = (),
        *,
        caps: dict[str, Any] | None = None,
        name: str | None = None,
        parent: int = 0,
    ) -> int:
        """Start a program (a name in the program table, or a generator
        function taking a `Proc`) as a task; returns its pid.

        `caps` maps names to a `Capability` (the child gets a derived copy) or
        to a kernel object (the child gets the original cap, all rights).
        Without `caps`, a program started from outside the kernel (no
        `parent`) gets what init gets: a send cap to each server of the boot
        plan (`console`, `gpu`, ...), as a program run from the shell does.
        """
        if self.halted:
            raise KernelHalted(self.halt_reason)
        if isinstance(program, str):
            try:
                fn = self.programs.lookup(program)
            except KeyError:
                raise InvalidArgument(f"no program named {program!r}") from None
            name = name or program
        elif callable(program):
            fn = program
            name = name or str(getattr(program, "__name__", "task"))
        else:
            raise InvalidArgument(f"a program is a name or a generator function, not {program!r}")
        args = tuple(str(a) for a in args)
        if caps is None and parent == 0:
            caps = self.server_caps()
        pid = self._next_pid
        task = Task(self, pid, name, None, parent, self.loop.now_ns)  # type: ignore[arg-type]
        slots: dict[str, int] = {}
        for cap_name, value in (caps or {}).items():
            cap = value.derive() if isinstance(value, Capability) else Capability(value, Rights.ALL)
            slots[cap_name] = task.cspace.insert(cap)
        task.proc = Proc(pid, name, args, slots, self.rng.getrandbits(32))
        try:
            gen = fn(task.proc)
        except Exception as exc:
            task.cspace.clear()
            raise InvalidArgument(f"program {name!r} failed to start: {exc!r}") from None
        if not hasattr(gen, "send") or not hasattr(gen, "throw"):
            task.cspace.clear()
            raise InvalidArgument(f"program {name!r} is not a generator function")
        task.gen = gen
        self._next_pid += 1
        self.tasks[pid] = task
        if parent == 0 and self.init_pid and self.journal is not None:
            # Started from outside the kernel (not by a task, not by boot): an
            # input the journal cannot replay, since a program object is no value.
            self.journal("spawn", name)
        self.log.info("task", "spawned", task=name, pid=pid, parent=parent)
        self.sched.enqueue(task)
        if self.mlaas.task_hooks:
            self.mlaas.notify_spawn(task)
        self._kick()
        return pid

    def run(self, until: int | None = None) -> None:
        """Run a kernel alone on its machine until virtual time `until` (ns),
        until it halts, or until nothing is left to do.  Kernels that share a
        machine share its time: run them with `machine.run`."""
        if self.halted:
            raise KernelHalted(self.halt_reason)
        if len(self.machine.kernels) > 1:
            raise RuntimeError(
                f"kernel {self.name!r} shares its machine with other kernels: "
                "run them together with machine.run()"
            )
        self.machine.run(until)

    def run_until_prompt(self, limit_ns: int = 60_000_000_000) -> bool:
        """Run until a reader waits on the console with no input queued.
        Returns False if `limit_ns` of virtual time passed first."""
        deadline = self.loop.now_ns + limit_ns
        self.tty.on_prompt = lambda _prompt: self.loop.stop()
        try:
            while not self.halted:
                if self.tty.waiting_prompt is not None and not self.tty.lines:
                    return True
                before = self.loop.now_ns
                self.loop.run(until_ns=deadline)
                if self.loop.now_ns >= deadline or (
                    self.loop.next_time() is None and before == self.loop.now_ns
                ):
                    return self.tty.waiting_prompt is not None
            return False
        finally:
            self.tty.on_prompt = None

    def shell(self, line: str, limit_ns: int = 60_000_000_000) -> str:
        """Type one line into the shell and return what the commands printed."""
        if self.halted:
            raise KernelHalted(self.halt_reason)
        capture: list[str] = []
        self.tty.capture = capture
        try:
            self.tty.feed(line)
            if not self.run_until_prompt(limit_ns) and not self.halted:
                raise TimeoutError(
                    f"the shell did not prompt again within {limit_ns / 1e9:g} s: {''.join(capture)!r}"
                )
        finally:
            self.tty.capture = None
        return "".join(capture)

    def shutdown(self) -> None:
        """Stop every task and release the kernel's resources.  Idempotent."""
        if not self.halted:
            self.halt("shutdown")
        self.mlaas.shutdown()
        for task in list(self.tasks.values()):
            self._release(task, -9)
        self.mm.close()

    def __enter__(self) -> Kernel:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()

    def halt(self, reason: str) -> None:
        """Stop the kernel (a poweroff or a panic, named by `reason`): its CPUs run no more,
        its halt hooks run, and its machine is told.  Idempotent."""
        if self.halted:
            return
        self.log.info("kernel", "halted", reason=reason)
        self.halted = True
        self.halt_reason = reason
        for cpu in self.cpus:
            if cpu.event is not None:
                cpu.event.cancel()
                cpu.event = None
            if self.cpu_provider is not None and (cpu.requested or cpu.grant_end):
                if cpu.grant_end:
                    self._granted_cpus(-1)
                cpu.requested = False
                cpu.grant_end = 0
                self.cpu_provider.release(cpu)
        for hook in list(self.halt_hooks):
            try:
                hook(self)
            except Exception as exc:
                self.halt_hooks.remove(hook)
                self.log.error("kernel", "halt hook failed", error=repr(exc))
        self.machine.kernel_halted(self)

    def _granted_cpus(self, change: int) -> None:
        """Count the vCPUs holding a grant, and the time at least one did."""
        now = self.loop.now_ns
        if self._granted == 0:
            self._online_since = now
        self._granted += change
        if self._granted == 0:
            self._online_ns += now - self._online_since

    def online_ns(self) -> int:
        """Virtual time this kernel could run: all of it on bare metal; for a
        guest, the time at least one of its vCPUs held a host CPU.  Time a
        guest waited for its host (steal time) does not count, so its
        watchdogs do not take the host's delays for its own."""
        if self.cpu_provider is None:
            return self.loop.now_ns
        if self._granted:
            return self._online_ns + self.loop.now_ns - self._online_since
        return self._online_ns

    @property
    def uptime_ns(self) -> int:
        """Virtual time since boot, in ns."""
        return self.loop.now_ns - self.boot_ns

    def proclist(self) -> tuple[tuple, ...]:
        """(pid, ppid, state, cpu_ns, resident_pages, name) for every live task."""
        return tuple(
            (
                t.pid,
                t.parent,
                t.state.name.lower(),
                t.cpu_ns,
                t.aspace.resident if t.aspace else 0,
                t.name,
            )
            for t in sorted(self.tasks.values(), key=lambda t: t.pid)
        )

    def cpuinfo(self) -> tuple[tuple[int, int, int], ...]:
        """(cpu, busy_ns since boot, pid running or 0) for every CPU."""
        now = self.loop.now_ns
        return tuple(
            (c.id, c.busy_ns(now, self.boot_ns), c.current.pid if c.current else 0)
            for c in self.cpus
        )

    def procdump(self) -> str:
        """The process list, as xv6's Ctrl-P prints it."""
        lines = ["", f"{'PID':>5} {'STATE':<9} {'CPU(ms)':>9}  NAME"]
        for pid, _ppid, state, cpu_ns, _rss, name in self.proclist():
            lines.append(f"{pid:>5} {state:<9} {cpu_ns / 1e6:>9.3f}  {name}")
        return "\n".join(lines) + "\n"

    # ===================================================================
    # The CPUs: this loop runs tasks, trap by trap
    # ===================================================================

    def _kick(self) -> None:
        """Wake one idle CPU, if any, to look for work.  A vCPU first asks
        its provider for a grant."""
        for cpu in self.cpus:
            if cpu.current is None and cpu.event is None and not cpu.active and not cpu.requested:
                cpu.wakes(self.loop.now_ns)
                if self.cpu_provider is None:
                    cpu.event = self.loop.call_at(self.loop.now_ns, self._cpu_run, cpu)
                else:
                    cpu.requested = True
                    self.cpu_provider.request(cpu)
                return

    def cpu_granted(self, cpu: Cpu, until_ns: int) -> None:
        """A provider granted `cpu` a host CPU until `until_ns` (`Cpu.grant`)."""
        if self.journal is not None:
            self.journal("grant", cpu.id, until_ns)
        cpu.requested = False
        if self.halted:
            self.cpu_provider.release(cpu)  # type: ignore[union-attr]
            return
        if not cpu.grant_end:
            self._granted_cpus(+1)
        cpu.grant_end = until_ns
        if cpu.event is None:  # (if it is running, it is giving back its last grant)
            cpu.event = self.loop.call_at(self.loop.now_ns, self._cpu_run, cpu)

    def _give_back(self, cpu: Cpu) -> None:
        """A vCPU stops running: its host CPU goes back to the provider, and it
        asks again if it still has work."""
        if cpu.grant_end:
            self._granted_cpus(-1)
        cpu.grant_end = 0
        provider = self.cpu_provider
        provider.release(cpu)  # type: ignore[union-attr]
        if not self.halted and (cpu.current is not None or self.sched.has_waiting(cpu.id)):
            cpu.requested = True
            provider.request(cpu)  # type: ignore[union-attr]

    def _cpu_run(self, cpu: Cpu) -> None:
        cpu.event = None
        cpu.active = True
        try:
            self._cpu_loop(cpu)
        finally:
            cpu.active = False

    def _cpu_loop(self, cpu: Cpu) -> None:
        loop = self.loop
        sched = self.sched
        seen = -1  # the heap's change counter when `nxt` was read
        nxt: int | None = None
        grant_end = cpu.grant_end  # bare metal: NO_LIMIT_NS
        while not self.halted:
            now = loop.now_ns
            if now >= grant_end:
                self._give_back(cpu)
                return  # the vCPU waits for its next grant
            task = cpu.current
            if task is None:
                task = sched.pick_next(cpu.id)
                if task is None:
                    cpu.idle_since = now
                    if self.cpu_provider is not None:
                        self._give_back(cpu)
                    return  # idle until _kick
                task.state = State.RUNNING
                task.cpu = cpu.id
                cpu.current = task
                cpu.slice_end = now + sched.time_slice(task)
                cpu.switches += 1
                cost = self.ctx_switch_ns
            elif now >= cpu.slice_end:
                if sched.has_waiting(cpu.id):
                    cpu.current = None  # round robin: back of the queue
                    sched.enqueue(task)
                    continue
                cpu.slice_end = now + sched.time_slice(task)
                continue
            elif task.compute_left_ns:
                cost = min(task.compute_left_ns, cpu.slice_end - now, grant_end - now)
                task.compute_left_ns -= cost
            else:
                cost = self._step(task)
            task.cpu_ns += cost
            self.ticks += 1
            end = now + cost
            if loop.changes != seen:  # re-read the heap only when it changed
                seen = loop.changes
                nxt = loop.next_time()
            # `<=`: an event due exactly at `end` runs before this CPU's next
            # step, whether or not some other kernel's event made the CPU
            # stop earlier, so a guest runs the same with or without
            # neighbours (what replaying a snapshot relies on).
            if (
                loop.stopping
                or (nxt is not None and nxt <= end)
                or (loop.until_ns is not None and end > loop.until_ns)
                or (loop.paced and end > loop.wall_virtual_ns())
            ):
                # Someone else is due first, or (realtime) the wall clock is
                # behind: continue this CPU as an event.
                cpu.event = loop.call_at(end, self._cpu_run, cpu)
                return
            loop.advance_to(end)

    def _step(self, task: Task) -> int:
        """Run a task up to its next trap and handle the trap.  Returns its cost."""
        task.traps += 1
        try:
            if task.resume_exc is not None:
                exc, task.resume_exc = task.resume_exc, None
                trap = task.gen.throw(exc)
            else:
                value, task.resume_value = task.resume_value, None
                trap = task.gen.send(value)
        except StopIteration as stop:
            self.exit(task, stop.value if isinstance(stop.value, int) else 0)
            return self.trap_cost_ns
        except SyscallError as exc:
            self.kill(task, f"unhandled error: {exc}", -1, level="error")
            return self.trap_cost_ns
        except Exception as exc:
            self.kill(task, f"crashed: {exc!r}", -1, level="error")
            return self.trap_cost_ns
        handler = self.trap_table.get(type(trap))
        if handler is None:
            task.resume_exc = UnknownTrap(f"{trap!r} is not a trap")
            return self.trap_cost_ns
        try:
            result = handler(self, task, trap)
        except SyscallError as exc:
            task.resume_exc = exc
        else:
            if result is not BLOCK:
                task.resume_value = result
        return self.trap_cost_ns

    # ===================================================================
    # Blocking and waking (used by the trap handlers)
    # ===================================================================

    def block(self, task: Task, state: State, on: Any) -> None:
        task.state = state
        task.blocked_on = on
        if task.cpu >= 0:
            cpu = self.cpus[task.cpu]
            if cpu.current is task:
                cpu.current = None

    def wake(self, task: Task, value: Any = None, exc: BaseException | None = None) -> None:
        if not task.alive:
            return
        if task.timer is not None:
            task.timer.cancel()
            task.timer = None
        task.blocked_on = None
        task.resume_value = value
        task.resume_exc = exc
        self.sched.enqueue(task)
        self._kick()

    def handoff(self, blocked: Task, target: Task, value: Any) -> None:
        """seL4's fastpath: `blocked` just blocked on its CPU, and `target`
        runs there at once, on the rest of the time slice."""
        cpu = self.cpus[blocked.cpu]
        if cpu.current is not None or not target.alive:
            self.wake(target, value)
            return
        target.blocked_on = None
        target.resume_value = value
        target.resume_exc = None
        target.state = State.RUNNING
        target.cpu = cpu.id
        cpu.current = target

    def preempt(self, task: Task) -> None:
        """Yield: give up the CPU, back of the run queue."""
        if task.cpu >= 0 and self.cpus[task.cpu].current is task:
            self.cpus[task.cpu].current = None
        self.sched.enqueue(task)

    def sleep(self, task: Task, delay_ns: int, value: Any) -> None:
        self.block(task, State.SLEEP, None)
        task.timer = self.loop.call_later(delay_ns, self._timer_fired, (task, value), owner=self)

    def _timer_fired(self, arg: tuple[Task, Any]) -> None:
        task, value = arg
        task.timer = None
        if task.alive and task.state is State.SLEEP and not self.halted:
            self.wake(task, value)

    def signal(self, ntfn: Notification, badge: int) -> None:
        bound = ntfn.bound
        if bound is not None and bound.alive and bound.state is State.RECV:
            bound.blocked_on.receivers.remove(bound)
            self.wake(bound, Received(Message("notification"), badge | ntfn.word))
            ntfn.word = 0
        elif ntfn.waiters:
            self.wake(ntfn.waiters.popleft(), badge | ntfn.word)
            ntfn.word = 0
        else:
            ntfn.word |= badge

    def raise_irq(self, ntfn: Notification | None, bits: int) -> None:
        """A device interrupt: signal its notification from outside any task."""
        if ntfn is not None and not self.halted:
            self.signal(ntfn, bits)

    def alarm_fired(self, arg: tuple[Notification, int]) -> None:
        """An `Alarm` went off (an event of this kernel's own)."""
        self.raise_irq(*arg)

    def device_interrupt(self, device: str, bits: int) -> None:
        """A device outside the kernel (a hypervisor's virtqueue) interrupts:
        signal the notification of `devices[device]` (its `irq`)."""
        if self.journal is not None:
            self.journal("irq", device, bits)
        self.raise_irq(self.devices[device].irq, bits)

    def strand(self, tasks: list[Task]) -> None:
        """Tasks whose IPC can never complete (their peer's caps are gone) get an error."""
        for task in tasks:
            if task.alive and task.state in (State.SEND, State.REPLY):
                self.wake(task, exc=PeerDied("the other end of the IPC is gone"))

    # ===================================================================
    # Task death
    # ===================================================================

    def exit(self, task: Task, code: int) -> None:
        self.log.info("task", "exited", task=task.name, pid=task.pid, code=code)
        self._release(task, code)

    def kill(self, task: Task, reason: str, code: int, level: str = "info") -> None:
        if not task.alive:
            return
        getattr(self.log, level)("task", "killed", task=task.name, pid=task.pid, reason=reason)
        self._release(task, code)

    def _release(self, task: Task, code: int) -> None:
        """Take a task out of every queue and give back all it held.
        Nothing it was exchanging is lost: its peers get errors."""
        if not task.alive:
            return
        if self.mlaas.task_hooks:
            self.mlaas.notify_exit(task)
        state, on = task.state, task.blocked_on
        if state is State.RUNNABLE:
            self.sched.dequeue(task)
        elif state is State.RUNNING:
            cpu = self.cpus[task.cpu]
            if cpu.current is task:
                cpu.current = None
                if cpu.event is not None and not cpu.active:
                    cpu.event.cancel()
                    cpu.event = self.loop.call_at(self.loop.now_ns, self._cpu_run, cpu)
        elif state is State.SEND:
            on.senders = type(on.senders)(e for e in on.senders if e[0] is not task)
        elif state is State.RECV:
            on.receivers.remove(task)
        elif state is State.NOTIFY:
            on.waiters.remove(task)
        elif state is State.CHILD and task in on.exit_waiters:
            on.exit_waiters.remove(task)
        if task.timer is not None:
            task.timer.cancel()
            task.timer = None
        task.state = State.DEAD
        task.alive = False
        try:
            task.gen.close()
        except Exception:  # the generator misbehaved on close; it is dead anyway
            pass
        if task.bound_ntfn is not None and task.bound_ntfn.bound is task:
            task.bound_ntfn.bound = None
        self.strand(task.cspace.clear())
        if task.aspace is not None:
            self.mm.release(task.aspace)
        del self.tasks[task.pid]
        if task.exit_waiters:
            for waiter in task.exit_waiters:
                self.wake(waiter, code)
        else:
            self.exit_codes[task.pid] = code
        if task.pid == self.init_pid and not self.halted:
            self.log.error("kernel", "panic", reason=f"init exited with status {code}")
            self.halt(f"panic: init exited with status {code}")
