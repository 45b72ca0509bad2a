"""The isolated MLaaS child: one module in its own sandboxed process, and the protocol it speaks.

`kernel.mlaas.isolated` (the kernel's side) starts this file as a script::

    python -P -B .../kernel/mlaas/child.py REQUEST_FD REPLY_FD

and from then on the two processes speak over two pipes, the kernel writing
requests and the child writing replies.  The first half of this file is the
wire protocol, which both sides import; the second half is the child.

**The wire.**  A message is a 4-byte big-endian length and that many bytes of
MessagePack holding *plain values* only: None, bool, int, float, str, and
lists and dicts of them (ints past 64 bits travel as extension type 1).
Nothing that decodes a message can run code.  The kernel's side checks every
message it reads (`FrameReader`): a length past `MAX_MESSAGE_BYTES`, bytes
that are not MessagePack, or a value that is not plain is a `ProtocolError`.

**The conversation** (the kernel asks, the child answers; nothing else)::

    kernel -> child   ["load", {path, params, seed, memory_bytes, cpu_s}]
    child  -> kernel  ["ready", {name, kind, doc, ...}]  or  ["refused", message]
    kernel -> child   ["ask", notices, now_ns, method, args]
    child  -> kernel  ["query", view, method, args]     (any number, each answered by)
    kernel -> child   ["reply", value]  or  ["fail", exception type, message]
    child  -> kernel  ["ok", cpu_ns, answer, logs]  or  ["fault", reason, message, cpu_ns, logs]

`notices` are ``[now_ns, method, *args]`` lists, the callbacks without an
answer queued since the last question; the child runs them before `method`
(None: only the notices).  Log lines ride on the reply, so the child writes
only while the kernel reads.  Task views travel as lists of `TASK_FIELDS`;
other kernel objects (a GPU device, a GPU kernel) as dicts of their plain
attributes.

**The child.**  It imports what it needs, confines itself (`sandbox.apply`)
and only then runs the module's code: its top level, its constructor, its
callbacks.  The `kernel` package is bare here: ``kernel/__init__.py``, the
whole kernel, is not run, so a module reaches ``kernel.mlaas`` and nothing
of the kernel that spawned it.  ``self.ctx`` is an `IsolatedContext`; its
``memory`` and ``sched`` views ask the kernel during a callback.
"""

from __future__ import annotations

import os
import random
import struct
import sys
import threading
import types
from collections import deque
from collections.abc import Iterable, Mapping
from itertools import islice
from time import thread_time_ns
from typing import Any

import msgpack

# ======================================================================
# The wire protocol (both sides)
# ======================================================================

#: The longest message either side accepts.
MAX_MESSAGE_BYTES = 16 << 20
#: The lists and maps one message may decode to.  One byte of msgpack is an
#: empty list, about 56 bytes of Python: a long message of them would cost the
#: reader about 1 GiB.  A message shorter than this many bytes cannot hold
#: more, so only longer ones pay for the count.
MAX_CONTAINERS = 1 << 20
#: The longest int that travels (as extension type 1), in bytes.
MAX_BIGINT_BYTES = 1024
EXT_BIGINT = 1
_HEADER = struct.Struct(">I")
_SCALARS = frozenset({int, float, str, bool, type(None)})

#: A task view on the wire: its attributes, in this order.
TASK_FIELDS = ("pid", "name", "argv", "parent", "created_ns", "cpu_ns", "state", "alive")

#: What a module's views may ask the kernel: view -> method -> number of int arguments.
QUERIES: dict[str, dict[str, int]] = {
    "memory": {
        "nframes": 0, "free_frames": 0, "owner": 1, "referenced": 1, "is_resident": 2,
        "is_swapped": 2, "frame_of": 2, "swapped_pages": 1,
    },
    "sched": {"ncpus": 0, "default_slice_ns": 0, "task": 1, "runnable": 0},
}  # fmt: skip
#: View methods read as attributes (properties in `kernel.mlaas.context`).
VIEW_PROPERTIES = frozenset({"nframes", "free_frames", "ncpus", "default_slice_ns"})

INFERENCE_UNAVAILABLE = "kernel-space inference is not available to isolated modules"


class ProtocolError(Exception):
    """Bytes from the other side that are not the protocol."""


def _pack_bigint(value: Any) -> Any:
    if type(value) is int:  # msgpack asks only for ints past 64 bits
        size = (value.bit_length() + 8) // 8
        if size <= MAX_BIGINT_BYTES:
            return msgpack.ExtType(EXT_BIGINT, value.to_bytes(size, "big", signed=True))
        raise TypeError(f"an int of {size} bytes is too long to send")
    raise TypeError(f"a {type(value).__name__} is not a plain value")


def _unpack_ext(code: int, data: bytes) -> Any:
    if code == EXT_BIGINT and 0 < len(data) <= MAX_BIGINT_BYTES:
        return int.from_bytes(data, "big", signed=True)
    raise ProtocolError(f"extension type {code} of {len(data)} bytes")


def encode(message: Any) -> bytes:
    """One framed message.  TypeError if it holds anything but plain values."""
    payload = msgpack.packb(message, default=_pack_bigint)
    if len(payload) > MAX_MESSAGE_BYTES:
        raise TypeError(f"a message of {len(payload)} bytes is too long to send")
    return _HEADER.pack(len(payload)) + payload


def check_plain(value: Any) -> None:
    """ProtocolError unless `value` is made of plain values only (iterative: no depth limit)."""
    stack = [value]
    while stack:
        v = stack.pop()
        t = type(v)
        if t in _SCALARS:
            continue
        if t is list:
            stack.extend(v)
        elif t is dict:
            stack.extend(v.keys())
            stack.extend(v.values())
        else:
            raise ProtocolError(f"a {t.__name__} is not a plain value")


def _container_counter() -> Any:
    left = [MAX_CONTAINERS]

    def counted(container: Any) -> Any:
        left[0] -= 1
        if left[0] < 0:
            raise ProtocolError(f"a message of more than {MAX_CONTAINERS} lists and maps")
        return container

    return counted


def decode(payload: bytes, *, check: bool = True) -> Any:
    hooks: dict[str, Any] = {}
    if len(payload) > MAX_CONTAINERS:
        counted = _container_counter()
        hooks = {"list_hook": counted, "object_hook": counted}
    try:
        value = msgpack.unpackb(
            payload, raw=False, strict_map_key=False, ext_hook=_unpack_ext, use_list=True, **hooks
        )
    except ProtocolError:
        raise
    except Exception as exc:  # msgpack's errors, bad UTF-8, unhashable keys, ...
        raise ProtocolError(f"undecodable message ({type(exc).__name__}: {exc})") from None
    if check:
        check_plain(value)
    return value


class FrameReader:
    """Splits a byte stream into messages.  `feed` what was read, then take
    messages with `next` until it returns None (no whole message yet)."""

    def __init__(self, *, check: bool = True) -> None:
        self._buffer = bytearray()
        self._check = check

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def next(self) -> Any | None:
        buffer = self._buffer
        if len(buffer) < 4:
            return None
        (size,) = _HEADER.unpack_from(buffer)
        if size > MAX_MESSAGE_BYTES:
            raise ProtocolError(f"a message of {size} bytes (the limit is {MAX_MESSAGE_BYTES})")
        if len(buffer) < 4 + size:
            return None
        payload = bytes(buffer[4 : 4 + size])
        del buffer[: 4 + size]
        return decode(payload, check=self._check)


def plain(value: Any, depth: int = 0) -> Any:
    """`value` as plain values: tuples and sequences become lists, mappings dicts,
    numbers with ``__index__`` ints.  TypeError for anything else."""
    t = type(value)
    if t in _SCALARS:
        return value
    if depth > 64:
        raise TypeError("nested more than 64 deep")
    if t is list or t is tuple:
        return [plain(v, depth + 1) for v in value]
    if isinstance(value, Mapping):
        return {plain(k, depth + 1): plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, float):
        return float(value)
    if hasattr(t, "__index__"):
        return int(value.__index__())
    if isinstance(value, (list, tuple)):
        return [plain(v, depth + 1) for v in value]
    raise TypeError(f"a {t.__name__} is not a plain value")


def short_repr(value: Any, limit: int = 80) -> str:
    try:
        text = repr(value)
    except BaseException:
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ======================================================================
# The child
# ======================================================================

#: Log lines one reply carries at most; past that they are counted and dropped.
MAX_LOG_LINES = 64
#: Items taken from a prefetch answer (the memory binding takes fewer).
MAX_PREFETCH_ITEMS = 1024

_QUERY_ERRORS: dict[str, type[Exception]] = {
    e.__name__: e for e in (IndexError, KeyError, LookupError, ValueError, TypeError)
}


class Channel:
    """The child's end of the pipes: blocking, and trusting the kernel's bytes."""

    def __init__(self, request_fd: int, reply_fd: int) -> None:
        self.request_fd = request_fd
        self.reply_fd = reply_fd
        self.reader = FrameReader(check=False)
        #: Questions that came while a query waited for its reply (see `query`).
        self.pending: deque[Any] = deque()
        self.logs: list[list[Any]] = []
        self.dropped_logs = 0
        self.owner = threading.get_ident()  # the thread that runs callbacks
        self.in_callback = False

    def send(self, message: Any) -> None:
        self.write(encode(message))

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.reply_fd, view) :]

    def receive(self) -> Any:
        """The next request, or None when the kernel closed its end."""
        return self.pending.popleft() if self.pending else self._read()

    def _read(self) -> Any:
        while True:
            message = self.reader.next()
            if message is not None:
                return message
            data = os.read(self.request_fd, 1 << 16)
            if not data:
                return None
            self.reader.feed(data)

    def query(self, view: str, method: str, args: tuple[Any, ...]) -> Any:
        if not self.in_callback or threading.get_ident() != self.owner:
            raise RuntimeError(f"ctx.{view} can only be read in a callback, on its own thread")
        self.send(["query", view, method, list(args)])
        reply = self._read()
        # A question the kernel answered by default (the callback slept past its
        # deadline) is followed by the next; it waits its turn behind this one.
        while reply is not None and reply[0] == "ask":
            self.pending.append(reply)
            reply = self._read()
        if reply is None:
            os._exit(0)
        if reply[0] == "reply":
            return reply[1]
        raise _QUERY_ERRORS.get(reply[1], RuntimeError)(f"{view}.{method}: {reply[2]}")

    def log(self, level: str, event: str, fields: dict[str, Any]) -> None:
        if len(self.logs) >= MAX_LOG_LINES:
            self.dropped_logs += 1
            return
        out: dict[str, Any] = {}
        for key, value in fields.items():
            try:
                out[key] = plain(value)
            except TypeError:
                out[key] = short_repr(value)
        self.logs.append([level, str(event), out])

    def take_logs(self) -> list[list[Any]]:
        logs, self.logs = self.logs, []
        if self.dropped_logs:
            logs.append(["warning", "log lines dropped", {"count": self.dropped_logs}])
            self.dropped_logs = 0
        return logs


class TaskViews:
    """Builds the kernel's own `TaskView` values (`kernel.mlaas.context`) from the
    fields on the wire, so an isolated sched advisor sees the very type, and the
    same values, as an in-process one."""

    def __init__(self) -> None:
        from kernel.mlaas.context import TaskView

        self.cls = TaskView

    def view(self, f: list[Any]) -> Any:
        return self.cls(f[0], f[1], tuple(f[2]), f[3], f[4], f[5], f[6], f[7])


class Snapshot:
    """A copy of a kernel object's plain attributes (a GPU device, a GPU kernel)."""

    def __init__(self, fields: Mapping[str, Any]) -> None:
        for key, value in fields.items():
            if type(key) is str and key.isidentifier():
                object.__setattr__(self, key, value)

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"Snapshot({inner})"


class RemoteView:
    """`MemoryView` or `SchedView`, its methods asked of the kernel during a callback."""

    def __init__(self, channel: Channel, view: str, tasks: TaskViews) -> None:
        self._channel = channel
        self._view = view
        self._tasks = tasks

    def __getattr__(self, method: str) -> Any:
        arity = QUERIES[self._view].get(method) if not method.startswith("_") else None
        if arity is None:
            raise AttributeError(f"the {self._view} view has no {method!r}")
        if method in VIEW_PROPERTIES:
            return self._ask(method, ())

        def ask(*args: Any) -> Any:
            return self._ask(method, args)

        ask.__name__ = method
        return ask

    def _ask(self, method: str, args: tuple[Any, ...]) -> Any:
        value = self._channel.query(self._view, method, args)
        if method == "owner":
            return None if value is None else tuple(value)
        if method == "task":
            return None if value is None else self._tasks.view(value)
        if method == "runnable":
            return [self._tasks.view(f) for f in value]
        return value


class ModuleLog:
    """``ctx.log``: lines go to the kernel's dmesg with the reply they were logged before."""

    def __init__(self, channel: Channel) -> None:
        self._channel = channel

    def info(self, event: str, **fields: Any) -> None:
        self._channel.log("info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._channel.log("warning", event, fields)


class IsolatedContext:
    """``self.ctx`` of an isolated advisor: what `AdvisorContext` offers, less inference."""

    def __init__(
        self,
        channel: Channel,
        tasks: TaskViews,
        *,
        name: str,
        kind: str,
        params: Mapping[str, Any],
        seed: str,
    ) -> None:
        self.name = name
        self.kind = kind
        self.params: Mapping[str, Any] = types.MappingProxyType(dict(params))
        self.rng = random.Random(f"{seed}:{name}")  # the in-process seeding (context.py)
        self.log = ModuleLog(channel)
        self.now_ns = 0  # virtual time, set before every callback
        self.memory = RemoteView(channel, "memory", tasks) if kind == "memory" else None
        self.sched = RemoteView(channel, "sched", tasks) if kind == "sched" else None

    @property
    def features(self) -> Any:
        raise RuntimeError(INFERENCE_UNAVAILABLE)

    def model(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(INFERENCE_UNAVAILABLE)

    def load_weights(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(INFERENCE_UNAVAILABLE)

    def infer(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(INFERENCE_UNAVAILABLE)


class CallbackFault(Exception):
    """A callback failed; `reason` is an `IsolatedFault` reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


#: How each argument kind of the callback table (`advisors.ARG_KINDS`) is
#: rebuilt from the wire; the kernel encodes it by the same name
#: (`isolated.ENCODE_ARG`).
REBUILD_ARG: dict[str, Any] = {
    "plain": lambda value, tasks: value,
    "frames": lambda value, tasks: value,
    "task": lambda value, tasks: tasks.view(value),
    "tasks": lambda value, tasks: [tasks.view(f) for f in value],
    "contexts": lambda value, tasks: [c if type(c) is int else Snapshot(c) for c in value],
    "device": lambda value, tasks: Snapshot(value),
    "state": lambda value, tasks: value,
}


def _task_answer(method: str, answer: Any, tasks: TaskViews) -> Any:
    if type(answer) is tasks.cls:
        return answer.pid
    raise CallbackFault("invalid", f"{method} returned {short_repr(answer)}, not a task")


def _pages_answer(method: str, answer: Any, tasks: TaskViews) -> Any:
    if isinstance(answer, (str, bytes, dict)) or not isinstance(answer, Iterable):
        raise CallbackFault(
            "invalid", f"{method} returned {short_repr(answer)}, not a list of pages"
        )
    return list(islice(answer, MAX_PREFETCH_ITEMS))


#: How each answer kind (`advisors.ANSWER_KINDS`) is put on the wire, before `plain`.
ENCODE_ANSWER: dict[str, Any] = {
    "plain": lambda method, answer, tasks: answer,
    "task": _task_answer,
    "pages": _pages_answer,
}


def _rebuilder(method: str) -> Any:
    """The call's argument rebuilder from its row, or None where every argument is plain."""
    from kernel.mlaas.advisors import spec_of

    kinds = spec_of(method).args
    if all(kind == "plain" for kind in kinds):
        return None
    rebuilders = tuple(REBUILD_ARG[kind] for kind in kinds)
    return lambda args, tasks: tuple(r(a, tasks) for r, a in zip(rebuilders, args, strict=True))


def _answer_encoder(method: str) -> Any:
    from kernel.mlaas.advisors import spec_of

    return ENCODE_ANSWER[spec_of(method).answer]


def _wire_answer(method: str, answer: Any, tasks: TaskViews) -> Any:
    """The callback's answer for the wire; CallbackFault("invalid") if it has none."""
    if answer is None:
        return None
    answer = _answer_encoder(method)(method, answer, tasks)
    try:
        return plain(answer)
    except TypeError as exc:
        raise CallbackFault(
            "invalid", f"{method} returned {short_repr(answer)}, which is not plain data ({exc})"
        ) from None


def _failure(method: str, exc: BaseException) -> CallbackFault:
    from kernel.mlaas.faults import describe

    if isinstance(exc, CallbackFault):
        return exc
    try:
        text = describe(exc)
    except BaseException:
        text = type(exc).__name__
    if isinstance(exc, MemoryError):
        return CallbackFault("memory", f"{method} ran out of memory ({text})")
    return CallbackFault("raised", f"{method} raised {text}")


class Server:
    """Answers the kernel's questions with one loaded advisor."""

    def __init__(self, channel: Channel, advisor: Any, ctx: IsolatedContext, tasks: TaskViews):
        self.channel = channel
        self.advisor = advisor
        self.ctx = ctx
        self.tasks = tasks
        self._rebuilders: dict[str, Any] = {}

    def _rebuild(self, method: str) -> Any:
        """The method's rebuilder, derived from its row once (the kernel names
        only methods the module overrides, all of them in the table)."""
        try:
            return self._rebuilders[method]
        except KeyError:
            rebuild = self._rebuilders[method] = _rebuilder(method)
            return rebuild

    def serve(self) -> None:
        while True:
            message = self.channel.receive()
            if message is None or message[0] != "ask":
                return
            _, notices, now_ns, method, args = message
            cpu_ns = 0  # what one callback of this exchange used: a budget is per callback
            try:
                if notices:
                    cpu_ns = self._notices(notices) // len(notices)
                answer = None
                if method is not None:
                    answer, spent = self._question(method, args, now_ns)
                    cpu_ns = max(cpu_ns, spent)
                reply = encode(["ok", cpu_ns, answer, self.channel.take_logs()])
            except CallbackFault as fault:
                reply = encode(
                    ["fault", fault.reason, fault.message, cpu_ns, self.channel.take_logs()]
                )
            except TypeError as exc:  # the answer does not fit on the wire
                reply = encode(
                    ["fault", "invalid", f"{method}'s answer cannot be sent: {exc}", cpu_ns, []]
                )
            self.channel.write(reply)

    def _notices(self, notices: list[list[Any]]) -> int:
        """Run queued notices, each ``[now_ns, method, *args]``.  Their CPU time is
        measured around the batch: one thread-clock read costs as much as a
        small callback."""
        if not notices:
            return 0
        channel, ctx, advisor, tasks = self.channel, self.ctx, self.advisor, self.tasks
        t0 = thread_time_ns()
        method = "notice"
        try:
            channel.in_callback = True
            for notice in notices:
                ctx.now_ns = notice[0]
                method = notice[1]
                rebuild = self._rebuild(method)
                if rebuild is None:
                    getattr(advisor, method)(*notice[2:])
                else:
                    getattr(advisor, method)(*rebuild(notice[2:], tasks))
        except BaseException as exc:
            raise _failure(method, exc) from None
        finally:
            channel.in_callback = False
        return thread_time_ns() - t0

    def _question(self, method: str, args: list[Any], now_ns: int) -> tuple[Any, int]:
        channel = self.channel
        self.ctx.now_ns = now_ns
        rebuild = self._rebuild(method)
        call_args = tuple(args) if rebuild is None else rebuild(args, self.tasks)
        fn = getattr(self.advisor, method)
        channel.in_callback = True
        t0 = thread_time_ns()
        try:
            answer = fn(*call_args)
        except BaseException as exc:
            raise _failure(method, exc) from None
        finally:
            spent = thread_time_ns() - t0
            channel.in_callback = False
        try:
            return _wire_answer(method, answer, self.tasks), spent
        except BaseException as exc:  # the answer's own code (__iter__, __index__, ...) failed
            raise _failure(method, exc) from None


def _run_loading(fn: Any, *args: Any) -> Any:
    """Module code run while loading; what it raises is a refusal (as in `Mlaas._run_loading`)."""
    from kernel.mlaas.faults import ModuleError, describe

    try:
        return fn(*args)
    except ModuleError:
        raise
    except BaseException as exc:
        raise ModuleError(
            f"{getattr(fn, '__qualname__', 'loading')} raised {describe(exc)}"
        ) from None


def _readable(module_path: str) -> set[str]:
    """What the sandbox lets the module read: the module's directory, the kernel
    package, and the directories Python imports from."""
    kernel_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    source_root = os.path.dirname(kernel_dir)
    paths = {
        module_path if os.path.isdir(module_path) else os.path.dirname(module_path),
        kernel_dir,
        os.path.dirname(os.__file__),  # the standard library
        # shared libraries that extension modules load
        "/lib", "/lib64", "/usr/lib", "/usr/lib64", "/etc/ld.so.cache",
    }  # fmt: skip
    for entry in sys.path:
        entry = os.path.abspath(entry or ".")
        # The source tree that holds the kernel is not for modules to read, bar `kernel/`.
        if os.path.isdir(entry) and entry != source_root:
            paths.add(entry)
    return paths


def _load(config: Mapping[str, Any], channel: Channel) -> tuple[Server, dict[str, Any]]:
    """Sandbox this process, then load, validate and construct the module."""
    from kernel.mlaas import loader, sandbox
    from kernel.mlaas.advisors import BASES, CALLBACKS, LIFECYCLE, overrides
    from kernel.mlaas.faults import ModuleError

    path = config["path"]
    try:
        sandbox.apply(
            memory_bytes=config["memory_bytes"],
            cpu_s=config["cpu_s"],
            readable=_readable(path),
        )
    except sandbox.SandboxError as exc:
        raise ModuleError(f"the sandbox could not be applied: {exc}") from None
    # From here on, module code runs.
    loaded = loader.load(path, _run_loading)
    cls, kind = loaded.cls, loaded.kind
    params = loader.convert_params(loaded, config["params"])
    advisor = _run_loading(cls)
    tasks = TaskViews()
    ctx = IsolatedContext(
        channel, tasks, name=loaded.name, kind=kind, params=params, seed=config["seed"]
    )
    advisor.ctx = ctx
    sharing = getattr(cls, "sharing_policy", None) if kind == "gpu" else None
    if sharing is not None and type(sharing) is not str:
        raise ModuleError(f"sharing_policy must be a policy name (a str) or None, got {sharing!r}")
    base = BASES[kind]
    info = {
        "name": loaded.name,
        "kind": kind,
        "doc": loaded.doc,
        "budget_us": loaded.budget_us,
        "defaults": loaded.defaults,
        "params": params,
        "sharing_policy": sharing,
        "api_version": loaded.api_version,
        "overridden": [n for n in CALLBACKS[kind] + LIFECYCLE if overrides(cls, base, n)],
    }
    return Server(channel, advisor, ctx, tasks), info


def main(argv: list[str]) -> int:
    from kernel.mlaas import sandbox
    from kernel.mlaas.faults import ModuleError

    channel = Channel(int(argv[0]), int(argv[1]))
    sandbox.die_with_parent()
    config = channel.receive()
    if config is None or config[0] != "load":
        return 2
    try:
        server, info = _load(config[1], channel)
    except ModuleError as exc:
        channel.send(["refused", str(exc.args[0]) if exc.args else "refused"])
        return 1
    except BaseException as exc:  # the module broke the loader itself (monkey-patching, ...)
        channel.send(["refused", f"loading failed: {type(exc).__name__}: {short_repr(exc, 200)}"])
        return 1
    channel.send(["ready", info])
    server.serve()
    return 0


def _bare_kernel_package() -> None:
    """Make ``kernel`` a bare package: its submodules import, its ``__init__``
    (which loads the whole kernel) does not run."""
    kernel_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    package = types.ModuleType("kernel", "malvos's kernel package, bare: only its submodules.")
    package.__path__ = [kernel_dir]
    package.__package__ = "kernel"
    sys.modules["kernel"] = package


if __name__ == "__main__":
    _bare_kernel_package()
    from kernel.mlaas.child import main as _main

    code = _main(sys.argv[1:])
    # No interpreter shutdown: a module's atexit handlers and __del__ have nothing to say.
    sys.stdout.flush()
    os._exit(code)
