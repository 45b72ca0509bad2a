"""One LoadGen run against the booted kernel, and the same run under several
policies (`exp/loadgen`): the Python API behind `malv serve --loadgen`.

`serve` boots the system under test (session.py), starts LoadGen (sut.py)
with a watchdog that answers overdue queries (ledger.py), and writes the
results (results.py) into `out` all at once (exp/output.py's results_dir):
LoadGen's own logs, results.json, results.md and the GPU timeline as a
Perfetto trace.json.  `compare` runs it under each policy, each into a
directory of its own, and writes the table of them side by side.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs

from exp.loadgen import results
from exp.loadgen.ledger import Ledger, Watchdog
from exp.loadgen.session import ServingKernel
from exp.loadgen.settings import ServeSettings
from exp.loadgen.sut import import_loadgen, read_summary, respond, run_test
from exp.output import results_dir


@contextmanager
def serving(
    lg: Any, settings: ServeSettings
) -> Iterator[tuple[Ledger, ServingKernel, Callable[[list[tuple[int, int]]], None]]]:
    """A booted realtime kernel as LoadGen's system under test: its ledger,
    the kernel, and the callback that issues LoadGen's samples to it.  The
    kernel stops on the way out, once LoadGen has had every response."""
    ledger = Ledger(respond(lg), settings.timeout_s())
    sut = ServingKernel(settings, ledger)
    try:
        sut.start()

        def issue(samples: list[tuple[int, int]]) -> None:
            records = ledger.issue([(i, settings.model_of(index)) for i, index in samples])
            sut.post(sut.port.deliver, records)

        yield ledger, sut, issue
    finally:
        # LoadGen has had every response (its test returns only then):
        # none may follow, since a response names LoadGen's own memory.
        sut.stop()


def serve(settings: ServeSettings, out: str | Path) -> dict[str, Any]:
    """Run LoadGen against a booted realtime kernel; returns results.json's content."""
    lg = import_loadgen()  # before anything boots: LoadgenMissing says how to install it
    with results_dir(str(out)) as tmp:
        with serving(lg, settings) as (ledger, sut, issue):
            started = time.monotonic()
            with Watchdog(ledger):
                run_test(lg, settings, issue, Path(tmp))
            wall_s = time.monotonic() - started
        data = results.collect(settings, read_summary(Path(tmp)), ledger, sut, wall_s)
        results.write(Path(tmp), data, ledger, sut.trace_events)
    return data


def compare(settings: ServeSettings, policies: tuple[str, ...], out: str | Path) -> dict[str, Any]:
    """The same run under each policy, into out/POLICY; the table in out/results.md."""
    with results_dir(str(out)) as tmp:
        runs = {p: serve(attrs.evolve(settings, policy=p), Path(tmp) / p) for p in policies}
        data = {"compare": list(policies), "runs": runs}
        results.write_comparison(Path(tmp), data)
    return data


#: How close the peak search comes: the highest VALID QPS is within this share of the lowest not.
PEAK_PRECISION = 0.1
#: The search stops doubling here: a target this high that stays VALID is reported as at least it.
PEAK_CEILING_QPS = 2_000.0
#: ... and stops halving here: a policy not VALID even this low has a peak of 0.
PEAK_FLOOR_QPS = 1.0


def find_peak(
    settings: ServeSettings, policies: tuple[str, ...], out: str | Path,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The highest target QPS each policy holds VALID, in the spirit of
    LoadGen's FindPeakPerformance mode: from `settings.qps`, double the
    target until a run is not VALID, then bisect between the last VALID
    target and the first that was not, to within PEAK_PRECISION.  Each run
    goes into out/POLICY/qps-Q; the peaks into out/results.json and .md."""
    say = progress or (lambda line: None)
    with results_dir(str(out)) as tmp:
        peaks: dict[str, Any] = {}
        for policy in policies or (str(settings.policy),):
            tried: dict[str, str] = {}

            def valid(qps: float, policy: str = policy, tried: dict[str, str] = tried) -> bool:
                run = attrs.evolve(settings, policy=policy, qps=round(qps, 3))
                data = serve(run, Path(tmp) / policy / f"qps-{run.qps:g}")
                tried[f"{run.qps:g}"] = data["result"]
                say(f"{policy} at {run.qps:g} QPS: {data['result']}")
                return data["result"] == "VALID"

            held, failed = 0.0, settings.qps
            while failed <= PEAK_CEILING_QPS and valid(failed):
                held, failed = failed, 2 * failed
            while (
                PEAK_FLOOR_QPS <= failed <= PEAK_CEILING_QPS
                and failed - held > PEAK_PRECISION * failed
            ):
                middle = (held + failed) / 2
                if valid(middle):
                    held = middle
                else:
                    failed = middle
            peaks[policy] = {
                "peak_qps": round(held, 3),
                "first_invalid_qps": None if failed > PEAK_CEILING_QPS else round(failed, 3),
                "runs": tried,
            }
        data = {"find_peak": peaks, "settings": attrs.asdict(settings)}
        results.write_peaks(Path(tmp), data)
    return data
