"""The kernel log (dmesg), built on structlog.

Every event carries virtual time, a subsystem, and the task (or VM) it is
about.  Events go to a ring buffer that `dmesg` reads.  They render either
for people (``[    0.001200] sched: task exited  task=sh code=0``) or, with
``--log-format json``, as one JSON object per line for machines.

The log is off the hot path: traps and dispatches are not logged, only the
events a person would want to see (boot, spawn, exit, faults, module loads).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

import structlog

FORMATS = ("console", "json")
_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}


class _Sink:
    """structlog's final logger: the processors already stored the event."""

    def msg(self, event: Any) -> None:
        pass

    debug = info = warning = error = critical = msg


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
        record = {"t_ns": self._clock(), "subsystem": event.pop("subsystem", "kernel")}
        if self.kernel_name:
            record["kernel"] = self.kernel_name
        record.update(event)
        self.ring.append(record)
        if (
            self.echo is not None
            and _LEVELS.get(record.get("level", "info"), 20) >= self.echo_level
        ):
            self.echo(self.render(record) + "\n")
        return ""  # the record is stored; the sink needs nothing

    # -- emitting -------------------------------------------------------------------

    def info(self, subsystem: str, event: str, **fields: Any) -> None:
        self._logger.info(event, subsystem=subsystem, **fields)

    def warning(self, subsystem: str, event: str, **fields: Any) -> None:
        self._logger.warning(event, subsystem=subsystem, **fields)

    def error(self, subsystem: str, event: str, **fields: Any) -> None:
        self._logger.error(event, subsystem=subsystem, **fields)

    # -- reading ----------------------------------------------------------------------

    def render(self, record: dict[str, Any]) -> str:
        if self.fmt == "json":
            return str(self._json(None, "", dict(record)))
        t = record["t_ns"] / 1e9
        extra = "  ".join(
            f"{k}={v}"
            for k, v in record.items()
            if k not in ("t_ns", "subsystem", "event", "level", "kernel")
        )
        level = record.get("level", "info")
        mark = "" if level == "info" else f"{level.upper()}: "
        who = f"{record['kernel']}/" if self.name_in_lines and record.get("kernel") else ""
        line = f"[{t:12.6f}] {who}{record['subsystem']}: {mark}{record['event']}"
        return f"{line}  {extra}" if extra else line

    def lines(self) -> list[str]:
        return [self.render(r) for r in self.ring]

    def records(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.ring]

    def find(self, event: str) -> list[dict[str, Any]]:
        return [dict(r) for r in self.ring if r.get("event") == event]
