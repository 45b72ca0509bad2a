"""The single-tenant comparisons, `rightsizing` and `dvfs` (`exp/sharing`).

Each inference model alone on the GPU, closed loop, under LithOS with and
without one mechanism.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from typing import Any

from drivers.vgpu.sharing import RunResult, Tenant
from exp.output import results_dir, write_json, write_markdown, write_timing
from exp.sharing import running
from exp.sharing.catalogue import CATALOGUE, SLIP, load_model
from exp.sharing.figures import by_label, run_timing, tenant_figures, timing_line
from exp.sharing.options import (
    check_out,
    done_message,
    duration_ns,
    parse_policies,
    seeds,
    sharing_parser,
)
from exp.sharing.running import RunJob

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
                        args.engine,
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
    results = running.run_jobs(name, jobs, args.jobs, args.quiet)
    figs = variant_figures(jobs, results)
    data = {
        "experiment": name,
        "config": {"gpu": args.gpu, "engine": args.engine, "trace_dir": args.trace_dir,
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
