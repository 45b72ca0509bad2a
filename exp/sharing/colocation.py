"""The colocation experiments, `stacking` and `hybrid` (`exp/sharing`).

Tenants in roles share the GPU under every policy and, as a reference,
each alone; the results compare LithOS with MPS, isolation and the best
other policy, against the paper's figures.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from drivers.vgpu.sharing import RunResult, Tenant
from drivers.vgpu.sharing.sim import LAUNCH_QUEUE_DEPTH
from drivers.vgpu.traces import Workload
from exp.output import results_dir, write_json, write_markdown, write_timing
from exp.sharing import running
from exp.sharing.catalogue import DEFAULT_RATE_PER_S, SLIP, load_model
from exp.sharing.figures import (
    by_label,
    ratio,
    run_figures,
    run_timing,
    tenant_figures,
    timing_line,
)
from exp.sharing.options import check_out, done_message, duration_ns, open_loop_arrivals, seeds
from exp.sharing.plots import plot_allocation, plot_bars, plot_latency_cdf
from exp.sharing.running import RunJob
from exp.sharing.tables import colocation_report
from exp.sharing.trace import chrome_trace, write_trace


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
    check_out(args.out)
    started = time.perf_counter()
    jobs = colocation_jobs(roles, policies, args)
    results = running.run_jobs(name, jobs, args.jobs, args.quiet)
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
