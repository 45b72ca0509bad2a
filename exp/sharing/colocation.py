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
import numpy as np

from drivers.vgpu.presets import get_preset
from drivers.vgpu.sharing import RunResult
from exp.output import results_dir, write_json, write_markdown, write_timing
from exp.sharing import running
from exp.sharing.figures import (
    by_label,
    ratio,
    run_figures,
    run_timing,
    tenant_figures,
    tenant_latencies,
    timing_line,
)
from exp.sharing.options import check_out, done_message, duration_ns, seeds
from exp.sharing.plots import plot_allocation, plot_bars, plot_latency_cdf
from exp.sharing.running import RunJob
from exp.sharing.stats import ratio_ci
from exp.sharing.tables import colocation_report
from exp.sharing.tenants import (
    SLO_FACTOR,
    Role,
    arrivals_label,
    build_tenants,
    check_inputs,
    placeholder_notes,
)
from exp.sharing.trace import chrome_trace, write_trace

#: The Chrome trace covers this much of each policy's first seed, from the warm-up's end.
TRACE_SPAN_NS = 30_000_000
#: LithOS's TPC plot (lithos_tpcs.png) covers this much of its first seed
#: from the same instant, or the rest of the run where that is shorter.
PLOT_SPAN_NS = 500_000_000
#: The label of the run that records it: LithOS's first seed again, only as
#: far as the plot's window (and a margin for the atoms then in flight),
#: because a longer trace window in the measured run would sample its TPCs
#: longer, and those extra events move its energy in the last bits.
PLOT_LABEL = "lithos (TPC plot)"
PLOT_MARGIN_NS = 20_000_000


SAMPLE_NS = 200_000


#: Rough relative cost of a policy's run, to start the longest first.
POLICY_WEIGHT = {"lithos": 3.0, "timeslice": 1.5}


def warmup_ns(duration: int) -> int:
    """The unmeasured start of a colocation run: a tenth of it, at most 1 s."""
    return min(1_000_000_000, duration // 10)


def colocation_jobs(
    roles: Sequence[Role], policies: Sequence[str], args: argparse.Namespace
) -> list[RunJob]:
    duration = duration_ns(args)
    warmup = warmup_ns(duration)
    check_inputs(roles, args, seeds(args), duration, warmup)
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
                    args.engine,
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
                    args.engine,
                    trace_window_ns=window if first else None,
                    sample_ns=SAMPLE_NS if first else None,
                    weight=POLICY_WEIGHT.get(policy, 1.0),
                )  # fmt: skip
            )
        if seed == args.seed and "lithos" in policies:
            jobs.append(plot_job(tenants, seed, duration, warmup, start, args))
    return jobs


def colocation_records(
    roles: Sequence[Role],
    policies: Sequence[str],
    jobs: Sequence[RunJob],
    results: Sequence[RunResult],
) -> dict[str, Any]:
    """Each tenant's figures alone and under each policy, seeds pooled."""
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
    return {"isolated": list(isolated.values()), "records": records, "runs": runs}


def colocation_results(
    name: str,
    roles: Sequence[Role],
    policies: Sequence[str],
    jobs: Sequence[RunJob],
    results: Sequence[RunResult],
    args: argparse.Namespace,
) -> dict[str, Any]:
    figures = colocation_records(roles, policies, jobs, results)
    placeholders = placeholder_notes(roles, args, jobs[0].seed)
    return {
        "experiment": name,
        "config": {
            "gpu": args.gpu,
            "simulated_on": args.gpu,
            "engine": args.engine,
            "trace_dir": args.trace_dir,
            "arrivals": arrivals_label(roles, args),
            "arrival_speedup": args.arrival_speedup,
            "duration_s": duration_ns(args) / 1e9,
            "warmup_s": jobs[0].warmup_ns / 1e9,
            "seeds": seeds(args),
            "slo_factor": SLO_FACTOR,
            "tenants": [
                {
                    **attrs.asdict(role),
                    "quota": t.quota,
                    "measured_on": t.workload.measured_on or args.gpu,
                    "placeholder": placeholders.get(role.name),
                }
                for role, t in zip(roles, jobs[-1].tenants, strict=True)
            ],
        },
        **figures,
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
        if job.label.startswith("isolated") or job.label == PLOT_LABEL:
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
            ("throughput_vs_isolated", "throughput / isolated (x)"),
            ("slo_attainment", "SLO attainment (share of requests)"),
        ],  # fmt: skip
    )
    for job, r in zip(jobs, results, strict=True):
        if job.label == PLOT_LABEL and r.atoms:
            assert job.trace_window_ns is not None
            span = job.trace_window_ns[1] - job.trace_window_ns[0]
            n_tpcs = get_preset(data["config"]["gpu"]).n_tpcs
            plot_allocation(os.path.join(tmp, "lithos_tpcs.png"), r, names, span, n_tpcs)
    write_trace(tmp, chrome_trace(traced, names))


def plot_job(
    tenants: tuple, seed: int, duration: int, warmup: int, start: int, args: argparse.Namespace
) -> RunJob:
    """The run that records lithos_tpcs.png: LithOS's first seed from `start`,
    for `PLOT_SPAN_NS` or the rest of the run, and no further (`PLOT_LABEL`)."""
    end = min(duration, start + PLOT_SPAN_NS)
    return RunJob(
        PLOT_LABEL, "lithos", {}, tenants, seed, min(duration, end + PLOT_MARGIN_NS), warmup,
        args.gpu, args.engine, trace_window_ns=(start, end), weight=POLICY_WEIGHT["lithos"],
    )  # fmt: skip


#: The baselines the LithOS paper compares with (§7); ours has more policies.
PAPER_BASELINES = ("mps", "mig", "priority", "tgs", "reef", "orion")


def hp_latencies(
    jobs: Sequence[RunJob], results: Sequence[RunResult], tenant: str
) -> dict[str, np.ndarray]:
    """Per label, the latencies of `tenant` (its seeds pooled in order)."""
    out = {}
    for label, rs in by_label(jobs, results).items():
        names = [s.name for s in rs[0].streams]
        if tenant in names:
            out[label] = tenant_latencies(rs, names.index(tenant))
    return out


def p99_ratio(data: dict, latencies: dict, hp: str, a: str, b: str) -> dict[str, Any]:
    """P99 of `hp` under `a` over under `b`, with its paired bootstrap interval;
    no ratio (None) when either run's queue does not drain: it would then
    measure the run's length, not the policies."""
    ra, rb = (record(data, p, hp) if p in data["runs"] else None for p in (a, b))
    unstable = [p for p, r in ((a, ra), (b, rb)) if r is not None and r["unstable"]]
    if unstable:
        return {"ratio": None, "ci": None, "unstable": unstable}
    va = ra["p99_ms"] if ra else next(r for r in data["isolated"] if r["tenant"] == hp)["p99_ms"]
    vb = rb["p99_ms"] if rb else next(r for r in data["isolated"] if r["tenant"] == hp)["p99_ms"]
    return {"ratio": ratio(va, vb), "ci": ratio_ci(latencies[a], latencies[b]), "unstable": []}


def colocation_comparisons(data: dict, hp: str, latencies: dict[str, np.ndarray]) -> dict:
    """LithOS against MPS, isolation, the best of the paper's baselines and the
    best of all our other policies, for tenant `hp` (`latencies`: per label)."""
    policies = list(data["runs"])
    out: dict[str, Any] = {"tenant": hp}
    if "lithos" not in policies:
        return out
    lithos = record(data, "lithos", hp)["p99_ms"]
    iso = next(r for r in data["isolated"] if r["tenant"] == hp)["p99_ms"]
    out["lithos_p99_ms"] = lithos
    out["isolated_p99_ms"] = iso
    _put(out, "lithos_vs_isolated_p99", p99_ratio(data, latencies, hp, "lithos", f"isolated {hp}"))
    if "mps" in policies:
        out["mps_p99_ms"] = record(data, "mps", hp)["p99_ms"]
        _put(out, "mps_vs_lithos_p99", p99_ratio(data, latencies, hp, "mps", "lithos"))
    for key, pool in (("best_baseline", PAPER_BASELINES), ("best_other", policies)):
        others = [p for p in policies if p != "lithos" and p in pool]
        if not others:
            continue
        best = min(others, key=lambda p: record(data, p, hp)["p99_ms"])
        out[key] = best
        out[f"{key}_p99_ms"] = record(data, best, hp)["p99_ms"]
        _put(out, f"{key}_vs_lithos_p99", p99_ratio(data, latencies, hp, best, "lithos"))
        out[f"lithos_vs_{key}_throughput"] = ratio(
            aggregate_throughput(data, "lithos"), aggregate_throughput(data, best)
        )
    out["aggregate_throughput"] = {p: aggregate_throughput(data, p) for p in policies}
    return out


def _put(out: dict, key: str, r: dict) -> None:
    out[key] = r["ratio"]
    out[f"{key}_ci"] = r["ci"]
    if r["unstable"]:
        out[f"{key}_unstable"] = r["unstable"]


def run_colocation(
    name: str,
    title: str,
    roles: Sequence[Role],
    policies: list[str],
    args: argparse.Namespace,
    paper: dict,
    comparison_rows: Callable[[dict], list[tuple[str, str, str, str]]],
) -> int:
    """The stacking and hybrid experiments: run every policy (and each tenant
    alone), compare against the paper, and write results all or nothing."""
    check_out(args.out)
    started = time.perf_counter()
    jobs = colocation_jobs(roles, policies, args)
    results = running.run_jobs(name, jobs, args.jobs, args.quiet)
    data = colocation_results(name, roles, policies, jobs, results, args)
    hp = next(role.name for role in roles if role.kind != "be")
    data["comparisons"] = colocation_comparisons(data, hp, hp_latencies(jobs, results, hp))
    data["paper"] = paper
    rows = comparison_rows(data["comparisons"])
    report = colocation_report(data, title, rows)
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
