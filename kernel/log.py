"""The kernel log (dmesg), built on structlog.

Every event carries virtual time, a subsystem, and the task (or VM) it is
about.  Events go to a ring buffer that `dmesg` reads.  They render either
for people (``[    0.001200] sched: task exited  task=sh code=0``) or, with
``--log-format json``, as one JSON object per line for machines.

The log is off the hot path: traps and dispatches are not logged, only the
events a person would want to see (boot, spawn, exit, faults, module loads).

What a module logs (``ctx.log``, in-process or isolated) enters through one
door, `KernelLog.module`, and is untrusted there: it is converted to plain,
bounded values with every unprintable character escaped (`printable`,
`plain_value`), it cannot set the kernel's own fields, and each module has a
quota per window of virtual time and a share of the ring.  The console
renderer escapes every record's text as well, so nothing written to a
terminal carries a control sequence.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import structlog

from kernel.text import MAX_KEY_CHARS, plain_fields, printable

FORMATS = ("console", "json")
_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}

#: A module's records per window of virtual time; past that they are counted,
#: and one "log records dropped" line says how many when the module next logs
#: in a later window.  Virtual time, so that a seeded run logs the same lines
#: on any host.
MODULE_RECORDS_PER_WINDOW = 64
MODULE_WINDOW_NS = 100_000_000
#: A module's records fill at most this part of the ring (a quarter of the
#: default 4096 records); past it, its newest records replace its oldest, and
#: the kernel's own records stay.
MODULE_RING_SHARE = 0.25


def _shown(value: Any) -> str:
    """A field's value in a console line: its text, with control characters escaped."""
    return printable(value if type(value) is str else str(value), None)


# -- the log ----------------------------------------------------------------------------


class _Sink:
    """structlog's final logger: the processors already stored the event."""

    def msg(self, event: Any) -> None:
        pass

    debug = info = warning = error = critical = msg


class _ModuleQuota:
    """One module's use of the log: its current window and its records in the ring."""

    __slots__ = ("window", "in_window", "dropped", "in_ring")

    def __init__(self) -> None:
        self.window = -1
        self.in_window = 0
        self.dropped = 0
        self.in_ring = 0


class KernelLog:
    def __init__(
        self,
        clock: Callable[[], int],
        fmt: str = "console",
        capacity: int = 4096,
        kernel_name: str = "",
    ) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"unknown log format {fmt!r}; choose one of {', '.join(FORMATS)}")
        self.fmt = fmt
        self.kernel_name = kernel_name
        #: Console lines start with the kernel's name (a hypervisor's guests
        #: set it, so that a VM's lines say whose they are).  JSON records
        #: always carry it.
        self.name_in_lines = False
        self._clock = clock
        self.ring: deque[dict[str, Any]] = deque(maxlen=capacity)
        #: The module each record in `ring` came from (None: the kernel's own).
        self._owners: deque[str | None] = deque(maxlen=capacity)
        self._quotas: dict[str, _ModuleQuota] = {}
        self.module_share = max(1, int(capacity * MODULE_RING_SHARE))
        self.echo: Callable[[str], None] | None = None  # console echo while booting
        self.echo_level = _LEVELS["info"]
        self._json = structlog.processors.JSONRenderer(sort_keys=False)
        self._logger = structlog.wrap_logger(
            _Sink(),
            processors=[structlog.processors.add_log_level, self._stamp],
            context_class=dict,
            cache_logger_on_first_use=True,
        )

    def _stamp(self, _logger: Any, _method: str, event: Any) -> str:
        self._store(event.pop("subsystem", "kernel"), event, None)
        return ""  # the record is stored; the sink needs nothing

    def _store(self, subsystem: str, event: dict[str, Any], owner: str | None) -> None:
        record: dict[str, Any] = {"t_ns": self._clock(), "subsystem": subsystem}
        if self.kernel_name:
            record["kernel"] = self.kernel_name
        for key, value in event.items():
            # Kernel records quote module text too (an exit report, a refused
            # insmod): every string is stored printable, so a JSON reader gets
            # no control character back either.
            if type(value) is str and not value.isprintable():
                value = printable(value, None)
            if type(key) is str and not key.isprintable():
                key = printable(key, MAX_KEY_CHARS)
            record.setdefault(key, value)  # the kernel's time and name stand
        if owner is not None:
            quota = self._quotas[owner]
            if quota.in_ring >= self.module_share:  # its newest replace its oldest
                index = self._owners.index(owner)
                del self._owners[index]
                del self.ring[index]
                quota.in_ring -= 1
            quota.in_ring += 1
        if len(self.ring) == self.ring.maxlen and self._owners[0] is not None:
            self._quotas[self._owners[0]].in_ring -= 1  # falls out of the ring now
        self.ring.append(record)
        self._owners.append(owner)
        if (
            self.echo is not None
            and _LEVELS.get(record.get("level", "info"), 20) >= self.echo_level
        ):
            self.echo(self.render(record) + "\n")

    # -- emitting -------------------------------------------------------------------

    def info(self, subsystem: str, event: str, **fields: Any) -> None:
        self._logger.info(event, subsystem=subsystem, **fields)

    def warning(self, subsystem: str, event: str, **fields: Any) -> None:
        self._logger.warning(event, subsystem=subsystem, **fields)

    def error(self, subsystem: str, event: str, **fields: Any) -> None:
        self._logger.error(event, subsystem=subsystem, **fields)

    def module(self, name: str, level: str, event: Any, fields: Mapping[Any, Any]) -> None:
        """A record from module `name` (``ctx.log``): the one door for what a
        module says, in-process or isolated.  Converted by `plain_fields`,
        under the module's quota (see `MODULE_RECORDS_PER_WINDOW`)."""
        quota = self._quotas.get(name)
        if quota is None:
            quota = self._quotas[name] = _ModuleQuota()
        window = self._clock() // MODULE_WINDOW_NS
        if window != quota.window:
            quota.window, quota.in_window = window, 0
            if quota.dropped:
                self._store(
                    "mlaas",
                    {"event": "log records dropped", "level": "warning", "module": name,
                     "count": quota.dropped},
                    name,
                )  # fmt: skip
                quota.dropped = 0
        if quota.in_window >= MODULE_RECORDS_PER_WINDOW:
            quota.dropped += 1
            return
        quota.in_window += 1
        text, plain = plain_fields(event, fields)
        level = "warning" if level == "warning" else "info"
        self._store("mlaas", {"event": text, "level": level, "module": name, **plain}, name)

    # -- reading ----------------------------------------------------------------------

    def render(self, record: dict[str, Any]) -> str:
        if self.fmt == "json":
            return str(self._json(None, "", dict(record)))
        t = record["t_ns"] / 1e9
        extra = "  ".join(
            f"{_shown(k)}={_shown(v)}"
            for k, v in record.items()
            if k not in ("t_ns", "subsystem", "event", "level", "kernel")
        )
        level = record.get("level", "info")
        mark = "" if level == "info" else f"{_shown(level).upper()}: "
        who = f"{_shown(record['kernel'])}/" if self.name_in_lines and record.get("kernel") else ""
        line = f"[{t:12.6f}] {who}{_shown(record['subsystem'])}: {mark}{_shown(record['event'])}"
        return f"{line}  {extra}" if extra else line

    def lines(self) -> list[str]:
        return [self.render(r) for r in self.ring]

    def records(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.ring]

    def find(self, event: str) -> list[dict[str, Any]]:
        return [dict(r) for r in self.ring if r.get("event") == event]
