"""Grader of lab sched: the student's advisor against round robin.

A launcher task on a one-CPU kernel starts 60 jobs in bursts of six, one
burst every 100 ms (about 80% load).  A job is "short" (1-4 ms of CPU) or
"long" (30-80 ms); its first argument is an estimate of its CPU time in ms,
within 20% of the truth.  Each policy runs the same seeded mix, loaded with
the module trap by the launcher before the first job; `rr` (the shipped
round robin, 5 ms slices) is the baseline.  Everything runs in virtual time,
so a grade is the same on any machine.
"""

from __future__ import annotations

import functools
import random

import attrs
import pytest

from image.labs import advisor_loads
from kernel import boot
from kernel.errors import SyscallError
from kernel.traps import Compute, GetTime, ModLoad, Sleep, Spawn

JOBS = 60
BURST = 6
BURST_GAP_NS = 100_000_000
LONG_SHARE = 0.2
SHORT_MS = (1.0, 4.0)
LONG_MS = (30.0, 80.0)
MIX_SEED, SECOND_MIX_SEED = 3, 2


@attrs.frozen
class Job:
    arrival_ns: int
    kind: str  # "short" or "long"
    cpu_us: int
    estimate_ms: float


@attrs.frozen
class Run:
    """Completion times (ms, exit - arrival) of the jobs that finished, and
    what went wrong, if anything."""

    completion_ms: dict[int, float]
    error: str | None


def job_mix(seed: int) -> list[Job]:
    rng = random.Random(f"lab-sched:{seed}")
    jobs = []
    for i in range(JOBS):
        kind = "long" if rng.random() < LONG_SHARE else "short"
        cpu_ms = rng.uniform(*(LONG_MS if kind == "long" else SHORT_MS))
        arrival = (i // BURST) * BURST_GAP_NS + rng.randrange(5_000_000)
        jobs.append(Job(arrival, kind, int(cpu_ms * 1000), cpu_ms * rng.uniform(0.8, 1.2)))
    return sorted(jobs, key=lambda j: j.arrival_ns)


#: Checked once, before any test: the student's module loads, isolated.
student_code_loads = advisor_loads


@functools.cache
def run_mix(spec: str, seed: int, isolated: bool = False) -> Run:
    """Run mix `seed` under the module `spec` (a shipped name or a path);
    the student's module runs `isolated`, in a sandboxed process of its own."""
    jobs = job_mix(seed)
    done: dict[int, float] = {}
    loaded: list[str] = []  # the module's name, once insmod took it
    errors: list[str] = []

    def job(index, arrival_ns, cpu_us):
        def run(proc):
            yield Compute(cpu_us)
            done[index] = ((yield GetTime()) - arrival_ns) / 1e6

        return run

    def launcher(proc):
        try:
            info = yield ModLoad(spec, isolated=isolated)
        except SyscallError as exc:
            errors.append(f"insmod refused it: {exc}")
            return
        loaded.append(info["name"])
        t0 = yield GetTime()
        for i, j in enumerate(jobs):
            now = yield GetTime()
            if t0 + j.arrival_ns > now:
                yield Sleep((t0 + j.arrival_ns - now) / 1000)
            yield Spawn(job(i, t0 + j.arrival_ns, j.cpu_us), (f"{j.estimate_ms:.2f}",), name=j.kind)

    k = boot(cpus=1, gpu=None, seed=seed)
    try:
        k.spawn(launcher, name="launcher")
        k.run()
        return Run(done, errors[0] if errors else verdict(k, loaded, len(done), len(jobs)))
    finally:
        k.shutdown()


def verdict(k, loaded: list[str], finished: int, jobs: int) -> str | None:
    """What went wrong in a run whose insmod was not refused, or None."""
    if not loaded:
        return "the launcher never loaded the advisor"
    rec = k.mlaas.modules[loaded[0]]
    if rec.state != "live":
        return f"{rec.name} was ejected: {rec.report.reason}: {rec.report.message}"
    if finished != jobs:
        return f"only {finished} of {jobs} jobs finished"
    return None


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def student_run(lab_file, seed: int) -> Run:
    run = run_mix(str(lab_file), seed, isolated=True)
    assert run.error is None, run.error
    return run


def improvement(student: float, baseline: float) -> float:
    return 1.0 - student / baseline


def compared(what: str, student: float, baseline: float, needed: float) -> str:
    """A line for a failed comparison: "mean completion 58.1 ms, rr 54.1 ms: 7% higher; ..."."""
    change = improvement(student, baseline)
    how = f"{100 * change:.0f}% lower" if change >= 0 else f"{-100 * change:.0f}% higher"
    return f"{what} {student:.1f} ms, rr {baseline:.1f} ms: {how}; needs {100 * needed:.0f}% lower"


# -- the graded tests ------------------------------------------------------------------------


@pytest.mark.points(10)
def test_advisor_loads_as_a_sched_advisor(malv_boot, lab_file):
    """the advisor loads as a sched advisor"""
    rec = malv_boot(cpus=1, gpu=None).mlaas.insmod(str(lab_file), isolated=True)
    assert rec.kind == "sched", f"{rec.name} is a {rec.kind} advisor, not a sched advisor"


@pytest.mark.points(20)
def test_every_job_finishes_and_the_advisor_stays_loaded(lab_file):
    """every job finishes, and the advisor is never ejected"""
    assert len(student_run(lab_file, MIX_SEED).completion_ms) == JOBS


@pytest.mark.points(40)
def test_mean_completion_is_at_least_20_percent_below_round_robin(lab_file):
    """mean completion time at least 20% below round robin's"""
    ours = mean(student_run(lab_file, MIX_SEED).completion_ms.values())
    rr = mean(run_mix("rr", MIX_SEED).completion_ms.values())
    assert improvement(ours, rr) >= 0.20, compared("mean completion", ours, rr, 0.20)


@pytest.mark.points(15)
def test_short_jobs_finish_at_least_30_percent_sooner_than_under_round_robin(lab_file):
    """short jobs' mean completion at least 30% below round robin's"""
    short = [i for i, j in enumerate(job_mix(MIX_SEED)) if j.kind == "short"]
    ours = mean(student_run(lab_file, MIX_SEED).completion_ms[i] for i in short)
    rr = mean(run_mix("rr", MIX_SEED).completion_ms[i] for i in short)
    assert improvement(ours, rr) >= 0.30, compared("short jobs' mean completion", ours, rr, 0.30)


@pytest.mark.points(15)
def test_a_second_mix_also_runs_at_least_20_percent_faster_than_round_robin(lab_file):
    """on a second mix too, mean completion at least 20% below round robin's"""
    ours = mean(student_run(lab_file, SECOND_MIX_SEED).completion_ms.values())
    rr = mean(run_mix("rr", SECOND_MIX_SEED).completion_ms.values())
    assert improvement(ours, rr) >= 0.20, compared("second mix: mean completion", ours, rr, 0.20)
