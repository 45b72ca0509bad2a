"""`malv exp sched`: sched advisors against round robin and oracle SRPT.

A launcher task starts jobs at the times of a Poisson arrival process, on a
one-CPU kernel, at about 85% load.  A job is a program of one of five kinds
(its name) with an input size (its first argument); its CPU time is the
kind's base time x (size / 100) ^ 0.8, times log-normal noise (sigma 0.3).
That true CPU time is also written as the job's last argument, for the
oracle only: `learned_srpt` sees the name and the size, and learns its
runtime model from the jobs that exited before.

Policies: `rr` (5 ms slices), `mlfq`, `learned_srpt` (shortest predicted
remaining time first, 1 ms slices) and `srpt_oracle` (true remaining time,
1 ms slices), each loaded with the module trap by the launcher before the
first job.  Reported: mean and p99 completion time (exit - arrival) over all
jobs.  Target: `learned_srpt` within 1.3x of oracle SRPT's mean, and better
than `rr`.
"""

from __future__ import annotations

import math
import random
import sys

from exp.output import (
    Progress,
    markdown_table,
    parser,
    positive_int,
    pyplot,
    results_dir,
    write_json,
    write_markdown,
)
from kernel import Kernel
from kernel.traps import Compute, GetTime, ModLoad, Sleep, Spawn

POLICIES = ("rr", "mlfq", "learned_srpt", "srpt_oracle")
#: (name, base CPU time in ms at size 100)
KINDS = (("grep", 1.0), ("compile", 12.0), ("index", 4.0), ("render", 30.0), ("backup", 8.0))
LOAD = 0.85
TARGET_RATIO = 1.3


def jobs(n: int, seed: int) -> list[tuple[int, str, int, int]]:
    """(arrival ns, kind, size, true CPU us) for `n` jobs."""
    rng = random.Random(f"{seed}:jobs")
    drawn = []
    for _ in range(n):
        kind, base_ms = KINDS[rng.randrange(len(KINDS))]
        size = int(round(10 ** rng.uniform(1, 3)))  # 10 .. 1000, log-uniform
        cpu_us = base_ms * 1000 * (size / 100) ** 0.8 * math.exp(rng.gauss(0, 0.3))
        drawn.append((kind, size, max(50, int(cpu_us))))
    mean_us = sum(j[2] for j in drawn) / n
    rate_per_us = LOAD / mean_us
    t, out = 0.0, []
    for kind, size, cpu_us in drawn:
        t += rng.expovariate(rate_per_us)
        out.append((int(t * 1000), kind, size, cpu_us))
    return out


def run_policy(policy: str, workload: list[tuple[int, str, int, int]], seed: int) -> list[int]:
    """Completion times (ns) of every job under `policy`."""
    k = Kernel(seed=seed, cpus=1)
    done: dict[int, int] = {}

    def job(index: int, arrival_ns: int, cpu_us: int):
        def run(proc):
            yield Compute(cpu_us)
            end = yield GetTime()
            done[index] = end - arrival_ns

        return run

    def launcher(proc):
        yield ModLoad(policy)
        for i, (arrival, kind, size, cpu_us) in enumerate(workload):
            now = yield GetTime()
            if arrival > now:
                yield Sleep((arrival - now) / 1000)
            yield Spawn(job(i, arrival, cpu_us), (str(size), str(cpu_us)), name=kind)

    try:
        k.spawn(launcher, name="launcher")
        k.run()
        rec = k.mlaas.modules.get(policy)
        if rec is None or rec.state != "live":
            raise RuntimeError(
                f"{policy} did not stay loaded: {rec.report if rec else 'never loaded'}"
            )
        if len(done) != len(workload):
            raise RuntimeError(f"{len(workload) - len(done)} jobs did not finish under {policy}")
        return [done[i] for i in range(len(workload))]
    finally:
        k.shutdown()


def summary(times_ns: list[int]) -> dict:
    s = sorted(times_ns)
    p99 = s[min(len(s) - 1, math.ceil(0.99 * len(s)) - 1)]
    return {
        "mean_ms": sum(s) / len(s) / 1e6,
        "p99_ms": p99 / 1e6,
        "median_ms": s[len(s) // 2] / 1e6,
    }


def measure(n: int, seed: int, quiet: bool = False) -> dict:
    workload = jobs(n, seed)
    progress = Progress("sched", len(POLICIES), quiet)
    results: dict = {"jobs": n, "load": LOAD, "seed": seed, "policies": {}, "completion_ms": {}}
    for policy in POLICIES:
        times = run_policy(policy, workload, seed)
        results["policies"][policy] = summary(times)
        results["completion_ms"][policy] = [t / 1e6 for t in times]
        progress.step(policy)
    p = results["policies"]
    ratio = p["learned_srpt"]["mean_ms"] / p["srpt_oracle"]["mean_ms"]
    results["target"] = {
        "learned_over_srpt_mean": ratio, "goal": TARGET_RATIO,
        "learned_better_than_rr": p["learned_srpt"]["mean_ms"] < p["rr"]["mean_ms"],
        "met": ratio <= TARGET_RATIO and p["learned_srpt"]["mean_ms"] < p["rr"]["mean_ms"],
    }  # fmt: skip
    return results


def table(results: dict) -> str:
    srpt = results["policies"]["srpt_oracle"]["mean_ms"]
    rows = [
        (name, r["mean_ms"], r["median_ms"], r["p99_ms"], f"{r['mean_ms'] / srpt:.2f}x")
        for name, r in results["policies"].items()
    ]
    t = results["target"]
    return (
        f"# sched: advisors vs round robin and oracle SRPT\n\n"
        f"{results['jobs']} jobs, Poisson arrivals at {100 * results['load']:.0f}% load on one CPU, seed {results['seed']}.\n\n"
        + markdown_table(("policy", "mean (ms)", "median (ms)", "p99 (ms)", "mean vs SRPT"), rows)
        + f"\nTarget: learned_srpt within {t['goal']}x of oracle SRPT's mean and better than rr: "
        f"{t['learned_over_srpt_mean']:.2f}x, {'better' if t['learned_better_than_rr'] else 'not better'} "
        f"than rr ({'met' if t['met'] else 'NOT met'}).\n"
    )


def plot(results: dict, directory: str) -> None:
    plt = pyplot()
    names = list(results["policies"])
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    xs = range(len(names))
    axes[0].bar(
        [x - 0.2 for x in xs], [results["policies"][n]["mean_ms"] for n in names], 0.4, label="mean"
    )
    axes[0].bar(
        [x + 0.2 for x in xs], [results["policies"][n]["p99_ms"] for n in names], 0.4, label="p99"
    )
    axes[0].set_xticks(list(xs), names)
    axes[0].set_yscale("log")
    axes[0].set_ylabel("completion time (ms)")
    axes[0].legend()
    axes[0].grid(axis="y", alpha=0.3)
    for name in names:
        s = sorted(results["completion_ms"][name])
        axes[1].plot(s, [(i + 1) / len(s) for i in range(len(s))], label=name)
    axes[1].set_xscale("log")
    axes[1].set_xlabel("completion time (ms)")
    axes[1].set_ylabel("fraction of jobs")
    axes[1].legend()
    axes[1].grid(alpha=0.3)
    fig.suptitle(f"sched advisors: {results['jobs']} jobs at {100 * results['load']:.0f}% load")
    fig.tight_layout()
    fig.savefig(f"{directory}/completion.png", dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = parser("sched", "sched advisors against round robin and oracle SRPT")
    p.add_argument(
        "--jobs", type=positive_int, default=None, help="jobs per run (default 2000, quick 400)"
    )
    args = p.parse_args(argv)
    n = args.jobs or (400 if args.quick else 2000)
    with results_dir(args.out) as tmp:
        results = measure(n, args.seed, args.quiet)
        write_json(tmp, results)
        write_markdown(tmp, table(results))
        plot(results, tmp)
    print(table(results))
    print(f"written to {args.out}", file=sys.stderr)
    return 0
