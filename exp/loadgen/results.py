"""What a `malv serve --loadgen` run writes beside LoadGen's own logs (`exp/loadgen`).

* ``results.json``: LoadGen's verdict (VALID/INVALID), throughput and
  latency percentiles as its summary reports them, in ms; whether the
  latency bound was met; every query's outcome (served, or failed and why);
  the server's latencies in virtual time; and the realtime lag.
* ``results.md``: the same as a table.
* ``trace.json``: the vGPU's timeline during the run (one track per GPU
  context, a slice per kernel), with each query as a slice from the kernel
  receiving it to its model's last kernel completing, in virtual time;
  Perfetto and chrome://tracing open it.

Unlike the seeded experiments' results, these are wall-clock measurements:
they vary from run to run and with the host's load.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from exp.loadgen.ledger import OK, Ledger
from exp.loadgen.settings import ServeSettings
from exp.output import markdown_table, write_json, write_markdown

QUERIES_PID = 3  # the trace's process of queries (the kernel's CPUs are 1, the GPU 2)
PERCENTILES = (50, 90, 99)


def collect(
    settings: ServeSettings, summary: dict[str, Any], ledger: Ledger, sut: Any, wall_s: float
) -> dict[str, Any]:
    queries = ledger.summary()
    served = [r for r in ledger.records.values() if r.outcome == OK and r.done_ns is not None]
    virtual_ms = np.array([(r.done_ns - r.delivered_ns) / 1e6 for r in served])
    bound_key = f"p{settings.latency_percentile:g}"
    # Offline has no latency bound: LoadGen measures its throughput only.
    measured = None if settings.scenario == "Offline" else summary["latency_ms"].get(bound_key)
    failed = queries["failed"]
    return {
        "settings": attrs.asdict(settings),
        # LoadGen counts a failed query's response like any other: a run
        # with failures is not VALID here, whatever LoadGen says.
        "result": summary["result"] if not failed else f"INVALID ({failed} failed)",
        "loadgen": summary,
        "latency_bound_ms": settings.latency_bound_ms,
        "latency_percentile": settings.latency_percentile,
        "latency_bound_met": None if measured is None else measured <= settings.latency_bound_ms,
        "queries": queries,
        "server_virtual_latency_ms": {
            "samples": len(virtual_ms),
            **{
                f"p{p}": float(np.percentile(virtual_ms, p)) for p in PERCENTILES if len(virtual_ms)
            },
        },
        "realtime_lag": sut.lag.report(),
        "server": sut.port.down or "up",
        "server_models": list(sut.port.models),
        "wall_s": wall_s,
    }


def row(label: str, data: dict[str, Any]) -> list[Any]:
    lg, queries, lag = data["loadgen"], data["queries"], data["realtime_lag"]
    latency, virtual = lg["latency_ms"], data["server_virtual_latency_ms"]
    met = {True: "met", False: "missed", None: "-"}[data["latency_bound_met"]]
    bound = f"{data['latency_bound_ms']:g} ms at p{data['latency_percentile']:g}"
    return [
        label, data["result"],
        *(latency.get(f"p{p}", float("nan")) for p in PERCENTILES),
        "-" if lg["throughput"] is None else lg["throughput"], f"{met} ({bound})",
        *(virtual.get(f"p{p}", float("nan")) for p in PERCENTILES),
        f"{queries['answered']}/{queries['issued']}", queries["failed"],
        lag["p50_ms"], lag["p99_ms"], lag["max_ms"],
    ]  # fmt: skip


COLUMNS = (
    "policy", "result", "P50 (ms)", "P90 (ms)", "P99 (ms)", "QPS", "latency bound",
    "virtual P50", "virtual P90", "virtual P99",
    "answered", "failed", "lag P50 (ms)", "lag P99 (ms)", "lag max (ms)",
)  # fmt: skip


def describe(settings: dict[str, Any]) -> str:
    colocate = ", ".join(settings["colocate"]) or "nothing"
    return (
        f"{settings['scenario']} scenario, {settings['model']} on an {settings['gpu']} vGPU, "
        f"target {settings['qps']:g} QPS, beside {colocate}.  The result is LoadGen's, "
        "INVALID when queries failed.  Latencies are LoadGen's, in wall "
        "time; the virtual ones are the server's, from the kernel receiving a query to its "
        "model's last kernel completing; the lag is how far virtual time fell behind the wall "
        "clock (the host not keeping up)."
    )


def write(directory: Path, data: dict[str, Any], ledger: Ledger, gpu_events: list) -> None:
    write_json(str(directory), data)
    failures = "".join(f"* {why}: {n}\n" for why, n in data["queries"]["failures"].items())
    text = (
        f"# malv serve --loadgen {data['settings']['scenario']}\n\n{describe(data['settings'])}\n\n"
        + markdown_table(COLUMNS, [row(str(data["settings"]["policy"]), data)])
        + (f"\nFailed queries:\n\n{failures}" if failures else "")
    )
    write_markdown(str(directory), text)
    events = list(gpu_events) + query_events(ledger)
    with open(directory / "trace.json", "w") as f:
        json.dump({"traceEvents": events, "displayTimeUnit": "ms"}, f, separators=(",", ":"))


def query_events(ledger: Ledger) -> list[dict[str, Any]]:
    """Each served query as a slice, in virtual time, beside the GPU's tracks."""
    events: list[dict[str, Any]] = [
        {"ph": "M", "name": "process_name", "pid": QUERIES_PID, "args": {"name": "LoadGen queries"}}
    ]
    for n, r in enumerate(ledger.records.values()):  # n: the query's place in issue order
        if r.done_ns is None or r.delivered_ns is None:
            continue
        events.append({"ph": "X", "name": r.model, "cat": "query", "pid": QUERIES_PID, "tid": 0,
                       "ts": r.delivered_ns / 1e3, "dur": (r.done_ns - r.delivered_ns) / 1e3,
                       "args": {"query": n, "outcome": r.outcome}})  # fmt: skip
    return events


def write_comparison(directory: Path, data: dict[str, Any]) -> None:
    write_json(str(directory), data)
    runs = data["runs"]
    first = next(iter(runs.values()))
    text = (
        "# malv serve --loadgen: policies compared\n\n"
        + describe(first["settings"]) + "\n\n"
        + markdown_table(COLUMNS, [row(policy, run) for policy, run in runs.items()])
    )  # fmt: skip
    write_markdown(str(directory), text)


PEAK_COLUMNS = ("policy", "peak QPS (VALID)", "first QPS not VALID", "runs")


def peak_rows(data: dict[str, Any]) -> list[list[Any]]:
    return [
        [policy, p["peak_qps"], "-" if p["first_invalid_qps"] is None else p["first_invalid_qps"],
         len(p["runs"])]
        for policy, p in data["find_peak"].items()
    ]  # fmt: skip


def write_peaks(directory: Path, data: dict[str, Any]) -> None:
    write_json(str(directory), data)
    text = (
        "# malv serve --loadgen --find-peak: the highest QPS each policy holds VALID\n\n"
        + describe(data["settings"]) + "\n\n"
        + markdown_table(PEAK_COLUMNS, peak_rows(data))
    )  # fmt: skip
    write_markdown(str(directory), text)


def table(data: dict[str, Any]) -> str:
    """results.md's table, for the terminal."""
    if "find_peak" in data:
        return markdown_table(PEAK_COLUMNS, peak_rows(data))
    runs = data.get("runs") or {str(data["settings"]["policy"]): data}
    return markdown_table(COLUMNS, [row(policy, run) for policy, run in runs.items()])
