"""What the GPU-sharing experiments share (`stacking`, `hybrid`, `rightsizing`, `dvfs`).

* the common options (--trace-dir, --arrivals, --policies, --duration,
  --seed, --out, plus --seeds and --jobs), on top of `exp.output.parser`;
* the model catalogue: each model is an Orion profile in --trace-dir, or
  the synthetic generator with the model's published summary figures;
* runs as picklable `RunJob`s, swept over policies and seeds in parallel
  processes with a progress display;
* the figures of a run (percentiles, SLO attainment, throughput, TPC time,
  energy) and of seeds pooled together;
* the Chrome trace of the GPU timeline and the plots;
* how long the runs took on the host, apart in timing.json.

Experiments call the same APIs a user would: each run boots a headless
kernel, inserts the policy's `gpu_<policy>` module with the run's
parameters, and runs a `Simulation` that follows the kernel's GPU advisor.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from drivers.vgpu.errors import InvalidArgument
from drivers.vgpu.policies import POLICY_NAMES, policy_class
from drivers.vgpu.sharing.advised import follow_advisors, policy_module
from drivers.vgpu.sharing.arrivals import arrival_times_ns, load_arrivals, poisson_times_ns
from drivers.vgpu.sharing.sim import LAUNCH_QUEUE_DEPTH, RunResult, Simulation, Tenant
from drivers.vgpu.traces import MODELS, ModelSummary, Workload, load_orion_csv, synthetic_workload
from exp.output import Progress, parser, positive_float, positive_int, pyplot
from kernel import boot

#: Models by key: the Orion profile's file stem, and the published summary
#: the synthetic generator draws an equivalent from (figures of those profiles).
CATALOGUE: dict[str, tuple[str, ModelSummary]] = {
    "resnet50": ("resnet50_4_fwd", MODELS["resnet50_b4_inference"]),
    "resnet101": (
        "resnet101_4_fwd",
        ModelSummary("resnet101_b4_inference", 345, 11_567_105, 1.16, 0.43, 0.30, 49, 392),
    ),
    "bert": ("bert_2_fwd", MODELS["bert_b2_inference"]),
    "mobilenetv2": ("mobilenetv2_4_fwd", MODELS["mobilenetv2_b4_inference"]),
    "transformer_xl": (
        "transformer_xl_4_fwd",
        ModelSummary("transformer_xl_b4_inference", 459, 16_671_218, 1.07, 0.39, 0.28, 96, 640),
    ),
    "resnet50_train": ("resnet50_32_fb1", MODELS["resnet50_b32_training"]),
    "bert_train": (
        "bert_8_fb1",
        ModelSummary("bert_b8_training", 4777, 190_766_381, 1.40, 0.67, 0.06, 1, 5724),
    ),
}
#: Mean request rate of Orion's inter-arrival trace (1 / 48 ms): the default
#: Poisson rate of open-loop services, so both defaults load them alike.
DEFAULT_RATE_PER_S = 20.8
MS = 1e6


def load_model(key: str, trace_dir: str | None, seed: int = 0) -> Workload:
    stem, summary = CATALOGUE[key]
    if trace_dir is None:
        return synthetic_workload(summary, seed)
    path = Path(trace_dir) / f"{stem}.csv"
    if not path.is_file():
        raise InvalidArgument(f"{path}: no such profile (model {key!r} reads {stem}.csv)")
    return load_orion_csv(path)


# -- options -------------------------------------------------------------------


def sharing_parser(
    name: str, description: str, *, duration_s: float, policies: Sequence[str] | None
) -> argparse.ArgumentParser:
    p = parser(name, description)
    p.add_argument(
        "--trace-dir",
        default=None,
        help="Orion kernel profiles (*.csv); default: the built-in synthetic models",
    )
    p.add_argument(
        "--arrivals",
        default=None,
        help="arrival trace: Orion gaps (.json) or Azure LLM trace (.csv); default: Poisson",
    )
    p.add_argument(
        "--arrival-speedup",
        type=positive_float,
        default=1.0,
        help="divide the trace's gaps by this (default 1)",
    )
    if policies is not None:
        p.add_argument(
            "--policies",
            default=",".join(policies),
            help=f"comma-separated, from {', '.join(POLICY_NAMES)} (default: all)",
        )
    else:  # a LithOS-only comparison of single closed-loop tenants
        p.add_argument(
            "--policies",
            default="lithos",
            help="only lithos (with and without the mechanism); --arrivals does not apply",
        )
    p.add_argument(
        "--duration",
        type=positive_float,
        default=None,
        help=f"simulated seconds per run (default {duration_s:g}, quick {duration_s / 5:g})",
    )
    p.add_argument(
        "--seeds", type=positive_int, default=1, help="seeds per configuration (default 1)"
    )
    p.add_argument(
        "--jobs",
        type=positive_int,
        default=None,
        help="parallel processes (default: the CPU count)",
    )
    p.add_argument("--gpu", default="a100", choices=("a100", "h100"), help="GPU preset")
    p.set_defaults(default_duration_s=duration_s)
    return p


def parse_policies(text: str, only: str | None = None) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise InvalidArgument("--policies names no policy")
    for n in names:
        policy_class(n)
    if only is not None and names != [only]:
        raise InvalidArgument(
            f"--policies: this experiment compares {only} with itself, got {text!r}"
        )
    return names


def duration_ns(args: argparse.Namespace) -> int:
    seconds = args.duration
    if seconds is None:
        seconds = args.default_duration_s / (5 if args.quick else 1)
    if not seconds > 0:
        raise InvalidArgument(f"--duration must be positive, got {seconds}")
    return int(seconds * 1e9)


def seeds(args: argparse.Namespace) -> list[int]:
    if args.seeds < 1:
        raise InvalidArgument(f"--seeds must be at least 1, got {args.seeds}")
    return [args.seed + i for i in range(args.seeds)]


def open_loop_arrivals(args: argparse.Namespace, duration: int, seed: int) -> tuple[int, ...]:
    if args.arrivals is None:
        return poisson_times_ns(DEFAULT_RATE_PER_S, duration, seed)
    trace = load_arrivals(args.arrivals)
    return arrival_times_ns(trace, duration, seed, args.arrival_speedup)


def check_out(out: str) -> None:
    """Refuse an --out that holds something other than an earlier run's results."""
    path = Path(out)
    if path.exists() and (
        not path.is_dir() or (any(path.iterdir()) and not (path / "results.json").exists())
    ):
        raise InvalidArgument(
            f"--out {out}: exists and does not hold earlier results (no results.json); "
            "choose a new directory"
        )


# -- runs ----------------------------------------------------------------------


@attrs.frozen
class RunJob:
    """One simulated run: tenants under a policy."""

    label: str
    policy: str
    params: dict[str, Any]  # the policy module's insmod parameters
    tenants: tuple[Tenant, ...]
    seed: int
    duration_ns: int
    warmup_ns: int
    gpu: str = "a100"
    trace_window_ns: tuple[int, int] | None = None
    sample_ns: int | None = None
    #: Expected cost, to start the longest jobs first.
    weight: float = 1.0


def run_job(job: RunJob) -> RunResult:
    """One run as a researcher would make it: a headless kernel with the
    policy's module inserted (`job.params` are its insmod parameters), and
    a simulation that follows the kernel's GPU advisor."""
    with boot(headless=True, seed=job.seed, gpu=None) as kernel:
        kernel.mlaas.insmod(policy_module(job.policy), job.params)
        sim = Simulation(
            job.tenants,
            None,  # follow_advisors puts the module's policy in charge before the run
            spec=job.gpu,
            duration_ns=job.duration_ns,
            warmup_ns=job.warmup_ns,
            trace_window_ns=job.trace_window_ns,
            sample_ns=job.sample_ns,
        )
        follow_advisors(sim, kernel.mlaas)
        return sim.run()


def run_jobs(
    name: str, jobs: Sequence[RunJob], workers: int | None, quiet: bool
) -> list[RunResult]:
    """Run `jobs` in parallel processes; results in the order of `jobs`."""
    progress = Progress(name, len(jobs), quiet)
    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
    results: list[RunResult | None] = [None] * len(jobs)

    def done(i: int, r: RunResult) -> None:
        results[i] = r
        job = jobs[i]
        progress.step(
            f"{job.label} seed {job.seed}: {job.duration_ns / 1e9:g} s in {r.wall_s:.1f} s"
        )

    order = sorted(range(len(jobs)), key=lambda i: -jobs[i].weight)
    if workers == 1:
        for i in order:
            done(i, run_job(jobs[i]))
    else:
        with ProcessPoolExecutor(workers, initializer=_ignore_interrupt) as pool:
            futures = {pool.submit(run_job, jobs[i]): i for i in order}
            try:
                for future in as_completed(futures):
                    done(futures[future], future.result())
            except KeyboardInterrupt:
                _stop_workers(pool)
                raise
    return [r for r in results if r is not None]


def _ignore_interrupt() -> None:
    """In a worker: Ctrl-C reaches the whole process group, but it is the
    parent's to handle (it stops the workers and reports it once)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    """End the workers now, rather than wait for the runs they are in."""
    pool.shutdown(wait=False, cancel_futures=True)
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        process.terminate()


# -- figures -------------------------------------------------------------------


def _percentile(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) / MS if len(values) else float("nan")


def tenant_figures(runs: Sequence[RunResult], index: int) -> dict[str, Any]:
    """Figures of tenant `index` over `runs` (seeds): latencies pooled, rates averaged."""
    streams = [r.streams[index] for r in runs]
    lat = np.concatenate([np.asarray(s.latencies_ns, dtype=np.float64) for s in streams])
    window_s = sum(r.window_ns for r in runs) / 1e9
    energy = sum(r.energy_j for r in runs)
    first = streams[0]
    out: dict[str, Any] = {
        "tenant": first.name,
        "kind": first.kind,
        "requests": int(len(lat)),
        "p50_ms": _percentile(lat, 50),
        "p95_ms": _percentile(lat, 95),
        "p99_ms": _percentile(lat, 99),
        "mean_ms": float(lat.mean()) / MS if len(lat) else float("nan"),
        "slo_ms": first.slo_ns / MS if first.slo_ns else None,
        "slo_attainment": (
            float((lat <= first.slo_ns).mean()) if first.slo_ns and len(lat) else None
        ),
        "throughput_rps": sum(s.completed for s in streams) / window_s,
        "tpc_seconds": sum(s.busy_tpc_s for s in streams) / len(runs),
        "tpc_seconds_allocated": sum(s.alloc_tpc_s for s in streams) / len(runs),
        "energy_j": energy / len(runs),
        "avg_power_w": energy / window_s,
    }
    return out


def run_figures(runs: Sequence[RunResult]) -> dict[str, Any]:
    """Per-run figures of one configuration: the policy's own report."""
    return {"seeds": len(runs), "extra": [r.extra for r in runs]}


def by_label(jobs: Sequence[RunJob], results: Sequence[RunResult]) -> dict[str, list[RunResult]]:
    """The results of `jobs` grouped by the jobs' labels (one per seed), in order."""
    out: dict[str, list[RunResult]] = {}
    for job, r in zip(jobs, results, strict=True):
        out.setdefault(job.label, []).append(r)
    return out


def run_timing(jobs: Sequence[RunJob], results: Sequence[RunResult], started: float) -> dict:
    """What the host's clock measured, per label: for timing.json, never the
    results, which a seed determines whatever the host's load."""
    runs = by_label(jobs, results)
    return {
        "total_s": round(time.perf_counter() - started, 3),
        "wall_s": {label: [round(r.wall_s, 3) for r in rs] for label, rs in runs.items()},
        "sim_to_wall": {
            label: round(float(np.mean([r.sim_to_wall for r in rs])), 3)
            for label, rs in runs.items()
        },
    }


def timing_line(timing: dict) -> str:
    return "simulated seconds per wall-clock second: " + ", ".join(
        f"{label} {v:.2f}" for label, v in timing["sim_to_wall"].items()
    )


def ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(b) and not math.isnan(a) else float("nan")


# -- the Chrome trace ----------------------------------------------------------


def chrome_trace(runs: Sequence[tuple[str, RunResult]], tenant_names: Sequence[str]) -> dict:
    """A Chrome trace event file (Perfetto opens it): one process per run.

    Threads are tenants; each atom is a slice (args: TPC mask, TPC count,
    priority, stolen); the clock and TPCs per tenant are counters.
    """
    events: list[dict] = []
    for pid, (label, r) in enumerate(runs, start=1):
        events.append({"ph": "M", "name": "process_name", "pid": pid, "args": {"name": label}})
        for tid, name in enumerate(tenant_names, start=1):
            events.append(
                {"ph": "M", "name": "thread_name", "pid": pid, "tid": tid, "args": {"name": name}}
            )
        start = min((a.launch_ns for a in r.atoms), default=0)
        end = max((a.done_ns for a in r.atoms), default=0)
        for a in r.atoms:
            events.append(
                {
                    "ph": "X",
                    "name": a.kernel,
                    "cat": "stolen" if a.stolen else "atom",
                    "pid": pid,
                    "tid": a.stream + 1,
                    "ts": a.launch_ns / 1e3,
                    "dur": (a.done_ns - a.launch_ns) / 1e3,
                    "args": {
                        "tpcs": a.mask.bit_count(),
                        "mask": hex(a.mask),
                        "priority": a.priority,
                        "stolen": a.stolen,
                    },
                }
            )
        for t, mhz in r.clocks:
            events.append(
                {"ph": "C", "name": "clock MHz", "pid": pid, "ts": t / 1e3, "args": {"MHz": mhz}}
            )
        for t, counts in r.allocation:
            if start <= t <= end:
                events.append(
                    {
                        "ph": "C",
                        "name": "TPCs in use",
                        "pid": pid,
                        "ts": t / 1e3,
                        "args": dict(zip(tenant_names, counts, strict=True)),
                    }
                )
    return {"traceEvents": events, "displayTimeUnit": "ms"}


def write_trace(directory: str, trace: dict) -> None:
    with open(os.path.join(directory, "trace.json"), "w") as f:
        json.dump(trace, f, separators=(",", ":"))


# -- plots -----------------------------------------------------------------------


def plot_latency_cdf(
    path: str, by_policy: dict[str, list[RunResult]], tenants: Sequence[int], names: Sequence[str]
) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, len(tenants), figsize=(5.5 * len(tenants), 4), squeeze=False)
    for ax, index in zip(axes[0], tenants, strict=True):
        for label, runs in by_policy.items():
            lat = np.sort(
                np.concatenate([np.asarray(r.streams[index].latencies_ns, float) for r in runs])
            )
            if len(lat):
                style = {"color": "black", "linewidth": 2.5} if label.startswith("lithos") else {}
                ax.plot(lat / MS, np.arange(1, len(lat) + 1) / len(lat), label=label, **style)
        ax.set_xscale("log")
        ax.set_xlabel("request latency (ms)")
        ax.set_ylabel("CDF")
        ax.set_title(names[index])
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_bars(path: str, rows: list[dict], metrics: Sequence[tuple[str, str]]) -> None:
    """Grouped bars: for each metric, one group per policy, one bar per tenant."""
    plt = pyplot()
    policies = list(dict.fromkeys(r["policy"] for r in rows))
    tenants = list(dict.fromkeys(r["tenant"] for r in rows))
    fig, axes = plt.subplots(1, len(metrics), figsize=(6 * len(metrics), 4), squeeze=False)
    width = 0.8 / max(1, len(tenants))
    for ax, (key, title) in zip(axes[0], metrics, strict=True):
        for k, tenant in enumerate(tenants):
            values = []
            for p in policies:
                v = next(
                    (r.get(key) for r in rows if r["policy"] == p and r["tenant"] == tenant), None
                )
                values.append(float("nan") if v is None else v)
            ax.bar(np.arange(len(policies)) + k * width, values, width, label=tenant)
        ax.set_xticks(np.arange(len(policies)) + width * (len(tenants) - 1) / 2)
        ax.set_xticklabels(policies, rotation=45, ha="right", fontsize=8)
        ax.set_title(title)
        ax.grid(True, axis="y", alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_allocation(path: str, run: RunResult, names: Sequence[str], span_ns: int) -> None:
    """TPCs in use per tenant over time (stacked), over the first `span_ns` of samples."""
    plt = pyplot()
    samples = [(t, c) for t, c in run.allocation if t >= run.allocation[0][0]]
    if not samples:
        return
    t0 = samples[0][0]
    samples = [(t, c) for t, c in samples if t - t0 <= span_ns]
    times = np.array([t for t, _ in samples]) / MS
    counts = np.array([c for _, c in samples]).T
    fig, ax = plt.subplots(figsize=(9, 3.5))
    ax.stackplot(times, counts, labels=names, step="post")
    ax.set_xlabel("time (ms)")
    ax.set_ylabel("TPCs in its atoms' masks")
    ax.set_title(f"TPC allocation under {run.policy}")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def done_message(out: str, started: float) -> None:
    print(f"written to {out} in {time.perf_counter() - started:.1f} s", file=sys.stderr)


def safe_main(main: Callable[[list[str] | None], int], argv: list[str] | None) -> int:
    """Run `main`, turning bad input into one clear error line."""
    try:
        return main(argv)
    except (InvalidArgument, ValueError, OSError) as err:
        print(f"malv exp: {err}", file=sys.stderr)
        return 2


# -- colocation experiments (stacking, hybrid) ------------------------------------


@attrs.frozen
class Role:
    """A tenant of a colocation experiment.

    The latency-critical tenant (`sized`) gets a quota by LithOS's slip rule
    applied to a whole request: the fewest TPCs on which its isolated request
    time stays within `SLIP` of the whole GPU's.  The others share the rest
    in proportion to their `weight`.  Every spatial policy uses these shares
    (MIG slices, MPS thread percentages, LithOS TPC quotas).
    """

    name: str
    model: str  # a CATALOGUE key
    kind: str  # open, closed, be
    weight: float = 1.0
    sized: bool = False


#: Open-loop requests must finish within this multiple of the model's
#: isolated request time (its kernels back to back on the whole GPU).
SLO_FACTOR = 2.0
#: LithOS's slip: the latency a quota or a right-sized kernel may give up.
SLIP = 1.1


def slip_tpcs(workload: Workload, n_tpcs: int, slip: float = SLIP) -> int:
    """The fewest TPCs on which `workload`'s isolated request time is within `slip`."""
    full = workload.isolated_duration_ns(n_tpcs)
    return min(t for t in range(1, n_tpcs + 1) if workload.isolated_duration_ns(t) <= slip * full)


def role_quotas(roles: Sequence[Role], workloads: Sequence[Workload], n_tpcs: int) -> list[float]:
    sized = [
        slip_tpcs(w, n_tpcs) / n_tpcs if r.sized else 0.0
        for r, w in zip(roles, workloads, strict=True)
    ]
    rest = 1.0 - sum(sized)
    weights = sum(r.weight for r in roles if not r.sized)
    return [q if r.sized else rest * r.weight / weights for r, q in zip(roles, sized, strict=True)]


#: The Chrome trace covers this much of each policy's first seed, from the warm-up's end.
TRACE_SPAN_NS = 30_000_000
SAMPLE_NS = 200_000


def build_tenants(roles: Sequence[Role], args: argparse.Namespace, seed: int, duration: int):
    spec_tpcs = 54 if args.gpu == "a100" else 66
    workloads = [load_model(role.model, args.trace_dir, seed) for role in roles]
    quotas = role_quotas(roles, workloads, spec_tpcs)
    tenants = []
    for role, workload, quota in zip(roles, workloads, quotas, strict=True):
        arrivals = open_loop_arrivals(args, duration, seed) if role.kind == "open" else ()
        slo = None
        if role.kind != "be":
            slo = int(SLO_FACTOR * workload.isolated_duration_ns(spec_tpcs))
        # Best-effort jobs never wait for a result: their host runs ahead.
        run_ahead = LAUNCH_QUEUE_DEPTH if role.kind == "be" else 0
        tenants.append(Tenant(role.name, workload, role.kind, arrivals, quota, slo, run_ahead))
    return tuple(tenants)


#: Rough relative cost of a policy's run, to start the longest first.
POLICY_WEIGHT = {"lithos": 3.0, "timeslice": 1.5}


def colocation_jobs(
    roles: Sequence[Role], policies: Sequence[str], args: argparse.Namespace
) -> list[RunJob]:
    duration = duration_ns(args)
    warmup = min(1_000_000_000, duration // 10)
    jobs = []
    for seed in seeds(args):
        tenants = build_tenants(roles, args, seed, duration)
        # The trace starts just before the first request after the warm-up.
        arrivals = [t for tenant in tenants for t in tenant.arrivals_ns if t >= warmup]
        start = max(warmup, min(arrivals, default=warmup) - 2_000_000)
        window = (start, start + TRACE_SPAN_NS)
        for i, tenant in enumerate(tenants):
            jobs.append(
                RunJob(
                    f"isolated {tenant.name}",
                    "mps",
                    {},
                    (tenant,),
                    seed,
                    duration,
                    warmup,
                    args.gpu,
                    weight=0.3 + 0.2 * i,
                )  # fmt: skip
            )
        for policy in policies:
            first = seed == args.seed
            jobs.append(
                RunJob(
                    policy,
                    policy,
                    {},
                    tenants,
                    seed,
                    duration,
                    warmup,
                    args.gpu,
                    trace_window_ns=window if first else None,
                    sample_ns=SAMPLE_NS if first else None,
                    weight=POLICY_WEIGHT.get(policy, 1.0),
                )  # fmt: skip
            )
    return jobs


def colocation_results(
    name: str,
    roles: Sequence[Role],
    policies: Sequence[str],
    jobs: Sequence[RunJob],
    results: Sequence[RunResult],
    args: argparse.Namespace,
) -> dict[str, Any]:
    grouped = by_label(jobs, results)
    isolated = {role.name: tenant_figures(grouped[f"isolated {role.name}"], 0) for role in roles}
    records, runs = [], {}
    for policy in policies:
        rs = grouped[policy]
        runs[policy] = run_figures(rs)
        for i, role in enumerate(roles):
            fig = tenant_figures(rs, i)
            iso = isolated[role.name]
            fig["p99_vs_isolated"] = ratio(fig["p99_ms"], iso["p99_ms"])
            fig["throughput_vs_isolated"] = ratio(fig["throughput_rps"], iso["throughput_rps"])
            records.append({"policy": policy, **fig})
    return {
        "experiment": name,
        "config": {
            "gpu": args.gpu,
            "trace_dir": args.trace_dir,
            "arrivals": args.arrivals or f"poisson {DEFAULT_RATE_PER_S}/s",
            "arrival_speedup": args.arrival_speedup,
            "duration_s": duration_ns(args) / 1e9,
            "warmup_s": jobs[0].warmup_ns / 1e9,
            "seeds": seeds(args),
            "slo_factor": SLO_FACTOR,
            "tenants": [
                {**attrs.asdict(role), "quota": t.quota}
                for role, t in zip(roles, jobs[-1].tenants, strict=True)
            ],
        },
        "isolated": list(isolated.values()),
        "records": records,
        "runs": runs,
    }


def record(data: dict, policy: str, tenant: str) -> dict:
    return next(r for r in data["records"] if r["policy"] == policy and r["tenant"] == tenant)


def aggregate_throughput(data: dict, policy: str) -> float:
    """Sum over tenants of throughput relative to isolated (1 per tenant is no loss)."""
    return float(sum(r["throughput_vs_isolated"] for r in data["records"] if r["policy"] == policy))


def records_table(data: dict) -> str:
    from exp.output import markdown_table

    rows = []
    for r in data["records"]:
        slo = "-" if r["slo_attainment"] is None else f"{100 * r['slo_attainment']:.1f}%"
        rows.append(
            (
                r["policy"],
                r["tenant"],
                r["requests"],
                f"{r['p50_ms']:.2f}",
                f"{r['p95_ms']:.2f}",
                f"{r['p99_ms']:.2f}",
                f"{r['p99_vs_isolated']:.2f}",
                slo,
                f"{r['throughput_rps']:.1f}",
                f"{r['tpc_seconds']:.2f}",
                f"{r['energy_j']:.0f}",
                f"{r['avg_power_w']:.0f}",
            )  # fmt: skip
        )
    columns = ("policy", "tenant", "requests", "p50 ms", "p95 ms", "p99 ms", "p99/isolated",
               "SLO met", "req/s", "TPC-s", "energy J", "power W")  # fmt: skip
    return markdown_table(columns, rows)


def colocation_outputs(
    tmp: str,
    data: dict,
    roles: Sequence[Role],
    jobs: Sequence[RunJob],
    results: Sequence[RunResult],
) -> None:
    names = [role.name for role in roles]
    first_seed = data["config"]["seeds"][0]
    by_policy: dict[str, list[RunResult]] = {}
    traced = []
    for job, r in zip(jobs, results, strict=True):
        if job.label.startswith("isolated"):
            continue
        by_policy.setdefault(job.label, []).append(r)
        if job.seed == first_seed:
            traced.append((job.label, r))
    hp = [i for i, role in enumerate(roles) if role.kind != "be"]
    plot_latency_cdf(os.path.join(tmp, "latency_cdf.png"), by_policy, hp, names)
    plot_bars(
        os.path.join(tmp, "bars.png"),
        data["records"],
        [
            ("p99_ms", "P99 latency (ms)"),
            ("throughput_vs_isolated", "throughput / isolated"),
            ("slo_attainment", "SLO attainment"),
        ],  # fmt: skip
    )
    for label, r in traced:
        if label == "lithos" and r.allocation:
            plot_allocation(os.path.join(tmp, "lithos_tpcs.png"), r, names, TRACE_SPAN_NS)
    write_trace(tmp, chrome_trace(traced, names))


def colocation_comparisons(data: dict, hp: str) -> dict[str, Any]:
    """LithOS against MPS, isolation and the best other policy, for tenant `hp`."""
    policies = list(data["runs"])
    out: dict[str, Any] = {"tenant": hp}
    if "lithos" not in policies:
        return out
    lithos = record(data, "lithos", hp)["p99_ms"]
    iso = next(r for r in data["isolated"] if r["tenant"] == hp)["p99_ms"]
    out["lithos_p99_ms"] = lithos
    out["isolated_p99_ms"] = iso
    out["lithos_vs_isolated_p99"] = ratio(lithos, iso)
    if "mps" in policies:
        out["mps_p99_ms"] = record(data, "mps", hp)["p99_ms"]
        out["mps_vs_lithos_p99"] = ratio(out["mps_p99_ms"], lithos)
    others = [p for p in policies if p != "lithos"]
    if others:
        best = min(others, key=lambda p: record(data, p, hp)["p99_ms"])
        out["best_other"] = best
        out["best_other_p99_ms"] = record(data, best, hp)["p99_ms"]
        out["best_other_vs_lithos_p99"] = ratio(out["best_other_p99_ms"], lithos)
        out["lithos_vs_best_other_throughput"] = ratio(
            aggregate_throughput(data, "lithos"), aggregate_throughput(data, best)
        )
    out["aggregate_throughput"] = {p: aggregate_throughput(data, p) for p in policies}
    return out


def colocation_report(
    data: dict, title: str, rows: Sequence[tuple[str, str, str, str]], notes: str
) -> str:
    """results.md: the comparison against the paper, the table of every record, the notes."""
    from exp.output import markdown_table

    cfg = data["config"]
    lines = [
        f"# {title}",
        "",
        f"{setup_line(cfg)}; "
        f"arrivals: {cfg['arrivals']}; {cfg['duration_s']:g} s simulated per run "
        f"({cfg['warmup_s']:g} s warm-up not measured); seeds {cfg['seeds']}.",
        "",
        "Tenants: "
        + "; ".join(
            f"{t['name']} = {t['model']} ({t['kind']}, quota {t['quota']:.3f})"
            for t in cfg["tenants"]
        )
        + f".  SLO: {cfg['slo_factor']:g}x the model's isolated request time.",
        "",
        "## Against the paper",
        "",
        markdown_table(("comparison", "ours", "paper", "target"), rows),
        "## Every policy and tenant",
        "",
        records_table(data),
        "Isolated (each tenant alone on the whole GPU):",
        "",
        markdown_table(
            ("tenant", "p50 ms", "p99 ms", "req/s"),
            [
                (
                    r["tenant"],
                    f"{r['p50_ms']:.2f}",
                    f"{r['p99_ms']:.2f}",
                    f"{r['throughput_rps']:.1f}",
                )
                for r in data["isolated"]
            ],  # fmt: skip
        ),
        predictor_line(data["runs"]),
        "## Why ours differ",
        "",
        notes.strip(),
        "",
    ]
    return "\n".join(lines)


def predictor_line(runs: dict) -> str:
    """LithOS's latency predictor: mispredictions (error over 50 us) over the atoms it predicted."""
    extras = [e for label, r in runs.items() if label.startswith("lithos") for e in r["extra"]]
    predicted = sum(e.get("predictions", 0) for e in extras)
    if not predicted:
        return ""
    wrong = sum(e["misprediction_rate"] * e["predictions"] for e in extras)
    error = sum(e["mean_abs_error_us"] * e["predictions"] for e in extras) / predicted
    return (
        f"LithOS's latency predictor: {100 * wrong / predicted:.2f}% of {predicted} predicted atoms "
        f"mispredicted (error over 50 us); mean absolute error {error:.1f} us.\n"
    )


def setup_line(cfg: dict) -> str:
    """The GPU and the kernel profiles a run used, for the head of results.md."""
    return f"GPU {cfg['gpu']}; kernel profiles: {cfg['trace_dir'] or 'built-in synthetic models'}"


def fmt(x: float, digits: int = 2) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


# -- single-tenant comparisons (rightsizing, dvfs) ----------------------------------

INFERENCE_MODELS = ("resnet50", "resnet101", "bert", "mobilenetv2", "transformer_xl")


def variant_jobs(
    models: Sequence[str], variants: dict[str, dict[str, Any]], args: argparse.Namespace
) -> list[RunJob]:
    """Each model alone on the GPU, closed loop, under each LithOS variant."""
    duration = duration_ns(args)
    warmup = min(1_000_000_000, duration // 5)
    jobs = []
    for seed in seeds(args):
        for model in models:
            workload = load_model(model, args.trace_dir, seed)
            tenant = Tenant(model, workload, "closed", quota=1.0)
            for label, params in variants.items():
                jobs.append(
                    RunJob(
                        f"{model} {label}",
                        "lithos",
                        params,
                        (tenant,),
                        seed,
                        duration,
                        warmup,
                        args.gpu,
                        weight=len(workload.kernels) / 100,
                    )  # fmt: skip
                )
    return jobs


def variant_figures(jobs: Sequence[RunJob], results: Sequence[RunResult]) -> dict[str, dict]:
    """Per "model variant" label: the tenant's figures plus per-request TPC time and energy."""
    out = {}
    for label, rs in by_label(jobs, results).items():
        fig = tenant_figures(rs, 0)
        done = sum(r.streams[0].completed for r in rs)
        fig["alloc_tpc_ms_per_request"] = (
            1e3 * fig["tpc_seconds_allocated"] * len(rs) / max(1, done)
        )
        fig["busy_tpc_ms_per_request"] = 1e3 * fig["tpc_seconds"] * len(rs) / max(1, done)
        fig["energy_j_per_request"] = fig["energy_j"] * len(rs) / max(1, done)
        fig["extra"] = rs[0].extra
        out[label] = fig
    return out


def plot_saving_vs_cost(
    path: str, summary: dict, saved_key: str, saved_label: str, title: str
) -> None:
    """Per model, what a LithOS mechanism saves beside what it costs in P99
    (the right-sizing and DVFS experiments' plot)."""
    plt = pyplot()
    models = list(summary["models"])
    saved = [100 * summary["models"][m][saved_key] for m in models]
    cost = [100 * summary["models"][m]["p99_cost"] for m in models]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    x = np.arange(len(models))
    ax.bar(x - 0.2, saved, 0.4, label=saved_label)
    ax.bar(x + 0.2, cost, 0.4, label="P99 latency cost (%)")
    ax.set_xticks(x)
    ax.set_xticklabels(models, rotation=20)
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_colocation(
    name: str,
    title: str,
    roles: Sequence[Role],
    policies: list[str],
    args: argparse.Namespace,
    paper: dict,
    notes: str,
    comparison_rows: Callable[[dict], list[tuple[str, str, str, str]]],
) -> int:
    """The stacking and hybrid experiments: run every policy (and each tenant
    alone), compare against the paper, and write results all or nothing."""
    from exp.output import results_dir, write_json, write_markdown, write_timing

    check_out(args.out)
    started = time.perf_counter()
    jobs = colocation_jobs(roles, policies, args)
    results = run_jobs(name, jobs, args.jobs, args.quiet)
    data = colocation_results(name, roles, policies, jobs, results, args)
    data["comparisons"] = colocation_comparisons(data, "HP A")
    data["paper"] = paper
    rows = comparison_rows(data["comparisons"])
    report = colocation_report(data, title, rows, notes)
    with results_dir(args.out) as tmp:
        write_json(tmp, data)
        write_markdown(tmp, report)
        colocation_outputs(tmp, data, roles, jobs, results)
        timing = run_timing(jobs, results, started)
        write_timing(tmp, timing, timing_line(timing))
    for row in rows:
        print(f"{row[0]}: {row[1]} (paper {row[2]}, target {row[3]})")
    done_message(args.out, started)
    return 0


def run_variants(
    name: str,
    description: str,
    variants: Any,
    summarize: Callable[[dict, list[str]], dict],
    report: Callable[[dict], str],
    plot: Callable[[str, dict], None],
    paper: dict,
    headline: Callable[[dict], str],
    argv: list[str] | None,
) -> int:
    """The right-sizing and DVFS experiments: LithOS with and without one
    mechanism, per model; results written all or nothing."""
    from exp.output import results_dir, write_json, write_markdown, write_timing

    p = sharing_parser(name, description, duration_s=5.0, policies=None)
    p.add_argument("--models", default=",".join(INFERENCE_MODELS), help="comma-separated models")
    args = p.parse_args(argv)
    parse_policies(args.policies, only="lithos")
    check_out(args.out)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    for m in models:
        if m not in CATALOGUE:
            raise ValueError(f"unknown model {m!r}; known: {', '.join(CATALOGUE)}")
    started = time.perf_counter()
    jobs = variant_jobs(models, variants, args)
    results = run_jobs(name, jobs, args.jobs, args.quiet)
    figs = variant_figures(jobs, results)
    data = {
        "experiment": name,
        "config": {"gpu": args.gpu, "trace_dir": args.trace_dir,
                   "seeds": sorted({j.seed for j in jobs}),
                   "duration_s": jobs[0].duration_ns / 1e9, "warmup_s": jobs[0].warmup_ns / 1e9,
                   "slip": SLIP, "models": models},
        "runs": figs,
        "summary": summarize(figs, models),
        "paper": paper,
    }  # fmt: skip
    with results_dir(args.out) as tmp:
        write_json(tmp, data)
        write_markdown(tmp, report(data))
        plot(f"{tmp}/{name}.png", data["summary"])
        timing = run_timing(jobs, results, started)
        write_timing(tmp, timing, timing_line(timing))
    print(headline(data["summary"]["mean"]))
    done_message(args.out, started)
    return 0


def colocation_rows(
    c: dict, paper: dict[str, str], targets: dict[str, str]
) -> list[tuple[str, str, str, str]]:
    """The stacking and hybrid comparisons with the paper: (what, ours, paper, target)."""
    if "lithos_p99_ms" not in c:
        return []

    def row(what: str, key: str) -> tuple[str, str, str, str]:
        return (what, f"{fmt(c[key])}x", paper.get(key, "-"), targets.get(key, "-"))

    rows = [row("HP A P99, LithOS vs isolated", "lithos_vs_isolated_p99")]
    if "mps_vs_lithos_p99" in c:
        rows.insert(0, row("HP A P99, MPS / LithOS", "mps_vs_lithos_p99"))
    if "best_other" in c:
        rows += [
            row(f"HP A P99, best other ({c['best_other']}) / LithOS", "best_other_vs_lithos_p99"),
            row(
                f"aggregate throughput, LithOS / {c['best_other']}",
                "lithos_vs_best_other_throughput",
            ),
        ]
    return rows
