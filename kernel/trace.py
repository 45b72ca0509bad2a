"""Tracing a running kernel: a Chrome / Perfetto trace of its CPUs.

The trace is a hook that plugs in, as curio's debugging aids are, not code in
the CPU loop.  `Tracer.start` shadows three of the kernel's methods on the
kernel instance (`_step`, `wake`, `handoff`) and its trap table with traced
versions; `stop` removes them.  With tracing off the CPU loop calls the
class's own methods and the plain `TRAP_TABLE`: it pays nothing.

What it records, in virtual time (Chrome's `ts` is in microseconds):

* one track per CPU, with a slice for each stretch a task ran there;
* each trap as an instant event on its CPU's track (category `ipc` for
  message passing, `trap` for the rest);
* each wake-up one task gives another (a reply, a message, a signal) as a
  flow arrow from the waker's CPU to where the woken task next runs.

Other sources (the vGPU driver's timeline, from `trace stop` in the shell)
add their own events with `add`.  `chrome_json` is the file's content:
``{"traceEvents": [...]}``, which Perfetto and chrome://tracing open.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from kernel.errors import InvalidArgument, NotSupported
from kernel.syscall import TRAP_TABLE

if TYPE_CHECKING:
    from kernel.kernel import Kernel
    from kernel.task import Task

#: The Chrome trace's process id of the kernel's CPUs (a GPU uses others).
CPU_PID = 1
#: A trace keeps at most this many events (a long run must not eat the host's memory).
MAX_EVENTS = 2_000_000
IPC_TRAPS = frozenset({"Send", "Recv", "Call", "Reply", "ReplyRecv", "NBSend", "NBRecv"})
#: The kernel methods a trace shadows while it records.
TRACED = ("_step", "wake", "handoff", "trap_table")


class Tracer:
    """The events of one trace of one kernel."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self.events: list[dict[str, Any]] = []
        self.dropped = 0
        self.recording = False
        self._open: dict[int, list[Any]] = {}  # cpu -> [pid, name, start_ns, end_ns]
        self._stepping: Task | None = None  # the task whose trap is being handled
        self._flows: dict[int, int] = {}  # pid of a woken task -> id of its arrow
        self._next_flow = 1

    # -- plugging in ------------------------------------------------------------------

    def start(self) -> None:
        k = self.kernel
        k._step = self._traced_step  # type: ignore[method-assign]
        k.wake = self._traced_wake  # type: ignore[method-assign]
        k.handoff = self._traced_handoff  # type: ignore[method-assign]
        k.trap_table = {cls: self._traced_trap(cls.__name__, h) for cls, h in TRAP_TABLE.items()}
        self.recording = True

    def stop(self) -> None:
        k = self.kernel
        for name in TRACED:
            k.__dict__.pop(name, None)
        k.trap_table = TRAP_TABLE
        now = k.loop.now_ns
        for cpu in list(self._open):
            self._close(cpu, now)
        self.recording = False

    # -- the traced methods -----------------------------------------------------------

    def _traced_step(self, task: Task) -> int:
        k = self.kernel
        now, cpu = k.loop.now_ns, task.cpu
        self._running(cpu, task, now)
        self._stepping = task
        try:
            cost = type(k)._step(k, task)
        finally:
            self._stepping = None
        current = self._open.get(cpu)  # (none if this trap stopped the trace)
        if current is not None:
            # A Compute trap runs on past the trap: the slice lasts at most that long.
            current[3] = now + cost + task.compute_left_ns
        return cost

    def _traced_wake(self, task: Task, value: Any = None, exc: BaseException | None = None) -> None:
        self._flow_to(task)
        type(self.kernel).wake(self.kernel, task, value, exc)

    def _traced_handoff(self, blocked: Task, target: Task, value: Any) -> None:
        self._flow_to(target)
        type(self.kernel).handoff(self.kernel, blocked, target, value)

    def _traced_trap(self, name: str, handler: Any) -> Any:
        category = "ipc" if name in IPC_TRAPS else "trap"

        def traced(k: Kernel, task: Task, trap: Any) -> Any:
            if not self.recording:  # the trap that stopped the trace, or a stale reference
                return handler(k, task, trap)
            self._add({"ph": "i", "s": "t", "name": name, "cat": category, "pid": CPU_PID,
                       "tid": task.cpu, "ts": k.loop.now_ns / 1e3,
                       "args": {"task": task.name, "pid": task.pid}})  # fmt: skip
            return handler(k, task, trap)

        return traced

    # -- slices and arrows ------------------------------------------------------------

    def _running(self, cpu: int, task: Task, now: int) -> None:
        """`task` runs on `cpu` from `now`: extend its slice or start one."""
        current = self._open.get(cpu)
        if current is not None and (current[0] != task.pid or now > current[3]):
            self._close(cpu, now)
            current = None
        if current is None:
            self._open[cpu] = [task.pid, task.name, now, now]
        flow = self._flows.pop(task.pid, None)
        if flow is not None:
            self._add({"ph": "f", "bp": "e", "id": flow, "name": "wake", "cat": "ipc",
                       "pid": CPU_PID, "tid": cpu, "ts": now / 1e3})  # fmt: skip

    def _close(self, cpu: int, now: int) -> None:
        pid, name, start, end = self._open.pop(cpu)
        end = min(end, now)
        self._add({"ph": "X", "name": name, "cat": "task", "pid": CPU_PID, "tid": cpu,
                   "ts": start / 1e3, "dur": (end - start) / 1e3, "args": {"pid": pid}})  # fmt: skip

    def _flow_to(self, target: Task) -> None:
        waker = self._stepping
        if waker is None or waker is target or not target.alive or not self.recording:
            return  # woken from outside a task (a timer, an interrupt): no arrow
        flow, self._next_flow = self._next_flow, self._next_flow + 1
        self._flows[target.pid] = flow
        self._add({"ph": "s", "id": flow, "name": "wake", "cat": "ipc", "pid": CPU_PID,
                   "tid": waker.cpu, "ts": self.kernel.loop.now_ns / 1e3,
                   "args": {"from": waker.name, "to": target.name}})  # fmt: skip

    # -- the trace file ---------------------------------------------------------------

    def add(self, events: list[dict[str, Any]]) -> None:
        """Events of another source (the vGPU driver's timeline)."""
        for event in events:
            if not isinstance(event, dict) or "ph" not in event:
                raise ValueError(f"a trace event is a dict with a 'ph', got {event!r:.60}")
            self._add(event)

    def _add(self, event: dict[str, Any]) -> None:
        if len(self.events) < MAX_EVENTS:
            self.events.append(event)
        else:
            self.dropped += 1

    def chrome_json(self) -> str:
        k = self.kernel
        names = [{"ph": "M", "name": "process_name", "pid": CPU_PID,
                  "args": {"name": f"malvos kernel {k.name or ''}".strip() + " (CPUs)"}}]  # fmt: skip
        names += [{"ph": "M", "name": "thread_name", "pid": CPU_PID, "tid": cpu.id,
                   "args": {"name": f"cpu{cpu.id}"}} for cpu in k.cpus]  # fmt: skip
        trace = {"traceEvents": names + self.events, "displayTimeUnit": "ms",
                 "otherData": {"dropped_events": self.dropped}}  # fmt: skip
        return json.dumps(trace, separators=(",", ":"))


def control(k: Kernel, op: str, arg: Any = None) -> Any:
    """The `Trace` trap: ``start``, ``stop``, ``add`` (events of another
    source), ``save`` (to the path `arg`; returns the number of events) and
    ``status`` (recording or not, events so far)."""
    tracer: Tracer | None = k.tracer
    if op == "start":
        if tracer is not None and tracer.recording:
            raise InvalidArgument("already tracing (trace stop first)")
        k.tracer = tracer = Tracer(k)
        tracer.start()
        return True
    if op == "status":
        return (
            tracer is not None and tracer.recording,
            0 if tracer is None else len(tracer.events),
        )
    if tracer is None:
        raise InvalidArgument("nothing traced yet (trace start first)")
    if op == "stop":
        if not tracer.recording:
            raise InvalidArgument("not tracing (trace start first)")
        tracer.stop()
        return len(tracer.events)
    if op == "add":
        if not isinstance(arg, (list, tuple)):  # an endless iterator would never end list()
            raise InvalidArgument(f"trace add takes a list of events, got {type(arg).__name__}")
        try:
            tracer.add(list(arg))
        except (TypeError, ValueError) as exc:
            raise InvalidArgument(str(exc)) from None
        return len(tracer.events)
    if op == "save":
        if k.hypercall is not None:
            # A guest names no host file: its programs may be hostile, and a
            # replayed journal (snapshot.py) must never open a path.  The
            # host's own trace shows its guests.
            raise NotSupported("trace save: a guest has no host files (save from the host)")
        return _save(tracer, arg)
    raise InvalidArgument(f"unknown trace operation {op!r}: start, stop, add, save or status")


def _save(tracer: Tracer, path: Any) -> int:
    if not isinstance(path, str) or not path:
        raise InvalidArgument(f"trace save needs a file name, got {path!r}")
    if tracer.recording:
        raise InvalidArgument("still tracing (trace stop first)")
    try:
        with open(path, "w") as f:
            f.write(tracer.chrome_json())
    except OSError as exc:
        raise InvalidArgument(f"cannot write {path}: {exc.strerror or exc}") from None
    return len(tracer.events)
