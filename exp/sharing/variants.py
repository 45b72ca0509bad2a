"""The single-tenant comparisons, `rightsizing` and `dvfs` (`exp/sharing`).

Each inference model alone on the GPU, closed loop, under LithOS with and
without one mechanism.  The models are built-in ones or Orion-format
profiles by path (`--models`), or the tenants of a scenario file
(`--scenario`), each alone; a profile's durations are carried from the GPU
it was measured on to the one simulated, as in the colocation experiments.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from drivers.vgpu.errors import InvalidArgument
from drivers.vgpu.sharing import RunResult, Tenant
from drivers.vgpu.traces import is_profile_path
from exp.output import results_dir, write_json, write_markdown, write_timing
from exp.sharing import running
from exp.sharing.catalogue import CATALOGUE, SLIP
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
from exp.sharing.tenants import Role, placeholder_notes, role_workload

INFERENCE_MODELS = ("resnet50", "resnet101", "bert", "mobilenetv2", "transformer_xl")


def model_roles(args: argparse.Namespace) -> list[Role]:
    """The models to run alone: --scenario's tenants, else --models (built-in
    keys or profile paths), each as a closed-loop `Role` named as tables name it."""
    if args.scenario is not None:
        from exp.scenario import load_scenario  # the scenario module imports exp.sharing

        return [attrs.evolve(r, kind="closed") for r in load_scenario(args.scenario).roles]
    roles = []
    for spec in (m.strip() for m in args.models.split(",") if m.strip()):
        if is_profile_path(spec):
            if not os.path.isfile(spec):
                raise InvalidArgument(f"--models: {spec}: no such profile")
            name = os.path.splitext(os.path.basename(spec))[0]
            roles.append(Role(name, "", "closed", profile=spec))
        elif spec in CATALOGUE:
            roles.append(Role(spec, spec, "closed"))
        else:
            raise InvalidArgument(
                f"--models: unknown model {spec!r}; known: {', '.join(CATALOGUE)}, "
                "or a profile's path (*.csv)"
            )
    names = [r.name for r in roles]
    if not roles or len(set(names)) != len(names):
        raise InvalidArgument(f"--models must name distinct models, got {args.models!r}")
    return roles


def variant_jobs(
    models: Sequence[Role], variants: dict[str, dict[str, Any]], args: argparse.Namespace
) -> list[RunJob]:
    """Each model alone on the GPU, closed loop, under each LithOS variant."""
    duration = duration_ns(args)
    warmup = min(1_000_000_000, duration // 5)
    jobs = []
    for seed in seeds(args):
        for role in models:
            workload = role_workload(role, args.trace_dir, seed, args.gpu)
            tenant = Tenant(role.name, workload, "closed", quota=1.0)
            for label, params in variants.items():
                jobs.append(
                    RunJob(
                        f"{role.name} {label}",
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
    p.add_argument(
        "--models",
        default=",".join(INFERENCE_MODELS),
        help="comma-separated: built-in models, or Orion-format profiles by path (*.csv) "
        f"(default {','.join(INFERENCE_MODELS)})",
    )
    p.add_argument(
        "--scenario",
        default=None,
        help="a scenario file (TOML): each of its tenants' models alone, in place of --models",
    )
    args = p.parse_args(argv)
    parse_policies(args.policies, only="lithos")
    check_out(args.out)
    roles = model_roles(args)
    placeholders = placeholder_notes(roles, args, args.seed)
    if placeholders and not args.allow_placeholder:
        who, note = next(iter(placeholders.items()))
        raise InvalidArgument(
            f"model {who!r}: {note} Refused: its latencies would mean nothing; "
            "--allow-placeholder runs it anyway, marked in the results"
        )
    models = [r.name for r in roles]
    started = time.perf_counter()
    jobs = variant_jobs(roles, variants, args)
    results = running.run_jobs(name, jobs, args.jobs, args.quiet)
    figs = variant_figures(jobs, results)
    data: dict[str, Any] = {
        "experiment": name,
        "config": {"gpu": args.gpu, "simulated_on": args.gpu, "engine": args.engine,
                   "trace_dir": args.trace_dir, "scenario": args.scenario,
                   "seeds": sorted({j.seed for j in jobs}),
                   "duration_s": jobs[0].duration_ns / 1e9, "warmup_s": jobs[0].warmup_ns / 1e9,
                   "slip": SLIP, "models": models,
                   "sources": [
                       {"name": r.name, "model": r.model, "profile": r.profile,
                        "measured_on": job.tenants[0].workload.measured_on or args.gpu,
                        "placeholder": placeholders.get(r.name)}
                       for r, job in zip(roles, jobs[:: len(variants)], strict=False)
                   ]},
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
