"""Containment: a faulty or hostile in-process module never crashes, hangs or
corrupts the kernel.

Each test loads one deliberately broken module from broken/ and states what
the kernel does about it: the module is ejected with the right reason (or its
load is refused), the kernel's default policy takes over, nothing the module
returned or raised is touched outside the guard, and the workload completes
with no task, page or message lost.  The weapons and the probes are in
`adversary.py`.
"""

from __future__ import annotations

import copy
import gc
import os
import shutil
import threading
import time
from types import SimpleNamespace

import pytest
from adversary import (
    DETONATIONS,
    Bomb,
    back_doors,
    no_escape,
    run,
    stray_detonations,
    threads_in,
    wait_for,
)
from workloads import broken, cpu_worker, memory_worker

from kernel import Kernel
from kernel.mlaas import ModuleError, TaskView
from kernel.task import State

#: The most wall time a test that meets a hang may take (the machine may be busy).
WALL_LIMIT_S = 30.0
CLOCKS_MHZ = list(range(210, 1411, 15))
SHIPPED = os.path.join(os.path.dirname(__file__), "..", "..", "mlaas_modules")


@pytest.fixture(autouse=True)
def no_detonations_yet():
    DETONATIONS.clear()
    yield
    DETONATIONS.clear()


@pytest.fixture
def short_limits(monkeypatch):
    """Shorter watchdog limits for the hang tests (only those the kernel keeps in
    kernel/mlaas/faults.py; HANG_LIMIT_NS is the wall-clock limit of a blocked call,
    LOAD_HANG_LIMIT_NS that of loading)."""
    monkeypatch.setattr("kernel.mlaas.faults.LOAD_LIMIT_NS", 500_000_000)
    monkeypatch.setattr("kernel.mlaas.faults.HANG_LIMIT_NS", 500_000_000)
    monkeypatch.setattr("kernel.mlaas.faults.LOAD_HANG_LIMIT_NS", 500_000_000)


def ejected(k: Kernel, name: str, reason: str):
    """The module's record, after checking it was ejected once, for `reason`."""
    rec = k.mlaas.modules[name]
    assert rec.state == "ejected", f"{name} is {rec.state}"
    assert (rec.report.kind, rec.report.reason) == ("fault", reason), rec.report
    assert rec.faults == 1 and rec.kind not in k.mlaas.attached
    assert [line["module"] for line in k.log.find("module ejected")] == [name]
    return rec


def cpu_workload(k: Kernel, tasks: int = 2, results: list | None = None) -> list:
    """Spawn `tasks` cpu workers (2, 3, ... ms); they append "done" to `results`."""
    results = [] if results is None else results
    for i in range(tasks):
        k.spawn(cpu_worker(2 + i, results))
    return results


def device():
    return SimpleNamespace(n_tpcs=8, clocks_mhz=CLOCKS_MHZ)


def exact_ints(mapping) -> bool:
    return all(type(key) is int and type(value) is int for key, value in mapping.items())


# ===================================================================
# 1. Answers that lie about their type
# ===================================================================


@pytest.mark.parametrize("target", ["minus_one", "protected"])
def test_a_victim_that_lies_is_judged_by_its_real_value_and_no_page_is_corrupted(
    kernel: Kernel, target
):
    kernel.mlaas.insmod(broken("lying_victim"), {"target": target})
    results: list = []
    kernel.spawn(memory_worker(100, 2, results))  # 100 pages in 64 frames: evictions
    run(kernel)
    ejected(kernel, "lying_victim", "invalid")
    assert results == [0]  # every page came back intact
    assert kernel.mm.policy.__class__.__name__ == "ClockPolicy"


def test_a_lying_victim_whose_real_value_is_a_candidate_is_used_with_that_value(kernel: Kernel):
    rec = kernel.mlaas.insmod(broken("lying_victim"), {"target": "valid"})
    results: list = []
    kernel.spawn(memory_worker(100, 2, results))
    run(kernel)
    assert rec.state == "live" and results == [0]
    assert rec.advisor.intended and rec.advisor.evicted == rec.advisor.intended


def test_a_lying_time_slice_is_judged_and_used_by_its_real_value(kernel: Kernel):
    kernel.mlaas.insmod(broken("lying_slice"), {"real": -1})
    results = cpu_workload(kernel)
    run(kernel)
    ejected(kernel, "lying_slice", "invalid")
    assert results == ["done", "done"]

    kernel.mlaas.rmmod("lying_slice")
    rec = kernel.mlaas.insmod(broken("lying_slice"), {"real": 2_000_000})
    results = cpu_workload(kernel)
    task = kernel.tasks[max(kernel.tasks)]
    with no_escape():
        granted = kernel.sched.time_slice(task)
    assert type(granted) is int and granted == 2_000_000
    run(kernel)
    assert rec.state == "live" and results == ["done", "done"]


def test_a_lying_tpc_mask_is_judged_and_used_by_its_real_value(kernel: Kernel):
    kernel.mlaas.insmod(broken("lying_mask"), {"real": -1})
    with no_escape():
        assert kernel.mlaas.gpu.tpc_allocation([1, 2], 8) is None
    ejected(kernel, "lying_mask", "invalid")

    kernel.mlaas.rmmod("lying_mask")
    rec = kernel.mlaas.insmod(broken("lying_mask"), {"real": 0b11})
    with no_escape():
        masks = kernel.mlaas.gpu.tpc_allocation([1, 2], 8)
    assert type(masks) is dict and exact_ints(masks)
    assert sorted(masks.items()) == [(1, 3), (2, 3)]
    assert rec.state == "live"


def test_a_lying_clock_is_judged_and_used_by_its_real_value(kernel: Kernel):
    kernel.mlaas.insmod(broken("lying_clock"), {"real": -1})
    with no_escape():
        assert kernel.mlaas.gpu.frequency(device()) is None
    ejected(kernel, "lying_clock", "invalid")

    kernel.mlaas.rmmod("lying_clock")
    rec = kernel.mlaas.insmod(broken("lying_clock"), {"real": 1410})
    with no_escape():
        clock = kernel.mlaas.gpu.frequency(device())
    assert type(clock) is int and clock == 1410
    assert rec.state == "live"


# ===================================================================
# 2. Module code that must never run outside the guard
# ===================================================================


def _told(k: Kernel, kind: str, **told):
    rec = k.mlaas.insmod(broken(f"answers_as_told_{kind}"))
    rec.advisor.told = told
    return rec


def _bomb_in_select_victim(k, how):
    _told(k, "memory", select_victim=lambda candidates: Bomb(how))
    results: list = []
    k.spawn(memory_worker(100, 1, results))
    run(k)
    return "told_memory", results == [0]


def _bomb_in_prefetch(k, how):
    _told(k, "memory", prefetch=lambda pid, vpn: [vpn + 1, Bomb(how)])
    results: list = []
    k.spawn(memory_worker(100, 1, results))
    run(k)
    return "told_memory", results == [0]


def _bomb_in_select_next(k, how):
    _told(k, "sched", select_next=lambda candidates, cpu: Bomb(how))
    results = cpu_workload(k)
    run(k)
    return "told_sched", results == ["done", "done"]


def _bomb_in_time_slice(k, how):
    _told(k, "sched", time_slice=lambda task: Bomb(how))
    results = cpu_workload(k)
    run(k)
    return "told_sched", results == ["done", "done"]


def _bomb_as_tpc_allocation(k, how):
    _told(k, "gpu", tpc_allocation=lambda contexts, n_tpcs: Bomb(how))
    with no_escape():
        answered = k.mlaas.gpu.tpc_allocation([1, 2], 8)
    return "told_gpu", answered is None


def _bomb_as_tpc_mask(k, how):
    _told(k, "gpu", tpc_allocation=lambda contexts, n_tpcs: {1: 1, 2: Bomb(how)})
    with no_escape():
        answered = k.mlaas.gpu.tpc_allocation([1, 2], 8)
    return "told_gpu", answered is None


def _bomb_as_frequency(k, how):
    _told(k, "power", frequency=lambda device: Bomb(how))
    with no_escape():
        answered = k.mlaas.gpu.frequency(device())
    return "told_power", answered is None


@pytest.mark.parametrize("how", ["raise", "exit", "hang"])
@pytest.mark.parametrize(
    "answer",
    [
        _bomb_in_select_victim, _bomb_in_prefetch, _bomb_in_select_next, _bomb_in_time_slice,
        _bomb_as_tpc_allocation, _bomb_as_tpc_mask, _bomb_as_frequency,
    ],
    ids=lambda f: f.__name__.removeprefix("_bomb_"),
)  # fmt: skip
def test_no_dunder_of_a_returned_object_runs_before_it_is_judged(kernel: Kernel, answer, how):
    """repr, str, ==, hash, len, bool, attribute lookups...: the kernel judges an
    answer by its type, so none of the bomb's dunders go off; only `__index__`
    may, inside the guard, where an integer is read (then what it does is the
    module's fault: it raised, or it hung and was interrupted)."""
    t0 = time.perf_counter()
    name, workload_ok = answer(kernel, how)
    assert time.perf_counter() - t0 < WALL_LIMIT_S
    assert stray_detonations() == []
    reason = "invalid" if not DETONATIONS else "overrun" if how == "hang" else "raised"
    ejected(kernel, name, reason)
    assert workload_ok


@pytest.mark.parametrize("how", ["raise", "exit", "hang"])
def test_an_exception_whose_str_goes_off_is_described_by_its_type_name(kernel: Kernel, how):
    kernel.mlaas.insmod(broken("raises_bomb_error"), {"how": how})
    results = cpu_workload(kernel)
    t0 = time.perf_counter()
    run(kernel)
    assert time.perf_counter() - t0 < WALL_LIMIT_S
    assert DETONATIONS == []
    rec = ejected(kernel, "raises_bomb_error", "raised")
    assert "BombError" in rec.report.message
    assert results == ["done", "done"]


def test_an_exception_whose_argument_goes_off_is_contained(kernel: Kernel):
    """A plain ValueError whose argument's __str__ calls sys.exit: describing it
    may run that code, but only under the guard."""
    kernel.mlaas.insmod(broken("raises_bomb_error"), {"how": "exit", "wrapped": True})
    results = cpu_workload(kernel)
    run(kernel)
    rec = ejected(kernel, "raises_bomb_error", "raised")
    assert "ValueError" in rec.report.message
    assert results == ["done", "done"]


@pytest.mark.parametrize(
    "how, reason", [("raise", "raised"), ("exit", "raised"), ("hang", "overrun")]
)
def test_a_sharing_policy_property_that_goes_off_is_read_under_the_guard(
    kernel: Kernel, short_limits, how, reason
):
    kernel.mlaas.insmod(broken("policy_goes_off"), {"how": how})
    t0 = time.perf_counter()
    with no_escape():
        assert kernel.mlaas.gpu.sharing_policy() is None
    assert time.perf_counter() - t0 < WALL_LIMIT_S
    ejected(kernel, "policy_goes_off", reason)
    assert DETONATIONS[:1] == ["sharing_policy"]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("how", ["raise", "exit", "hang"])
def test_a_del_that_goes_off_runs_under_the_guard(kernel: Kernel, short_limits, how):
    rec = kernel.mlaas.insmod(broken("deletes_badly"), {"how": how})
    results = cpu_workload(kernel, 3)
    t0 = time.perf_counter()
    run(kernel)
    gc.collect()
    assert time.perf_counter() - t0 < WALL_LIMIT_S
    assert "__del__" in DETONATIONS  # the answer was let go of, and its __del__ ran
    assert results == ["done", "done", "done"]
    if how == "hang":  # interrupted by the watchdog: an overrun
        ejected(kernel, "deletes_badly", "overrun")
    elif rec.state != "live":
        ejected(kernel, "deletes_badly", "raised")


# ===================================================================
# 3. KeyboardInterrupt and SystemExit belong to the host, not to a module
# ===================================================================


@pytest.mark.parametrize("exception", ["KeyboardInterrupt", "SystemExit"])
def test_an_interrupt_from_a_callback_ejects_the_module(kernel: Kernel, exception):
    kernel.mlaas.insmod(broken("interrupts"), {"exception": exception, "where": "select_next"})
    results = cpu_workload(kernel)
    run(kernel)
    rec = ejected(kernel, "interrupts", "raised")
    assert exception in rec.report.message
    assert results == ["done", "done"]


@pytest.mark.parametrize(
    "module, params",
    [
        ("interrupts", {"exception": "KeyboardInterrupt", "where": "on_load"}),
        ("interrupts", {"exception": "SystemExit", "where": "on_load"}),
        ("interrupts_at_import", None),
        ("exits_at_import", None),
    ],
)
def test_an_interrupt_while_loading_refuses_the_load(kernel: Kernel, module, params):
    with no_escape(), pytest.raises(ModuleError):
        kernel.mlaas.insmod(broken(module), params)
    assert not kernel.mlaas.modules and not kernel.mlaas.attached
    results = cpu_workload(kernel)
    run(kernel)
    assert results == ["done", "done"]


# ===================================================================
# 4. Hangs
# ===================================================================


@pytest.mark.parametrize("module", ["loops_forever", "sleeps_in_callback", "shrugs_off_watchdog"])
def test_a_callback_that_hangs_is_ended_and_ejected(kernel: Kernel, short_limits, module):
    kernel.mlaas.insmod(broken(module))
    results = cpu_workload(kernel)
    t0 = time.perf_counter()
    run(kernel)
    assert time.perf_counter() - t0 < WALL_LIMIT_S
    ejected(kernel, module, "overrun")
    assert results == ["done", "done"]
    assert wait_for(lambda: not threads_in(broken(module)))  # no part of it runs on


@pytest.mark.parametrize("module", ["sleeps_at_import", "loops_at_import"])
def test_loading_code_that_hangs_is_refused(kernel: Kernel, short_limits, module):
    t0 = time.perf_counter()
    with no_escape(), pytest.raises(ModuleError):
        kernel.mlaas.insmod(broken(module))
    assert time.perf_counter() - t0 < WALL_LIMIT_S
    assert not kernel.mlaas.modules
    kernel.mlaas.insmod("rr")
    results = cpu_workload(kernel)
    run(kernel)
    assert results == ["done", "done"]


# ===================================================================
# 5. Forged and foreign tasks
# ===================================================================


def _real_task(a: Kernel, b: Kernel, a_views: list):
    return lambda candidates: b.tasks[candidates[0].pid]


def _copied_task(a: Kernel, b: Kernel, a_views: list):
    return lambda candidates: copy.copy(b.tasks[candidates[0].pid])


def _foreign_task(a: Kernel, b: Kernel, a_views: list):
    return lambda candidates: a.tasks[candidates[0].pid]


def _foreign_view_of_a_pid_not_here(a: Kernel, b: Kernel, a_views: list):
    return lambda candidates: next(v for v in a_views if v.pid == 3)  # B has pids 1 and 2


def twins(a_tasks: int, b_module: str):
    """Kernels A and B, twins (same seed, so the same pids and names): A with a
    module that keeps the views it is handed, B with `b_module`."""
    a, b = Kernel(seed=0, cpus=1), Kernel(seed=0, cpus=1)
    a_views = a.mlaas.insmod(broken("collects_views")).advisor.views
    a_results = cpu_workload(a, a_tasks)
    return a, b, a_views, a_results, b.mlaas.insmod(broken(b_module))


def a_untouched(a: Kernel) -> bool:
    return all(t.cpu_ns == 0 and t.state is State.RUNNABLE for t in a.tasks.values())


@pytest.mark.parametrize(
    "forgery",
    [_real_task, _copied_task, _foreign_task, _foreign_view_of_a_pid_not_here],
    ids=lambda f: f.__name__.lstrip("_"),
)
def test_a_task_select_next_was_not_given_is_invalid_and_never_runs(forgery):
    a, b, a_views, a_results, rec = twins(3, "forges_tasks")
    try:
        rec.advisor.forgery = forgery(a, b, a_views)
        b_results = cpu_workload(b)
        run(b)
        ejected(b, "forges_tasks", "invalid")
        assert b_results == ["done", "done"]
        assert a_untouched(a)
        run(a)
        assert a_results == ["done"] * 3 and not a.tasks
    finally:
        a.shutdown()
        b.shutdown()


def test_a_view_from_another_kernel_names_a_task_of_this_kernel_only():
    """A's view of its pid 1 is, by value, B's view of B's pid 1: B may take it
    for its own task (or refuse it as invalid), but never runs A's task."""
    a, b, a_views, a_results, rec = twins(2, "forges_tasks")
    try:
        rec.advisor.forgery = lambda candidates: next(
            v for v in a_views if v.pid == candidates[0].pid
        )
        b_results = cpu_workload(b)
        run(b)
        assert b_results == ["done", "done"]
        assert rec.state == "live" or rec.report.reason == "invalid"
        assert a_untouched(a)
        run(a)
        assert a_results == ["done", "done"] and not a.tasks
    finally:
        a.shutdown()
        b.shutdown()


# ===================================================================
# 6. Views without back doors
# ===================================================================


def test_views_lead_nowhere_near_the_kernel(kernel: Kernel):
    memory = kernel.mlaas.insmod("lru")
    sched = kernel.mlaas.insmod(broken("collects_views"))
    results: list = []
    kernel.spawn(memory_worker(80, 1, results))
    cpu_workload(kernel, 2, results)
    run(kernel)
    assert sorted(map(str, results)) == ["0", "done", "done"]
    views = sched.advisor.views
    assert views and all(type(v) is TaskView for v in views)
    for view in {id(v): v for v in views}.values():
        assert back_doors(view) == []
        assert isinstance(view.pid, int) and isinstance(view.name, str)  # still readable
    assert back_doors(sched.advisor.ctx.sched) == []
    assert back_doors(memory.advisor.ctx.memory) == []
    assert getattr(memory.advisor.ctx, "sched", None) is None
    assert getattr(sched.advisor.ctx, "memory", None) is None
    for ctx in (memory.advisor.ctx, sched.advisor.ctx):
        assert not hasattr(ctx, "_kernel") and not hasattr(ctx, "_record")
        held = getattr(ctx, "__dict__", {}).values()
        assert not [v for v in held if type(v).__name__ in ("Kernel", "Mlaas", "ModuleRecord")]


def test_the_candidates_select_next_chooses_among_lead_nowhere_either(kernel: Kernel):
    rec = kernel.mlaas.insmod(broken("collects_views"))
    cpu_workload(kernel)
    run(kernel)
    assert rec.advisor.sequences
    for sequence in rec.advisor.sequences:
        assert back_doors(sequence) == []


# ===================================================================
# 7. Resources: CPU, memory, threads
# ===================================================================


def test_a_callback_far_over_its_cpu_budget_is_ejected_once(kernel: Kernel):
    rec = kernel.mlaas.insmod(broken("burns_cpu"))
    results = cpu_workload(kernel, 3)
    run(kernel)
    ejected(kernel, "burns_cpu", "overrun")
    assert rec.calls <= 3
    assert results == ["done", "done", "done"]


def test_a_healthy_module_is_not_ejected_because_the_host_is_busy(kernel: Kernel):
    """Threads that hold the interpreter for milliseconds at a time (a loop in C)
    make callbacks wait for their turn on the wall clock; on their own thread's
    CPU time they are as cheap as ever."""
    stop = threading.Event()

    def hog():
        while not stop.is_set():
            sum(range(1_000_000))

    hogs = [threading.Thread(target=hog, daemon=True) for _ in range(2)]
    memory = kernel.mlaas.insmod("lru")
    sched = kernel.mlaas.insmod("rr")
    results: list = []
    try:
        for thread in hogs:
            thread.start()
        kernel.spawn(memory_worker(100, 2, results))
        cpu_workload(kernel, 3, results)
        run(kernel)
    finally:
        stop.set()
        for thread in hogs:
            thread.join()
    assert (memory.state, sched.state) == ("live", "live")
    assert not kernel.log.find("module ejected")
    assert sorted(map(str, results)) == ["0", "done", "done", "done"]


def test_a_callback_that_grows_memory_past_the_limit_is_ejected_and_its_memory_freed(
    kernel: Kernel, monkeypatch
):
    # A lower limit than the kernel's own, so that the module is stopped early (it
    # would fill 768 MiB, more than the kernel allows in any case).
    monkeypatch.setattr("kernel.mlaas.faults.MEMORY_LIMIT_BYTES", 128 << 20, raising=False)
    hoards = kernel.mlaas.insmod(broken("hoards_memory")).advisor.hoards
    results = cpu_workload(kernel)
    run(kernel)
    ejected(kernel, "hoards_memory", "memory")
    assert results == ["done", "done"]
    assert len(hoards) == 1
    kernel.mlaas.rmmod("hoards_memory")
    gc.collect()
    assert hoards[0]() is None  # what the module allocated is gone


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
@pytest.mark.parametrize(
    "start_in, then_raise, stop",
    [
        ("on_load", False, "rmmod"),
        ("select_next", True, "ejection"),
        ("on_load", False, "shutdown"),
    ],
)
def test_a_thread_a_module_started_is_stopped(kernel: Kernel, start_in, then_raise, stop):
    path = broken("leaks_thread")
    rec = kernel.mlaas.insmod(path, {"start_in": start_in, "then_raise": then_raise})
    started = rec.advisor.started
    results = cpu_workload(kernel)
    run(kernel)
    assert results == ["done", "done"] and len(started) == 1
    if stop == "rmmod":
        assert threads_in(path)  # it runs while the module is in
        kernel.mlaas.rmmod("leaks_thread")
    elif stop == "ejection":
        ejected(kernel, "leaks_thread", "raised")
    else:
        assert threads_in(path)
        kernel.shutdown()
    assert wait_for(lambda: not threads_in(path)), "the module's thread still runs"


# ===================================================================
# 8. Identity: a shipped module's name belongs to it
# ===================================================================


def test_a_shipped_name_from_another_file_is_refused_unless_overridden(kernel: Kernel):
    with pytest.raises(ModuleError, match=r"(?i)lru.*shipped|shipped.*lru"):
        kernel.mlaas.insmod(broken("impostor_lru"))
    assert not kernel.mlaas.modules and not kernel.mlaas.attached
    rec = kernel.mlaas.insmod(broken("impostor_lru"), override=True)
    assert rec.state == "live" and rec.advisor.version == 1
    (row,) = kernel.mlaas.lsmod()
    assert row["name"] == "lru"
    assert os.path.realpath(row["origin"]) == os.path.realpath(broken("impostor_lru"))


def test_lsmod_tells_the_origin_and_reload_reloads_the_file_that_was_loaded(
    kernel: Kernel, tmp_path
):
    path = tmp_path / "my_lru.py"
    shutil.copy(broken("impostor_lru"), path)
    kernel.mlaas.insmod(str(path), override=True)
    kernel.mlaas.insmod("rr")
    kernel.mlaas.insmod(os.path.join(SHIPPED, "fixed_clock.py"))  # a shipped file, by its path
    origins = {row["name"]: row["origin"] for row in kernel.mlaas.lsmod()}
    assert origins["rr"] == "shipped" and origins["fixed_clock"] == "shipped"
    assert os.path.realpath(origins["lru"]) == os.path.realpath(path)

    path.write_text(path.read_text().replace("VERSION = 1", "VERSION = 2"))
    rec = kernel.mlaas.reload("lru")
    assert rec.state == "live" and rec.advisor.version == 2  # the edited file, not shipped lru
    origins = {row["name"]: row["origin"] for row in kernel.mlaas.lsmod()}
    assert os.path.realpath(origins["lru"]) == os.path.realpath(path)
    results: list = []
    kernel.spawn(memory_worker(80, 1, results))
    run(kernel)
    assert results == [0]


# ===================================================================
# 9. Reload of the shipped learned modules hands their state over
# ===================================================================


def test_reload_hands_learned_srpt_state_over(kernel: Kernel):
    old = kernel.mlaas.insmod("learned_srpt")
    results = cpu_workload(kernel, 4)
    run(kernel)
    seen, updates, sigma = set(old.advisor.seen), old.advisor.model.updates, old.advisor.sigma
    assert seen and updates == 4
    new = kernel.mlaas.reload("learned_srpt")
    assert new.state == "live" and new.report.reason == "reload"
    assert new.advisor.seen == seen and new.advisor.model.updates == updates
    assert new.advisor.sigma == sigma
    cpu_workload(kernel, 2, results)
    run(kernel)
    assert results == ["done"] * 6 and new.state == "live"
    assert new.advisor.model.updates == updates + 2  # it goes on learning


def test_reload_hands_learned_warmth_state_over(kernel: Kernel):
    old = kernel.mlaas.insmod("learned_warmth")
    results: list = []
    kernel.spawn(memory_worker(100, 2, results))
    run(kernel)
    t, pages, steps = old.advisor.t, len(old.advisor.pages), old.advisor.trainer.steps
    assert t > 0 and pages > 0 and steps > 0
    new = kernel.mlaas.reload("learned_warmth")
    assert new.state == "live" and new.report.reason == "reload"
    assert (new.advisor.t, len(new.advisor.pages), new.advisor.trainer.steps) == (t, pages, steps)
    kernel.spawn(memory_worker(100, 1, results))
    run(kernel)
    assert results == [0, 0] and new.state == "live"
    assert new.advisor.t > t  # it goes on counting


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_del_that_hangs_in_a_garbage_collection_is_ended(kernel: Kernel, monkeypatch):
    """The collector runs a module's cyclic garbage's __del__ wherever it runs,
    in the kernel's own code: a hang there is interrupted too."""
    monkeypatch.setattr("kernel.mlaas.faults.LOAD_HANG_LIMIT_NS", 300_000_000)  # a collection's
    kernel.mlaas.insmod(broken("hangs_in_collection"))
    results: list = []
    kernel.spawn(memory_worker(100, 2, results))
    t0 = time.perf_counter()
    kernel.run()
    gc.collect()  # whatever garbage is left is collected now, in the test's code
    assert time.perf_counter() - t0 < WALL_LIMIT_S
    assert results == [0]
