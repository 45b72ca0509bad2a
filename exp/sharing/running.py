"""Runs of the sharing experiments (`exp/sharing`).

A run is a picklable `RunJob`; `run_job` makes it as a researcher would (a
headless kernel, the policy's `gpu_<policy>` module inserted with the run's
parameters, a `Simulation` that follows the kernel's GPU advisor), and
`run_jobs` sweeps many in parallel processes with a progress display
(`run_each` is the same pool for any work on jobs, as `malv exp sweep` uses).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

import attrs

from drivers.vgpu import warm
from drivers.vgpu.sharing import RunResult, Simulation, Tenant
from drivers.vgpu.sharing.advised import follow_advisors, policy_module
from exp.output import Progress
from kernel import boot


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
    #: The engine's mode: "block" (block-exact) or "wave" (drivers/vgpu/engine.py).
    engine: str = "block"
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
            engine_mode=job.engine,
        )
        follow_advisors(sim, kernel.mlaas)
        return sim.run()


def run_jobs(
    name: str, jobs: Sequence[RunJob], workers: int | None, quiet: bool
) -> list[RunResult]:
    """Run `jobs` in parallel processes; results in the order of `jobs`."""
    if len(jobs) > 1 and (workers or os.cpu_count() or 1) > 1 and not warm.loop_cached():
        warm.compile_everything()  # here, once, not in every worker at the same time
    progress = Progress(name, len(jobs), quiet)
    results: list[RunResult | None] = [None] * len(jobs)

    def done(i: int, r: RunResult) -> None:
        results[i] = r
        job = jobs[i]
        progress.step(
            f"{job.label} seed {job.seed}: {job.duration_ns / 1e9:g} s in {r.wall_s:.1f} s"
        )

    run_each(jobs, workers, run_job, done)
    return [r for r in results if r is not None]


def run_each(
    jobs: Sequence[RunJob],
    workers: int | None,
    work: Callable[[RunJob], Any],
    done: Callable[[int, Any], None],
) -> None:
    """`work(job)` for every job in parallel processes, longest first;
    `done(index, answer)` as each finishes."""
    if not jobs:
        return
    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
    order = sorted(range(len(jobs)), key=lambda i: -jobs[i].weight)
    if workers == 1:
        for i in order:
            done(i, work(jobs[i]))
        return
    with ProcessPoolExecutor(workers, initializer=_ignore_interrupt) as pool:
        futures = {pool.submit(work, jobs[i]): i for i in order}
        try:
            for future in as_completed(futures):
                done(futures[future], future.result())
        except KeyboardInterrupt:
            _stop_workers(pool)
            raise


def _ignore_interrupt() -> None:
    """In a worker: Ctrl-C reaches the whole process group, but it is the
    parent's to handle (it stops the workers and reports it once)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    """End the workers now, rather than wait for the runs they are in."""
    pool.shutdown(wait=False, cancel_futures=True)
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        process.terminate()
