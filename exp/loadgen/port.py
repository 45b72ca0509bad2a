"""The queries device: how LoadGen's queries reach the inference server inside the kernel.

The device is the seL4 driver model turned around: the server maps it
(`MapDevice`) and waits on its interrupt (`irq`, a notification); the host
side queues queries on it and raises the interrupt.  Everything here runs on
the kernel thread: LoadGen's thread only posts `deliver` onto the realtime
loop (`call_soon_threadsafe`, which wakes the loop at once), so the queue
needs no lock.  Answers go to the ledger, which responds to LoadGen.

The port also watches its server: once the server task is gone, every query
it held and every later one is answered as failed, at once.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

from exp.loadgen.ledger import OK, Ledger, QueryRecord
from kernel.ipc import Notification


class QueryPort:
    """The device: queries waiting for the server, those it serves, and its interrupt."""

    def __init__(self, kernel: Any, ledger: Ledger) -> None:
        self.kernel = kernel
        self.ledger = ledger
        self.irq = Notification()
        self.queue: deque[QueryRecord] = deque()
        self.serving: dict[int, QueryRecord] = {}  # taken by the server, not yet answered
        self.server_pid = 0
        self.models: tuple[str, ...] = ()
        self.is_ready = threading.Event()  # the server has loaded its models
        self.down: str | None = None  # why the server is gone

    # -- the host side (on the kernel thread) ---------------------------------

    def deliver(self, records: list[QueryRecord]) -> None:
        """Queries from LoadGen: queue them and interrupt the server."""
        now = self.kernel.loop.now_ns
        for record in records:
            record.delivered_ns = now
        if self.down is not None:
            for record in records:
                self.ledger.finish(record, self.down)
            return
        self.queue.extend(records)
        for _ in records:  # each wakes one of the server's streams that waits
            self.kernel.raise_irq(self.irq, 1)

    def check_server(self) -> None:
        """Fail what the server held if it is gone (killed, crashed or exited)."""
        if self.down is not None or not self.server_pid or self.server_pid in self.kernel.tasks:
            return
        code = self.kernel.exit_codes.get(self.server_pid)
        self.down = f"server exited (status {code})" if code is not None else "server exited"
        for record in [*self.serving.values(), *self.queue]:
            self.ledger.finish(record, self.down)
        self.queue.clear()
        self.serving.clear()
        self.is_ready.set()  # nobody waits for a server that is gone

    # -- the device's registers, as the server sees them ------------------------

    def ready(self, models: tuple[str, ...]) -> None:
        self.models = models
        self.is_ready.set()

    def take(self) -> QueryRecord | None:
        """The next query still waiting for an answer (timed-out ones are skipped)."""
        while self.queue:
            record = self.queue.popleft()
            if record.outcome is None:
                self.serving[record.query_id] = record
                return record
        return None

    def complete(self, record: QueryRecord, done_ns: int) -> None:
        self.serving.pop(record.query_id, None)
        self.ledger.finish(record, OK, done_ns)

    def fail(self, record: QueryRecord, reason: str) -> None:
        self.serving.pop(record.query_id, None)
        self.ledger.finish(record, reason)
