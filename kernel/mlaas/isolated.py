"""Isolated MLaaS modules: one module in a sandboxed child process (``insmod --isolated``).

In-process modules are contained against every fault a *buggy* module makes
(`faults.py`); they share the kernel's process, so a *hostile* one can still
``os._exit``, segfault, monkey-patch the kernel, leave threads behind, or read
and write the host's files.  An isolated module runs in a child process of
its own (`kernel.mlaas.child`), sandboxed before its first line runs
(`kernel.mlaas.sandbox`), and the kernel talks to it through a proxy advisor
that speaks a small protocol of plain values over two pipes.

Where it sits: the MLaaS core (`core.py`) calls `start` instead of
`loader.load` and puts `IsolatedModule.advisor` where an in-process advisor
goes.  The proxy is an instance of a subclass of the module's base with one
method per callback the module overrides, so bindings and `overrides` treat
it as any advisor.  Each method raises `IsolatedFault` when the child
misbehaves, and the core ejects the module with that fault's reason.

**Calls.**  A *question* (a callback with an answer: `select_victim`,
`select_next`, `on_load`, ...) is one round trip.  A *notice* (a callback
without one: `on_access`, `on_spawn`, ...) is queued here and sent, in one
message, ahead of the next question, or when `NOTICE_BATCH` are queued, or on
`flush`; a notice that raised in the child is reported at that call.  During
a question the child may read the kernel's views (``ctx.memory``,
``ctx.sched``) through `IsolatedHost.query`.

**Deadlines: a module cannot stall the kernel by sleeping.** The budget is CPU
time, which a sleeping child does not use, so a module that sleeps in every
callback would hold the kernel for as long as it likes under the hang limit.
Each callback question therefore has a wall-clock *deadline*
(`IsolatedModule.deadline_s`: `Limits.deadline_s`, or ten times the module's
CPU budget if that is more, the factor of the in-process hard limit). From the
deadline on, the kernel looks at the child every `LOOK_PERIOD_S` (5 ms): if it
is in an interruptible sleep (``S`` in ``/proc/PID/stat``; the sandbox lets it
have no thread but its first) and nothing it wrote is waiting in the pipe, the
child is idle by its own choice, and the question is a *miss*: the kernel
takes its default decision (the answer None), and the child's answer, when it
comes, is read and dropped, the protocol staying in step (the child answers in
order, so the next `_late` answers are the dropped ones). `MISS_STRIKES`
misses in a row eject the module (``overrun``). So a module that sleeps costs
the kernel at most its deadline and a look period per question (25 ms for a
budget of 2 ms or less), and `MISS_STRIKES` of them in all if it sleeps in
every question. A child that is never asleep at a look is running, or waiting
for a CPU: one that spends CPU is judged by its budget when it answers (ten
times over ejects at once, on every answer, a late one included), and the hang
limit ends the question; one that sleeps between looks cannot know when they
come, so to dodge them all it must be awake, spending CPU, nearly all the
time; and a CPU the host withholds is the host's doing, not a miss. (A child
that sleeps while the kernel's message does not fit into the pipe is ejected
at once: a half-written message cannot be taken back.)

Why the state and not the clock: the determinism contract (``faults.py``)
says a seeded run gives the same results on an idle and a busy host.  A
healthy child on a loaded host is *runnable* (``R``), waiting for a CPU, or
in the kernel's I/O (``D``), or stopped (``T``, as ``malv busy`` stops
processes), however late it is; only a child that sleeps, waits on a timer or
a lock of its own, is ``S`` in the middle of a question with nothing written.
So a miss never falls on a healthy module, and its answers, all of them, are
used on any host.  The one wall-clock limit left is `Limits.hang_s`, the hang
guard for a child that is neither asleep nor answering (a spin inside a C
call, a stop that never ends); past it the child is SIGKILLed (``overrun``).
Lifecycle questions (`on_load`, `export_state`, ...) have no deadline: only
the hang limit, and the core's loading guard.

**Limits**: `Limits`, and the sandbox's own (`sandbox.py`); `limits_table`
renders them as the README's table, and a test holds the two equal.  Each is
proven by a hostile module in the tests.  Whatever the child does,
the kernel's process, its threads and its modules are untouched: a child
that dies is ``crashed``, one that writes bytes that are not the protocol is
``invalid``, and `IsolatedModule.close` leaves no process or thread behind.

**What isolated modules cannot do**: kernel-space inference (``ctx.infer``,
``ctx.model``, ``ctx.load_weights``, ``ctx.features`` raise at first use);
answer or hand over (``export_state``) anything but plain values; keep a
kernel object (they get copies: task views, the GPU device); write files;
read the views outside a callback or from another thread.
"""

from __future__ import annotations

import math
import os
import select
import signal
import subprocess
import sys
import time
import types
import weakref
from collections.abc import Callable, Mapping, Sequence
from operator import attrgetter
from typing import Any, Protocol

import attrs

from kernel.mlaas import loader, sandbox
from kernel.mlaas.advisors import (
    BASES,
    CALLBACK_TABLE,
    CALLBACKS,
    LIFECYCLE,
    LIFECYCLE_SPECS,
    MAX_BUDGET_US,
    SUPPORTED_API_VERSIONS,
    CallbackSpec,
)
from kernel.mlaas.child import (
    MAX_LOG_LINES,
    QUERIES,
    TASK_FIELDS,
    FrameReader,
    ProtocolError,
    encode,
    plain,
    short_repr,
)
from kernel.mlaas.faults import HARD_FACTOR, MIN_HARD_LIMIT_NS, ModuleError

#: Notices queued before they are sent without waiting for a question.
NOTICE_BATCH = 256
#: How long a child that closed its pipe has to exit before it is killed.
EXIT_GRACE_S = 0.5
#: Questions in a row missed (the child asleep at its deadline) that eject a module.
MISS_STRIKES = 3
#: After a question's deadline, how often the kernel looks whether the child sleeps
#: (a look is one pread of /proc/PID/stat, a few microseconds of the kernel's CPU).
LOOK_PERIOD_S = 0.005
#: What is kept of the child's stderr for a refusal's last words.
STDERR_TAIL_BYTES = 2000
#: The environment a child gets: these, if set, and nothing else of the kernel's.
PASSED_ENV = (
    "PYTHONPATH", "PYTHONHASHSEED", "LANG", "LC_ALL", "TZ", "LD_LIBRARY_PATH",
    "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE",
)  # fmt: skip
CHILD_ENV = {
    "PYTHONDONTWRITEBYTECODE": "1",
    # Per-thread malloc arenas and BLAS thread pools reserve address space, which RLIMIT_AS counts.
    "MALLOC_ARENA_MAX": "2",
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
}
_CHILD_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "child.py")
_REASONS = frozenset({"raised", "overrun", "crashed", "invalid", "memory"})
_SCALARS = (bool, int, float, str)
_task_fields = attrgetter(*TASK_FIELDS)


class IsolatedFault(Exception):
    """The child misbehaved; the core ejects the module with this reason.

    ``raised``: a callback raised in the child (the message names the
    exception); ``overrun``: no answer within the hang limit (the child was
    SIGKILLed); ``crashed``: the child died (a signal, an exit, an rlimit);
    ``invalid``: the child sent something that is not the protocol, or an
    answer the kernel cannot use; ``memory``: it ran out of its memory limit.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


def _positive(instance: Any, attribute: Any, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{attribute.name} must be a positive number, got {value!r}")


@attrs.frozen
class Limits:
    """What an isolated module's process may use (see the module docstring).

    The defaults are what `insmod --isolated` gives; `limits_table` shows them."""

    #: The child's address space (RLIMIT_AS).
    memory_bytes: int = attrs.field(default=1 << 30, validator=_positive)
    #: The child's CPU time over its whole life (RLIMIT_CPU).  Generous: each
    #: callback has its own budget; this ends a module that runs for hours.
    cpu_s: int = attrs.field(default=3600, validator=_positive)
    #: Wall-clock time of one question, whatever the child's state.  Below the
    #: in-process watchdog's (`faults.HANG_LIMIT_NS`), which stays behind it.
    hang_s: float = attrs.field(default=1.0, validator=_positive)
    #: The least wall-clock deadline of a callback question (see "Deadlines").
    deadline_s: float = attrs.field(default=MIN_HARD_LIMIT_NS / 1e9, validator=_positive)
    #: Wall-clock time to start the child and load the module.
    startup_s: float = attrs.field(default=20.0, validator=_positive)


def _size(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n and n % (1 << shift) == 0:
            return f"{n >> shift} {unit}"
    return f"{n} bytes"


def _seconds(s: float) -> str:
    return f"{s:g} s" if s >= 1 else f"{s * 1e3:g} ms"


def limits_table() -> str:
    """The README's table of an isolated module's limits, from the code's own values."""
    d = Limits()
    rows = [
        ("`memory_bytes`", "address space of the child (`RLIMIT_AS`); an allocation past it "
         "fails, and the fault is `memory`", _size(d.memory_bytes)),
        ("`cpu_s`", "CPU time of the child over its whole life (`RLIMIT_CPU`); past it the "
         "child is killed, and the fault is `crashed` (SIGXCPU). Each callback has its own "
         "budget besides", _seconds(d.cpu_s)),
        ("`deadline_s`", "wall-clock deadline of one callback question (ten times the "
         "module's budget if that is more): a child found asleep at it is a *miss*, the "
         f"default policy decides, and {MISS_STRIKES} misses in a row are `overrun`",
         _seconds(d.deadline_s)),
        ("`hang_s`", "wall-clock time of one question, whatever the child does; past it the "
         "child is SIGKILLed, even inside a C call, and the fault is `overrun`",
         _seconds(d.hang_s)),
        ("`startup_s`", "wall-clock time to start the child and load the module",
         _seconds(d.startup_s)),
        ("open files", "descriptors the child may hold (`RLIMIT_NOFILE`); no setting",
         str(sandbox.MAX_OPEN_FILES)),
        ("new processes", "processes or threads the child may start (`RLIMIT_NPROC`, and "
         "seccomp denies `clone`); no setting", str(sandbox.MAX_PROCESSES)),
        ("file size", "what a regular file may grow to (`RLIMIT_FSIZE`; stderr is a pipe); "
         "no setting", _size(sandbox.MAX_FILE_BYTES)),
    ]  # fmt: skip
    lines = ["| limit | what it guarantees | default |", "| --- | --- | --- |"]
    lines += [f"| {name} | {what} | {value} |" for name, what, value in rows]
    return "\n".join(lines) + "\n"


class IsolatedHost(Protocol):
    """What the core gives an isolated module's ``ctx``, called in the kernel's process."""

    def now_ns(self) -> int:
        """Virtual time."""

    def log(self, level: str, event: str, fields: dict[str, Any]) -> None:
        """A line for dmesg from the module (level ``info`` or ``warning``)."""

    def query(self, view: str, method: str, args: tuple[Any, ...]) -> Any:
        """A method of the module's view (`MemoryView`, `SchedView`): ``("memory",
        "owner", (frame,))``, ``("sched", "runnable", ())``.  Plain values back;
        `sched.task` and `sched.runnable` may return `TaskView`s."""


class _Timeout(Exception):
    pass


class _Closed(Exception):
    """The child closed its end of the reply pipe (it died, most likely)."""


class _Asleep(Exception):
    """At a deadline, the child was asleep with nothing written: a miss."""


# ======================================================================
# Starting a module
# ======================================================================


def start(
    path: str,
    params: Mapping[str, Any] | None,
    *,
    seed: Any,
    host: IsolatedHost,
    limits: Limits = Limits(),
) -> IsolatedModule:
    """Start a child, load and validate the module there (the checks and refusals
    of in-process loading), and return its handle.  `ModuleError` if the module
    is refused or the child does not start or load."""
    try:
        digest = loader.digest(path)
    except OSError as exc:
        raise ModuleError(f"cannot read {path}: {exc}") from None
    raw = dict(params or {})
    for key, value in raw.items():
        if type(key) is not str or not isinstance(value, _SCALARS):
            raise ModuleError(
                f"parameter {key} must be a bool, int, float or str, got {short_repr(value)}"
            )
    module = IsolatedModule(path, digest, host, limits)
    try:
        module._load({
            "path": os.path.abspath(path),
            "params": raw,
            "seed": f"{seed}",
            "memory_bytes": int(limits.memory_bytes),
            "cpu_s": math.ceil(limits.cpu_s),
        })  # fmt: skip
    except BaseException:
        module.close()
        raise
    return module


class IsolatedModule:
    """The kernel's handle on one isolated module and its process."""

    name: str
    kind: str
    doc: str
    budget_us: float
    defaults: dict[str, Any]
    params: dict[str, Any]
    sharing_policy: str | None
    api_version: int
    overridden: frozenset[str]
    advisor: Any

    def __init__(self, path: str, digest: str, host: IsolatedHost, limits: Limits) -> None:
        self.path = path
        self.digest = digest
        self.limits = limits
        self.last_cpu_ns = 0
        #: A callback question's deadline (set from the module's budget once it loaded).
        self.deadline_s = limits.deadline_s
        self.hard_cpu_ns = MIN_HARD_LIMIT_NS  # ... and its CPU limit for one callback
        self.misses = 0  # questions the kernel answered by default: the child slept
        self._missed = 0  # ... in a row
        self._late = 0  # answers still to come to missed questions: dropped when read
        self._look_at = math.inf  # when the current wait looks whether the child sleeps
        self._host = host
        self._notices: list[tuple[Any, ...]] = []  # (now_ns, method, *args)
        self._now = host.now_ns
        self._fault: IsolatedFault | None = None
        self._reader = FrameReader()
        module_dir = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
        request_read, self._request = os.pipe()
        self._reply, reply_write = os.pipe()
        # stderr is a pipe (RLIMIT_FSIZE 0 forbids a file) that the child writes
        # without ever blocking: when it is full, its writes fail (EAGAIN).
        self._stderr, stderr_write = os.pipe()
        os.set_blocking(stderr_write, False)
        env = {k: os.environ[k] for k in PASSED_ENV if k in os.environ}
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-P", "-B", _CHILD_SCRIPT, str(request_read), str(reply_write)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr_write,
                pass_fds=(request_read, reply_write),
                env={**env, **CHILD_ENV},
                cwd=module_dir,
                start_new_session=True,  # the console's ^C is for the kernel, not for modules
            )
        except OSError as exc:
            for fd in (self._request, self._reply, self._stderr):
                os.close(fd)
            raise ModuleError(f"cannot start the module's process: {exc}") from None
        finally:
            for fd in (request_read, reply_write, stderr_write):  # the child's ends
                os.close(fd)
        self.pid = self._process.pid
        try:  # where /proc is missing, no look finds the child asleep: the hang limit rules
            self._stat: int | None = os.open(f"/proc/{self.pid}/stat", os.O_RDONLY)
        except OSError:
            self._stat = None
        os.set_blocking(self._request, False)
        os.set_blocking(self._reply, False)
        os.set_blocking(self._stderr, False)
        self._poll_in = select.poll()
        self._poll_in.register(self._reply, select.POLLIN)
        self._poll_out = select.poll()
        self._poll_out.register(self._request, select.POLLOUT)
        fds = (self._request, self._reply, self._stderr)
        self._stop = weakref.finalize(
            self, _stop, self._process, fds if self._stat is None else (*fds, self._stat)
        )

    # -- lifecycle ---------------------------------------------------------------

    def close(self) -> None:
        """SIGKILL the child and reap it; idempotent.  Later calls fault."""
        if self._fault is None:
            self._fault = IsolatedFault("crashed", "the module's process was stopped")
        self._stop()

    @property
    def alive(self) -> bool:
        return self._fault is None

    @property
    def fault(self) -> IsolatedFault | None:
        """Why the module stopped answering, if it did."""
        return self._fault

    def flush(self) -> None:
        """Send the queued notices now and wait for the child to have run them
        (or, if it sleeps past its deadline, for that: a miss)."""
        if self._notices or self._fault is not None:
            self._ask(None, ())

    def _load(self, config: dict[str, Any]) -> None:
        deadline = time.monotonic() + self.limits.startup_s
        self._look_at = math.inf  # the module's imports may wait on the disk
        try:
            self._send(["load", config], deadline)
            message = self._receive(deadline)
        except _Timeout:
            self._stop()
            raise ModuleError(
                f"the module did not load within {self.limits.startup_s:g} s"
            ) from None
        except _Closed:
            _, how = self._death()
            words = self._last_words()
            self._stop()
            raise ModuleError(f"{how} while loading{words}") from None
        except ProtocolError as exc:
            self._stop()
            raise ModuleError(f"the module's process sent garbage while loading: {exc}") from None
        if _shaped(message, "refused", 2) and type(message[1]) is str:
            self._stop()
            raise ModuleError(message[1][:500])
        if not _shaped(message, "ready", 2) or not self._describe(message[1]):
            self._stop()
            raise ModuleError("the module's process sent an invalid description of the module")

    def _describe(self, info: Any) -> bool:
        """Take the child's description of the module, if it holds up."""
        if type(info) is not dict:
            return False
        name, kind = info.get("name"), info.get("kind")
        if type(name) is not str or not loader.NAME_RE.match(name) or kind not in BASES:
            return False
        overridden = info.get("overridden")
        allowed = set(CALLBACKS[kind] + LIFECYCLE)
        if type(overridden) is not list or not set(overridden) <= allowed:
            return False
        budget = info.get("budget_us")
        defaults, params = info.get("defaults"), info.get("params")
        sharing = info.get("sharing_policy")
        if (
            type(budget) is not float
            or not 0 < budget <= MAX_BUDGET_US
            or not _param_map(defaults)
            or not _param_map(params)
            or type(info.get("api_version")) is not int
            or info["api_version"] not in SUPPORTED_API_VERSIONS
            or type(info.get("doc")) is not str
            or not (sharing is None or (kind == "gpu" and type(sharing) is str))
        ):
            return False
        self.name, self.kind = name, kind
        self.doc = info["doc"][:4000]
        self.budget_us = budget
        self.deadline_s = max(self.limits.deadline_s, HARD_FACTOR * budget / 1e6)
        self.hard_cpu_ns = max(int(HARD_FACTOR * budget * 1000), MIN_HARD_LIMIT_NS)
        self.defaults, self.params = info["defaults"], info["params"]
        self.sharing_policy = sharing
        self.api_version = info["api_version"]
        self.overridden = frozenset(overridden)
        self.advisor = _proxy_class(self)(self)
        return True

    # -- calls -------------------------------------------------------------------

    def _raise_fault(self) -> None:
        assert self._fault is not None
        raise IsolatedFault(self._fault.reason, self._fault.message)

    def _ask(self, method: str | None, args: tuple[Any, ...]) -> Any:
        """One question (or, with `method` None, the queued notices alone)."""
        if self._fault is not None:
            self._raise_fault()
        notices, self._notices = self._notices, []
        what = method or "the notices"
        now = time.monotonic()
        deadline = now + self.limits.hang_s
        self._look_at = math.inf if method in LIFECYCLE else now + self.deadline_s
        try:
            self._send(["ask", notices, self._now(), method, args], deadline)
            while True:
                message = self._receive(deadline)
                if _shaped(message, "ok", 4):
                    _, cpu_ns, answer, logs = message
                    if type(cpu_ns) is not int or cpu_ns < 0:
                        raise IsolatedFault(
                            "invalid", f"{what}: the child's CPU time is {cpu_ns!r}"
                        )
                    self._forward(logs)
                    late = self._late > 0  # the answer to a missed question: the default stood
                    if method not in LIFECYCLE or late:
                        self._check_cpu(cpu_ns, "a missed question" if late else what)
                    if late:
                        self._late -= 1
                        continue
                    self._missed = 0
                    self.last_cpu_ns = cpu_ns
                    return answer
                if _shaped(message, "query", 4):
                    self._answer_query(message, deadline)
                elif (
                    _shaped(message, "fault", 5)
                    and message[1] in _REASONS
                    and type(message[2]) is str
                ):
                    self._forward(message[4])
                    raise IsolatedFault(message[1], message[2][:500])
                else:
                    raise IsolatedFault(
                        "invalid", f"{what}: the module's process sent {short_repr(message)}"
                    )
        except IsolatedFault as fault:
            self._fail(fault)
            raise
        except _Asleep:
            self._miss(what)
            return None
        except _Timeout:
            failure = IsolatedFault(
                "overrun",
                f"{what} did not answer within {self.limits.hang_s:g} s: its process was killed",
            )
        except _Closed:
            failure = IsolatedFault(*self._death())
        except ProtocolError as exc:
            failure = IsolatedFault("invalid", f"{what}: the module's process sent garbage: {exc}")
        except BaseException:
            # Interrupted here (the host watchdog, ^C): the pipes are mid-message.
            self._fail(IsolatedFault("overrun", f"{what} was interrupted in the kernel"))
            raise
        self._fail(failure)
        raise failure

    def _check_cpu(self, cpu_ns: int, what: str) -> None:
        """The in-process hard limit (`faults.HARD_FACTOR`), on every answer: the
        core's budget check times one call in 64 once a module has settled, and
        a late answer's CPU time reaches it not at all."""
        if cpu_ns > self.hard_cpu_ns:
            raise IsolatedFault(
                "overrun",
                f"{what} used {cpu_ns / 1e6:.0f} ms of CPU, more than ten times its "
                f"{self.budget_us:g} us budget",
            )

    def _miss(self, what: str) -> None:
        """The child sleeps at the question's deadline: the default decides."""
        self.misses += 1
        self._missed += 1
        self._late += 1
        if self._missed < MISS_STRIKES:
            return
        failure = IsolatedFault(
            "overrun",
            f"{what}: the module's process was asleep at its {self.deadline_s * 1e3:g} ms "
            f"deadline {MISS_STRIKES} questions in a row, and was killed",
        )
        self._fail(failure)
        raise failure

    def _fail(self, fault: IsolatedFault) -> None:
        """A faulty module answers nothing more: its process goes at once."""
        if self._fault is None:
            self._fault = fault
        self._stop()

    def _answer_query(self, message: list[Any], deadline: float) -> None:
        _, view, method, args = message
        arity = QUERIES.get(view, {}).get(method) if view == self.kind else None
        if (
            arity is None
            or type(args) is not list
            or len(args) != arity
            or any(type(a) is not int for a in args)
        ):
            raise IsolatedFault(
                "invalid",
                f"the module asked {short_repr(view)}.{short_repr(method)}"
                f"{short_repr(args)}, which is not a method of its view",
            )
        try:
            value = self._host.query(view, method, tuple(args))
            if view == "sched" and method == "task" and value is not None:
                value = _task_fields(value)
            elif view == "sched" and method == "runnable":
                value = [_task_fields(v) for v in value]
            reply = encode(["reply", plain(value)])
        except Exception as exc:
            reply = encode(["fail", type(exc).__name__, str(exc)[:500]])
        self._write(reply, deadline)

    def _forward(self, logs: Any) -> None:
        if type(logs) is not list or len(logs) > MAX_LOG_LINES + 1:
            raise IsolatedFault("invalid", "the module's process sent a malformed log")
        for line in logs:
            if (
                type(line) is not list
                or len(line) != 3
                or line[0] not in ("info", "warning")
                or type(line[1]) is not str
                or type(line[2]) is not dict
                or not all(type(k) is str for k in line[2])  # KernelLog.module judges the rest
            ):
                raise IsolatedFault("invalid", "the module's process sent a malformed log line")
        for level, event, fields in logs:
            self._host.log(level, event[:200], fields)

    # -- the pipes ---------------------------------------------------------------

    def _send(self, message: Any, deadline: float) -> None:
        self._write(encode(message), deadline)

    def _write(self, data: bytes, deadline: float) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self._request, view) :]
            except BlockingIOError:
                try:
                    self._wait(self._poll_out, deadline)
                except _Asleep:
                    raise IsolatedFault(
                        "overrun",
                        "the module's process slept with the kernel's message "
                        "half-written into its full pipe",
                    ) from None
            except (BrokenPipeError, ConnectionResetError):
                raise _Closed from None

    def _receive(self, deadline: float) -> Any:
        reader = self._reader
        while True:
            message = reader.next()
            if message is not None:
                return message
            # An answer is never there the moment a question was sent: poll first.
            self._wait(self._poll_in, deadline)
            try:
                data = os.read(self._reply, 1 << 16)
            except BlockingIOError:
                continue
            if not data:
                raise _Closed
            reader.feed(data)

    def _wait(self, poll: Any, deadline: float) -> None:
        """Until `poll` has an event: `_Timeout` at `deadline`, `_Asleep` if at a
        look (`_look_at`) the child sleeps with nothing written (a miss)."""
        while True:
            now = time.monotonic()
            if now >= deadline:
                raise _Timeout
            if poll.poll(math.ceil((min(deadline, self._look_at) - now) * 1000)):
                return
            if time.monotonic() >= self._look_at:
                # The state first, the pipe second: a child that wrote and then
                # blocked (on a query's reply, on a full pipe) is seen by the pipe.
                if _sleeping(self._stat) and not poll.poll(0):
                    raise _Asleep
                self._look_at = time.monotonic() + LOOK_PERIOD_S

    def _death(self) -> tuple[str, str]:
        """The fault of a child that closed its reply pipe (the caller stops it)."""
        try:
            code = self._process.wait(EXIT_GRACE_S)
        except subprocess.TimeoutExpired:
            return "invalid", "the module's process closed its end of the protocol pipe"
        if code >= 0:
            return "crashed", f"the module's process exited with status {code}"
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        if -code == signal.SIGXCPU:
            name += f": it used up its {self.limits.cpu_s:g} s of CPU time"
        return "crashed", f"the module's process died ({name})"

    def _last_words(self) -> str:
        """The last line the child wrote to stderr, for a refusal."""
        tail = b""
        for _ in range(4):  # the pipe holds 64 KiB; a child still writing is not waited for
            try:
                data = os.read(self._stderr, 1 << 16)
            except OSError:  # BlockingIOError: nothing more now
                break
            if not data:
                break
            tail = (tail + data)[-STDERR_TAIL_BYTES:]
        lines = tail.decode(errors="replace").strip().splitlines()
        return f": {lines[-1][:300]}" if lines else ""

    def __repr__(self) -> str:
        name = getattr(self, "name", os.path.basename(self.path))
        state = "live" if self._fault is None else self._fault.reason
        return f"<IsolatedModule {name} pid {self.pid} {state}>"


def _stop(process: subprocess.Popen[bytes], fds: tuple[int, ...]) -> None:
    """SIGKILL and reap the child, close the pipes.  The child can start no
    process or thread, so nothing of it outlives this."""
    if process.returncode is None:
        try:
            process.kill()
        except ProcessLookupError:
            pass
        process.wait()
    for fd in fds:
        os.close(fd)


def _sleeping(stat_fd: int | None) -> bool:
    """Is the process whose /proc/PID/stat is open as `stat_fd` in an
    interruptible sleep (``S``), waiting by its own choice, with no thread but
    its first?  Not when it runs or waits for a CPU (``R``), is in the kernel's
    I/O (``D``), is stopped (``T``) or gone, or has a second thread (the
    sandbox allows none; another could be working while the first waits)."""
    if stat_fd is None:
        return False
    try:
        stat = os.pread(stat_fd, 1024, 0)
        fields = stat[stat.rindex(b")") + 2 :].split()  # the name may hold anything
        return fields[0] == b"S" and fields[17] == b"1"  # the state, the thread count
    except (OSError, ValueError, IndexError):
        return False


def _shaped(message: Any, tag: str, length: int) -> bool:
    return type(message) is list and len(message) == length and message[0] == tag


def _param_map(value: Any) -> bool:
    return type(value) is dict and all(
        type(k) is str and type(v) in (bool, int, float, str) for k, v in value.items()
    )


# ======================================================================
# The proxy advisor
# ======================================================================


class ProxyContext:
    """``advisor.ctx`` on the kernel's side: what the core reads of a context."""

    def __init__(self, module: IsolatedModule) -> None:
        self.name = module.name
        self.kind = module.kind
        self.params: Mapping[str, Any] = types.MappingProxyType(dict(module.params))


def _snapshot(obj: Any) -> dict[str, Any]:
    """A kernel object's public, plain attributes (the child gets a copy)."""
    out: dict[str, Any] = {}
    for name in dir(obj):
        if name.startswith("_"):
            continue
        try:
            value = getattr(obj, name)
            if not callable(value):
                out[name] = plain(value)
        except Exception:
            continue
    return out


def _plain_state(state: Any) -> Any:
    try:
        return plain(state)
    except TypeError as exc:
        raise IsolatedFault(
            "invalid", f"import_state: the state is not plain data ({exc})"
        ) from None


def _select_next_answer(pid: Any, candidates: Sequence[Any], cpu: int) -> Any:
    if pid is None:
        return None
    if type(pid) is int:
        for view in candidates:
            if view.pid == pid:
                return view
    raise IsolatedFault(
        "invalid", f"select_next chose {short_repr(pid)}, which is not one of the candidates"
    )


def _prefetch_answer(answer: Any, *args: Any) -> Any:
    if answer is None:
        return None
    if type(answer) is not list:
        raise IsolatedFault(
            "invalid", f"prefetch returned {short_repr(answer)}, not a list of pages"
        )
    return [tuple(item) if type(item) is list and len(item) == 2 else item for item in answer]


def _as_is(value: Any, *args: Any) -> Any:
    return value


def _frames(candidates: Any) -> list[int]:
    return candidates if type(candidates) is list else list(candidates)


def _contexts(contexts: Any) -> list[Any]:
    return [c if type(c) is int else _snapshot(c) for c in contexts]


#: How each argument kind of the callback table (`advisors.ARG_KINDS`) goes on
#: the wire; the child rebuilds it by the same name (`child.REBUILD_ARG`).
ENCODE_ARG: dict[str, Callable[[Any], Any]] = {
    "plain": _as_is,
    "frames": _frames,
    "task": _task_fields,
    "tasks": lambda views: [_task_fields(v) for v in views],
    "contexts": _contexts,
    "device": _snapshot,
    "state": _plain_state,
}
#: How each answer kind (`advisors.ANSWER_KINDS`) comes back, given the call's arguments.
DECODE_ANSWER: dict[str, Callable[..., Any]] = {
    "plain": _as_is,
    "task": _select_next_answer,
    "pages": _prefetch_answer,
}


def _encoder(spec: CallbackSpec) -> Callable[..., tuple[Any, ...]] | None:
    """The callback's argument encoder, or None where every argument is plain."""
    if all(kind == "plain" for kind in spec.args):
        return None
    encoders = tuple(ENCODE_ARG[kind] for kind in spec.args)

    def encode_args(*args: Any) -> tuple[Any, ...]:
        return tuple(enc(arg) for enc, arg in zip(encoders, args, strict=True))

    return encode_args


def _method(spec: CallbackSpec) -> Callable[..., Any]:
    """The proxy's method for one row of the callback table."""
    name = spec.name
    encode_args = _encoder(spec)
    if spec.notice:
        # The hot path of a memory advisor (on_access): queue, nothing more.
        if encode_args is None:

            def notice(self: Any, *args: Any) -> None:
                module = self._isolated
                if module._fault is not None:
                    module._raise_fault()
                queue = module._notices
                queue.append((module._now(), name, *args))
                if len(queue) >= NOTICE_BATCH:
                    module._ask(None, ())

        else:

            def notice(self: Any, *args: Any) -> None:
                module = self._isolated
                if module._fault is not None:
                    module._raise_fault()
                queue = module._notices
                queue.append((module._now(), name, *encode_args(*args)))
                if len(queue) >= NOTICE_BATCH:
                    module._ask(None, ())

        notice.__name__ = name
        return notice
    encode_question = encode_args or (lambda *args: args)
    decode_answer = DECODE_ANSWER[spec.answer]

    def question(self: Any, *args: Any) -> Any:
        return decode_answer(self._isolated._ask(name, encode_question(*args)), *args)

    question.__name__ = name
    return question


_METHODS = {
    name: _method(spec) for name, spec in (*CALLBACK_TABLE.items(), *LIFECYCLE_SPECS.items())
}


def _proxy_class(module: IsolatedModule) -> type:
    """A subclass of the module's base with a method for each callback it overrides."""
    namespace: dict[str, Any] = {
        "__doc__": module.doc,
        "__module__": __name__,
        "name": module.name,
        "budget_us": module.budget_us,
        "params": types.MappingProxyType(dict(module.defaults)),
        "api_version": module.api_version,
        "isolated": True,
    }
    if module.kind == "gpu":
        namespace["sharing_policy"] = module.sharing_policy
    for name in module.overridden:
        namespace[name] = _METHODS[name]

    def __init__(self: Any, isolated: IsolatedModule) -> None:
        self._isolated = isolated
        self.ctx = ProxyContext(isolated)

    namespace["__init__"] = __init__
    return type(f"Isolated[{module.name}]", (BASES[module.kind],), namespace)
