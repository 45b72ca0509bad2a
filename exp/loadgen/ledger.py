"""Every query LoadGen issued, and the one response it gets (`exp/loadgen`).

LoadGen waits, at the end of a test, for a response to every query it
issued, so a query left unanswered would hang the run.  The ledger is the
one place responses leave from: `finish` answers a query once, from
whichever thread saw its outcome first (the kernel thread when the server
completed it or could not serve it, the watchdog when it timed out), and
records the outcome for results.json.  It is the only object both threads
touch, under its lock.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import attrs

OK = "ok"
TIMEOUT = "timed out"


@attrs.define
class QueryRecord:
    """One query: when LoadGen issued it (wall clock), and how it ended."""

    query_id: int
    model: str
    issued_s: float
    deadline_s: float
    finished_s: float | None = None
    outcome: str | None = None  # OK, or why it failed
    delivered_ns: int | None = None  # virtual time the kernel got it
    done_ns: int | None = None  # virtual time its model's last kernel completed


class Ledger:
    """The queries of one run.  `respond(query_ids)` is LoadGen's
    QuerySamplesComplete; it is called with no lock held."""

    def __init__(self, respond: Callable[[list[int]], None], timeout_s: float) -> None:
        self.respond = respond
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self.records: dict[int, QueryRecord] = {}

    def issue(self, samples: list[tuple[int, str]]) -> list[QueryRecord]:
        """LoadGen issued these (query id, model) samples: record them."""
        now = time.monotonic()
        records = [QueryRecord(qid, model, now, now + self.timeout_s) for qid, model in samples]
        with self._lock:
            for record in records:
                self.records[record.query_id] = record
        return records

    def finish(self, record: QueryRecord, outcome: str, done_ns: int | None = None) -> bool:
        """Answer a query with `outcome`, unless it was answered already."""
        with self._lock:
            if record.outcome is not None:
                return False
            record.outcome, record.finished_s, record.done_ns = outcome, time.monotonic(), done_ns
        self.respond([record.query_id])
        return True

    def expire(self, now_s: float | None = None) -> int:
        """Answer, as timed out, every open query past its deadline; returns how many."""
        now_s = time.monotonic() if now_s is None else now_s
        with self._lock:
            overdue = [
                r for r in self.records.values() if r.outcome is None and r.deadline_s <= now_s
            ]
        return sum(self.finish(record, TIMEOUT) for record in overdue)

    def summary(self) -> dict[str, Any]:
        """Counts of issued, answered, served and failed queries, failures by
        reason, and each failed query: its place in issue order, its model,
        why it failed and how long after its issue (ms)."""
        with self._lock:
            records = list(self.records.values())
        failures = Counter(r.outcome for r in records if r.outcome not in (None, OK))
        failed = [
            {"query": n, "model": r.model, "reason": r.outcome,
             "after_ms": round(((r.finished_s or r.issued_s) - r.issued_s) * 1e3, 3)}
            for n, r in enumerate(records)
            if r.outcome not in (None, OK)
        ]  # fmt: skip
        return {
            "issued": len(records),
            "answered": sum(r.outcome is not None for r in records),
            "served": sum(r.outcome == OK for r in records),
            "failed": sum(failures.values()),
            "failures": dict(sorted(failures.items())),
            "failed_queries": failed,
        }


class Watchdog:
    """A thread that times out overdue queries, so a stuck kernel cannot hang LoadGen."""

    def __init__(self, ledger: Ledger, period_s: float = 0.05) -> None:
        self.ledger = ledger
        self.period_s = period_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="loadgen-watchdog", daemon=True)

    def __enter__(self) -> Watchdog:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            self.ledger.expire()
