"""The shipped modules, each against the behaviour its docstring promises."""

from __future__ import annotations

import random
import statistics
from collections import OrderedDict
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from workloads import cpu_worker

from kernel import Kernel
from kernel.memory import PAGE_SIZE
from kernel.traps import (
    Call,
    Compute,
    GetTime,
    MemMap,
    MemRead,
    MemWrite,
    Message,
    NewEndpoint,
    Recv,
    ReplyRecv,
    Sleep,
    Spawn,
)


def reader(refs, pages, results, write_first=False):
    """Maps `pages` pages and reads one byte of each page in `refs`."""

    def prog(proc):
        base = yield MemMap(pages)
        if write_first:
            for i in range(pages):
                yield MemWrite(base + i * PAGE_SIZE, b"\x01")
        start = results.setdefault("faults_before", None)
        results["start"] = start
        for page in refs:
            yield MemRead(base + page * PAGE_SIZE, 1)
        results["done"] = True

    return prog


def faults_under(module, refs, pages, frames, write_first=False, params=None):
    k = Kernel(seed=0, cpus=1, frames=frames)
    try:
        rec = k.mlaas.insmod(module, params) if module else None
        results: dict = {}
        k.spawn(reader(refs, pages, results, write_first))
        k.run()
        assert results["done"]
        assert rec is None or rec.state == "live", rec.report
        return k.mm.faults, rec, rec.advisor if rec else None  # the advisor goes with the kernel
    finally:
        k.shutdown()


def lru_faults(refs, frames):
    cache: OrderedDict = OrderedDict()
    faults = 0
    for page in refs:
        if page in cache:
            cache.move_to_end(page)
            continue
        faults += 1
        if len(cache) >= frames:
            cache.popitem(last=False)
        cache[page] = None
    return faults


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(0, 11), min_size=1, max_size=150))
def test_lru_faults_exactly_as_least_recently_used_replacement(refs):
    faults, _, _ = faults_under("lru", refs, 12, 6)
    assert faults == lru_faults(refs, 6)


def test_clock_gives_referenced_pages_a_second_chance():
    # A hot page touched between every two cold ones survives under CLOCK
    # (its bit is set again before the hand comes back) but not under FIFO.
    refs = [p for cold in range(1, 40) for p in (0, cold)]
    faults, rec, _ = faults_under("clock", refs, 40, 4)
    fifo, resident = 0, []
    for page in refs:
        if page not in resident:
            fifo += 1
            resident = [*resident[-3:], page]
    assert fifo >= 39 + 10  # FIFO loses the hot page every few cold ones
    assert faults <= 39 + 3  # CLOCK keeps it but for the odd full sweep
    assert rec.calls > 0


def test_leap_prefetches_along_the_majority_trend():
    from mlaas_modules.leap import majority_trend

    assert majority_trend([1, 2, 3, 4, 5]) == 1
    assert majority_trend([10, 8, 6, 4, 2]) == -2
    assert majority_trend([1, 9, 2, 7, 3]) is None
    assert majority_trend([0, 5, 1, 2, 3, 4, 5, 6, 7, 8]) == 1  # noise early in the window

    refs = list(range(200)) * 2  # two sequential scans, in a region larger than memory
    base, _, _ = faults_under(None, refs, 200, 32, write_first=True)
    leap, _, leap_advisor = faults_under("leap", refs, 200, 32, write_first=True)
    assert leap < base / 2
    assert leap_advisor.window and max(leap_advisor.window.values()) > 1


def test_learned_warmth_learns_a_loop_that_lru_cannot_hold_and_uses_infer():
    refs = list(range(48)) * 60  # a loop 1.5x memory: LRU misses every time
    lru, _, _ = faults_under("lru", refs, 48, 32, write_first=True)
    learned, rec, advisor = faults_under("learned_warmth", refs, 48, 32, write_first=True)
    assert learned < 0.8 * lru
    assert rec.infer_rows > 0 and advisor.model.version > 0  # trained weights were published
    assert len(advisor.samples) > 0  # its samples live in the feature store


def test_applaunch_predicts_the_next_app_and_shortens_its_launch():
    apps = ["mail", "browser", "editor", "music"]
    chain = {"mail": "browser", "browser": "editor", "editor": "music", "music": "mail"}

    def app(proc):
        ep = proc.caps["ep"]
        base = yield MemMap(24)
        for i in range(24):
            yield MemWrite(base + i * PAGE_SIZE, b"x")
        r = yield Recv(ep)
        while True:
            for i in range(24):
                yield MemRead(base + i * PAGE_SIZE, 1)
            r = yield ReplyRecv(ep, r.reply, Message("done"))

    def launch_latency(module):
        k = Kernel(seed=0, cpus=1, frames=64)
        latencies: list[int] = []
        rng = random.Random(1)
        if module:
            k.mlaas.insmod(module)

        def user(proc):
            eps = {}
            for name in apps:
                eps[name] = yield NewEndpoint()
                yield Spawn(app, caps={"ep": eps[name]}, name=name)
            current = "mail"
            for _ in range(80):
                t0 = yield GetTime()
                yield Call(eps[current], Message("open"))
                latencies.append((yield GetTime()) - t0)
                yield Sleep(5000)  # the user looks at the app
                current = chain[current] if rng.random() < 0.8 else rng.choice(apps)

        k.spawn(user)
        k.run(until=5_000_000_000)
        rec = k.mlaas.modules.get(module) if module else None
        advisor = rec.advisor if rec else None  # the advisor goes with the kernel
        k.shutdown()
        return statistics.mean(latencies[10:]), advisor

    base, _ = launch_latency(None)
    predicted, advisor = launch_latency("applaunch")
    assert predicted < 0.75 * base
    assert advisor.predictions > 0 and advisor.predict("mail") == "browser"


def completion_ms(module, jobs, params=None):
    """Completion times of (start ms, CPU ms, name, size) jobs on one CPU."""
    k = Kernel(seed=0, cpus=1)
    done: dict[int, float] = {}
    if module:
        k.mlaas.insmod(module, params)

    def job(i, arrival_ns, cpu_ms):
        def run(proc):
            yield Compute(cpu_ms * 1000)
            done[i] = ((yield GetTime()) - arrival_ns) / 1e6

        return run

    def launcher(proc):
        for i, (start_ms, cpu_ms, name, size) in enumerate(jobs):
            now = yield GetTime()
            if start_ms * 1e6 > now:
                yield Sleep(start_ms * 1000 - now / 1000)
            yield Spawn(
                job(i, int(start_ms * 1e6), cpu_ms), (str(size), str(int(cpu_ms * 1000))), name=name
            )

    k.spawn(launcher)
    k.run()
    k.shutdown()
    return [done[i] for i in range(len(jobs))]


def test_rr_shares_the_cpu_in_turns():
    times = completion_ms("rr", [(0, 20, "a", 1), (0, 20, "b", 1)], {"slice_ms": "1"})
    assert abs(times[0] - times[1]) < 2.5  # they finish together, not one after the other


def test_mlfq_lets_a_short_job_pass_a_long_one_that_used_its_allotment():
    times = completion_ms("mlfq", [(0, 200, "long", 1), (50, 5, "short", 1)])
    assert times[1] < 15  # the long job sank a level; the newcomer starts at the top
    assert times[0] < 215  # and the long one still finishes


def test_learned_srpt_learns_runtimes_and_runs_short_jobs_first():
    rng = random.Random(0)
    jobs, t = [], 0.0
    for _ in range(120):
        t += rng.expovariate(1 / 12)
        name, base = rng.choice([("small", 2), ("big", 30)])
        size = rng.randint(10, 100)
        jobs.append((t, base * size / 50, name, size))
    rr = statistics.mean(completion_ms("rr", jobs))
    learned = statistics.mean(completion_ms("learned_srpt", jobs))
    oracle = statistics.mean(completion_ms("srpt_oracle", jobs))
    assert learned < 0.8 * rr
    assert learned < 1.3 * oracle


def test_expected_remaining_time_grows_for_a_job_past_its_prediction():
    from mlaas_modules.learned_srpt import expected_remaining

    mean = expected_remaining(0.0, 0.5, 0.0)
    assert mean == pytest.approx(1.1331, rel=1e-3)  # e^(sigma^2/2)
    assert expected_remaining(0.0, 0.5, 0.5) < mean
    assert expected_remaining(0.0, 0.5, 3.0) > expected_remaining(0.0, 0.5, 2.0) > 0
    assert expected_remaining(0.0, 0.5, 1e6) > 0  # far in the tail: still finite and positive


def test_srpt_oracle_runs_the_least_remaining_first():
    times = completion_ms("srpt_oracle", [(0, 30, "a", 1), (1, 3, "b", 1), (2, 10, "c", 1)])
    assert times[1] < times[2] < times[0]


def test_noop_defers_every_decision_to_round_robin():
    jobs = [(0, 5, "a", 1), (0, 7, "b", 1), (1, 2, "c", 1)]
    assert completion_ms("noop", jobs) == completion_ms(None, jobs)


def device(n_tpcs=8, clocks=range(210, 1411, 15)):
    return SimpleNamespace(n_tpcs=n_tpcs, clocks_mhz=clocks)


def test_first_fit_gives_each_context_its_own_tpcs(kernel: Kernel):
    kernel.mlaas.insmod("first_fit")
    masks = kernel.mlaas.gpu.tpc_allocation([0, 1, 2], 8)  # the driver's context ids
    assert masks == {0: 0b11, 1: 0b1100, 2: 0b110000}


def test_fixed_clock_pins_the_clock_and_a_clock_the_device_lacks_is_ejected(kernel: Kernel):
    kernel.mlaas.insmod("fixed_clock")
    assert kernel.mlaas.gpu.frequency(device()) == 1410
    kernel.mlaas.rmmod("fixed_clock")
    rec = kernel.mlaas.insmod("fixed_clock", {"clock_mhz": "1000"})
    assert kernel.mlaas.gpu.frequency(device()) is None
    assert (
        rec.state == "ejected"
        and "1000 MHz, not a clock of the device (210-1410 MHz)" in rec.report.message
    )


def test_gpu_answers_are_checked(kernel: Kernel, tmp_path):
    path = tmp_path / "greedy.py"
    path.write_text(
        "from kernel.mlaas import GpuAdvisor\n"
        "class Greedy(GpuAdvisor):\n"
        "    name = 'greedy'\n"
        "    def tpc_allocation(self, contexts, n_tpcs):\n"
        "        return {0: 1 << n_tpcs}\n"
    )
    rec = kernel.mlaas.insmod(str(path))
    assert kernel.mlaas.gpu.tpc_allocation([0], 8) is None
    assert (
        rec.report.reason == "invalid"
        and "must name at least one of TPCs 0-7" in rec.report.message
    )


def test_cpu_worker_helper_finishes(kernel: Kernel):
    results: list = []
    kernel.spawn(cpu_worker(1, results))
    kernel.run()
    assert results == ["done"]
