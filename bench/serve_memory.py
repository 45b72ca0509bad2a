"""`malv bench serve-memory`: the host's memory while `malv serve` runs for a long time.

The run is `malv serve --loadgen Server` at 20 queries/s with its defaults
(the inference server, LithOS, the GPU trace on), in this process, built
from the same pieces `serve` is (exp/loadgen/run.py), for `seconds` of
LoadGen's run (default 600; `--quick` 20; `malv bench --duration S`).  A
thread reads the process's resident set (VmRSS, /proc/self/status) every
half second.  The figures: the resident set after the first minute (the
first third of a run shorter than three minutes), at the end of LoadGen's
run (before the kernel stops and the trace is taken), and the growth
between the two, against the design's target of at most 30 MB (the booted
vGPU driver holds the work in flight, not the run's past:
drivers/vgpu/server.py, "Kernel ids and memory"); and the queries issued
and served per second.
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

from bench.report import Figure
from exp.loadgen.ledger import Watchdog
from exp.loadgen.run import serving
from exp.loadgen.settings import ServeSettings
from exp.loadgen.sut import import_loadgen, run_test

QPS = 20.0
SAMPLE_S = 0.5
TARGET_MB = 30
FIRST_MINUTE_S = 60.0


def rss_mb() -> float:
    """This process's resident set, in MB (MiB)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise OSError("no VmRSS in /proc/self/status")


class RssSampler:
    """Samples the resident set every `period_s` on a thread of its own."""

    def __init__(self, period_s: float = SAMPLE_S) -> None:
        self.period_s = period_s
        self.samples: list[tuple[float, float]] = []  # (seconds since start, MB)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._start = 0.0

    def __enter__(self) -> RssSampler:
        self._start = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append((time.monotonic() - self._start, rss_mb()))

    def _run(self) -> None:
        while True:
            self.samples.append((time.monotonic() - self._start, rss_mb()))
            if self._stop.wait(self.period_s):
                return

    def at(self, seconds: float) -> float:
        """The first sample taken `seconds` or more after the start (else the last)."""
        return next((mb for t, mb in self.samples if t >= seconds), self.samples[-1][1])


def serve_and_sample(settings: ServeSettings) -> tuple[RssSampler, dict]:
    """`malv serve`'s run (as exp/loadgen/run.py's `serve`, without writing
    results), sampled from LoadGen's start to its end; the sampler and the
    ledger's counts of queries (issued, served, ...)."""
    lg = import_loadgen()
    with serving(lg, settings) as (ledger, _sut, issue):
        with tempfile.TemporaryDirectory() as tmp, RssSampler() as sampler, Watchdog(ledger):
            run_test(lg, settings, issue, Path(tmp))
    return sampler, ledger.summary()


def run(quick: bool = False, seconds: float | None = None) -> list[Figure]:
    """`seconds`: how long LoadGen runs (default 600, quick 20)."""
    seconds = seconds or (20.0 if quick else 600.0)
    settings = ServeSettings(scenario="Server", qps=QPS, min_duration_s=seconds, min_queries=1)
    sampler, queries = serve_and_sample(settings)
    duration_s = sampler.samples[-1][0]
    first_s = FIRST_MINUTE_S if seconds >= 3 * FIRST_MINUTE_S else seconds / 3
    first, end = sampler.at(first_s), sampler.samples[-1][1]
    label = "first minute" if first_s == FIRST_MINUTE_S else "first third"
    return [
        Figure(f"serve_memory.rss_after_{label.replace(' ', '_')}", first, "MB"),
        Figure("serve_memory.rss_at_end", end, "MB"),
        Figure(
            f"serve_memory.growth_after_{label.replace(' ', '_')}",
            end - first,
            "MB",
            target=f"<= {TARGET_MB}",
        ),  # fmt: skip
        Figure("serve_memory.duration", duration_s, "s"),
        Figure("serve_memory.issued_per_s", queries["issued"] / duration_s, "queries/s"),
        # Served in time; a host too loaded to keep up fails some (they time out).
        Figure("serve_memory.served_per_s", queries["served"] / duration_s, "queries/s"),
    ]
