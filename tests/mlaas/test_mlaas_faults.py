"""Faults: a misbehaving module is ejected with an exit report, the kernel's
default policy takes over, and the workload completes with nothing lost."""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from workloads import broken, cpu_worker, memory_worker

from kernel import Kernel
from kernel.mlaas import MemoryAdvisor, SchedAdvisor
from kernel.mlaas.faults import ModuleError


def only_report(k: Kernel, name: str):
    rec = k.mlaas.modules[name]
    assert rec.state == "ejected" and rec.faults == 1
    assert k.mlaas.attached == {}
    (line,) = k.log.find("module ejected")
    assert line["module"] == name and line["level"] == "error"
    return rec.report


def test_faulty_advisor_is_ejected_and_default_policy_resumes(kernel: Kernel):
    kernel.mlaas.insmod(broken("raises"))
    results: list = []
    kernel.spawn(memory_worker(100, 2, results))  # 100 pages in 64 frames: evictions
    kernel.run()
    report = only_report(kernel, "raises")
    assert (report.kind, report.reason) == ("fault", "raised")
    assert "select_victim raised ZeroDivisionError" in report.message
    assert report.t_ns > 0
    assert results == [0]  # every page came back intact
    assert kernel.mm.policy.__class__.__name__ == "ClockPolicy"


def test_a_callback_that_never_returns_is_interrupted_and_ejected(kernel: Kernel):
    kernel.mlaas.insmod(broken("loops_forever"))
    results: list = []
    for ms in (3, 4):
        kernel.spawn(cpu_worker(ms, results))
    t0 = time.perf_counter()
    kernel.run()
    assert time.perf_counter() - t0 < 30.0  # 20 ms of CPU; generous for a busy host
    report = only_report(kernel, "loops_forever")
    assert report.reason == "overrun" and "interrupted by the watchdog" in report.message
    assert results == ["done", "done"]


def test_a_callback_over_its_budget_three_times_in_a_row_is_ejected(kernel: Kernel):
    kernel.mlaas.insmod(broken("overruns"))
    results: list = []
    for _ in range(3):
        kernel.spawn(cpu_worker(20, results))
    kernel.run()
    report = only_report(kernel, "overruns")
    assert (
        report.reason == "overrun" and "over its 100 us budget 3 calls in a row" in report.message
    )
    assert kernel.mlaas.modules["overruns"].calls == 3
    assert results == ["done"] * 3


def test_a_garbage_answer_is_ejected_as_invalid(kernel: Kernel):
    kernel.mlaas.insmod(broken("garbage"))
    results: list = []
    kernel.spawn(cpu_worker(5, results))
    kernel.run()
    report = only_report(kernel, "garbage")
    assert report.reason == "invalid" and "'not a task'" in report.message
    assert results == ["done"]


def test_a_module_that_starves_a_task_is_ejected_by_the_watchdog(kernel: Kernel):
    kernel.mlaas.starve_timeout_ns = 20_000_000
    kernel.mlaas.insmod(broken("starves"))
    results: list = []
    kernel.spawn(cpu_worker(200, results))  # the lowest pid: always chosen
    kernel.spawn(cpu_worker(5, results))  # starves behind it
    kernel.run()
    report = only_report(kernel, "starves")
    assert report.reason == "starved"
    assert "task worker (pid 2) was runnable for" in report.message
    assert 20_000_000 < report.t_ns < 60_000_000
    assert results == ["done", "done"]
    assert (
        kernel.loop.now_ns < 220_000_000
    )  # round robin resumed: the short task did not wait 200 ms


def test_the_watchdog_stops_when_nothing_is_runnable(kernel: Kernel):
    kernel.mlaas.insmod("rr")
    results: list = []
    kernel.spawn(cpu_worker(2, results))
    kernel.run()  # returns: the watchdog does not keep an idle loop alive
    assert results == ["done"] and kernel.loop.next_time() is None


def test_an_ejected_module_stays_listed_until_rmmod(malv_kernel: Kernel):
    malv_kernel.mlaas.starve_timeout_ns = 10**12
    out = malv_kernel.shell(f"insmod {broken('garbage')}; run spin 3; lsmod; modinfo garbage")
    assert "garbage              sched   ejected" in out
    assert "last exit:   fault (invalid) at" in out
    out = malv_kernel.shell("rmmod garbage; lsmod; modinfo garbage")
    assert (
        "garbage              sched" not in out.split("rmmod: garbage removed")[1].split("name:")[0]
    )
    assert "state:       not loaded" in out and "last exit:   fault (invalid)" in out
    assert "ERROR: module ejected" in malv_kernel.shell("dmesg")


# -- answers the module gives: explored with hypothesis ------------------------------

answers = st.one_of(
    st.none(), st.integers(-5, 200), st.booleans(), st.text(max_size=5), st.floats(allow_nan=True),
    st.lists(st.integers(-3, 300), max_size=40), st.tuples(st.integers(0, 9), st.integers(0, 300)),
    st.lists(st.tuples(st.integers(0, 9), st.integers(-3, 300)), max_size=5), st.dictionaries(st.text(), st.integers()),
)  # fmt: skip


class ScriptedMemory(MemoryAdvisor):
    name = "scripted"

    def select_victim(self, candidates):
        return self.answers["victim"]

    def prefetch(self, pid, vpn):
        return self.answers["prefetch"]


class ScriptedSched(SchedAdvisor):
    name = "scripted"

    def select_next(self, candidates, cpu):
        answer = self.answers["next"]
        return candidates[answer % len(candidates)] if answer == "pick" else answer

    def time_slice(self, task):
        return self.answers["slice"]


def _load_scripted(k: Kernel, cls, tmp_path, answers: dict):
    path = tmp_path / f"{cls.name}_{cls.kind}.py"
    path.write_text(
        "from kernel.mlaas import MemoryAdvisor, SchedAdvisor\n"
        f"from test_mlaas_faults import {cls.__name__} as _Base\n"
        f"class Scripted(_Base):\n    pass\n"
    )
    rec = k.mlaas.insmod(str(path))
    rec.advisor.answers = answers
    return rec


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(victim=answers, prefetch=answers)
def test_any_memory_advisor_answer_is_used_or_ejected_and_no_page_is_lost(
    tmp_path, victim, prefetch
):
    k = Kernel(seed=0, cpus=1, frames=16)
    try:
        rec = _load_scripted(k, ScriptedMemory, tmp_path, {"victim": victim, "prefetch": prefetch})
        results: list = []
        k.spawn(memory_worker(24, 2, results))
        k.run()
        assert results == [0]
        assert rec.state in ("live", "ejected")
        if rec.state == "ejected":
            assert rec.report.reason in ("invalid", "raised") and rec.report.message
    finally:
        k.shutdown()


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(nxt=st.one_of(answers, st.just("pick")), time_slice=answers)
def test_any_sched_advisor_answer_is_used_or_ejected_and_no_task_is_lost(tmp_path, nxt, time_slice):
    k = Kernel(seed=0, cpus=2)
    try:
        rec = _load_scripted(k, ScriptedSched, tmp_path, {"next": nxt, "slice": time_slice})
        results: list = []
        for ms in (2, 3, 4):
            k.spawn(cpu_worker(ms, results))
        k.run()
        assert results == ["done"] * 3
        if rec.state == "ejected":
            assert rec.report.reason in ("invalid", "raised")
        else:
            assert nxt is None or nxt == "pick"
    finally:
        k.shutdown()


def test_loading_code_that_never_finishes_is_refused(kernel: Kernel, tmp_path, monkeypatch):
    monkeypatch.setattr("kernel.mlaas.faults.LOAD_LIMIT_NS", 50_000_000)
    path = tmp_path / "hang.py"
    path.write_text("while True:\n    pass\n")
    with pytest.raises(
        ModuleError, match="ms of CPU without returning: interrupted by the watchdog"
    ):
        kernel.mlaas.insmod(str(path))
    assert not kernel.mlaas.modules
