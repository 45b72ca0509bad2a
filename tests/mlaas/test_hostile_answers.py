"""Hostile answers, explored: whatever an advisor answers, the kernel either uses
it with its real value or ejects the module ("invalid" or "raised"), never runs
the answer's own code to judge it, and completes the workload with no page or
task lost.

The answers are made, inside the module's callback, in one of these forms:
plain ints, ints whose comparisons, hash and conversions lie or raise, numpy
integer scalars (all judged by their real value); bools, floats (lying ones
too), numpy floats and bools, strings, numpy arrays, objects whose every dunder
raises or exits, real kernel tasks and copies of them (never integer answers).
Values run from the good ones to -1 and +-2**70.
"""

from __future__ import annotations

import copy
from itertools import pairwise
from types import SimpleNamespace
from typing import Any

import numpy as np
from adversary import (
    DETONATIONS,
    Bomb,
    IterBomb,
    LyingFloat,
    LyingInt,
    PairsMapping,
    RaisingInt,
    endless,
    fails_after,
    no_escape,
    run,
    stray_detonations,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from workloads import broken, cpu_worker, memory_worker

from kernel import Kernel

INT_KINDS = ("int", "lying_int", "raising_int", "np_int64")
OTHER_KINDS = (
    "bool", "np_bool", "float", "lying_float", "np_float64", "str", "np_array", "bomb",
    "exit_bomb", "copied_task", "real_task",
)  # fmt: skip
kinds = st.sampled_from(INT_KINDS + OTHER_KINDS)
HUGE = (2**70, -(2**70))
CLOCKS_MHZ = list(range(210, 1411, 15))
MAX_PREFETCH_PAGES = 32

explore = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def make(kind: str, value: int, k: Kernel) -> Any:
    """The answer of form `kind` for `value` (a numpy int that cannot hold the
    value is made a Python int; a task form takes task `value`, or any task)."""
    if kind == "int":
        return int(value)
    if kind == "lying_int":
        return LyingInt(value)
    if kind == "raising_int":
        return RaisingInt(value)
    if kind == "np_int64":
        return np.int64(value) if -(2**63) <= value < 2**63 else int(value)
    if kind == "bool":
        return bool(value)
    if kind == "np_bool":
        return np.bool_(value)
    if kind == "float":
        return float(value)
    if kind == "lying_float":
        return LyingFloat(value)
    if kind == "np_float64":
        return np.float64(value)
    if kind == "str":
        return str(value)
    if kind == "np_array":
        return np.array([value])
    if kind in ("bomb", "exit_bomb"):
        return Bomb("raise" if kind == "bomb" else "exit")
    task = k.tasks.get(value) or next(iter(k.tasks.values()))
    return task if kind == "real_task" else copy.copy(task)


def told(k: Kernel, kind: str, **callbacks):
    rec = k.mlaas.insmod(broken(f"answers_as_told_{kind}"))
    rec.advisor.told = callbacks
    return rec


def used_or_ejected(rec, valid: bool, may_eject: bool = False) -> None:
    """A good answer leaves the module in; a bad one ejects it, for an invalid
    answer or for what the answer raised while it was read.  Either way the
    kernel ran none of the answer's dunders to judge it (`__index__` aside)."""
    assert stray_detonations() == []
    if valid and not may_eject:
        assert rec.state == "live", rec.report
    elif not valid:
        assert rec.state == "ejected", "a bad answer was taken"
        assert rec.report.reason in ("invalid", "raised"), rec.report


def kernel_with(workload: str) -> tuple[Kernel, list]:
    DETONATIONS.clear()
    k = Kernel(seed=0, cpus=1, frames=16)
    results: list = []
    if workload == "memory":
        k.spawn(memory_worker(24, 2, results))  # 24 pages in 16 frames: evictions
    else:
        for ms in (2, 3, 4):
            k.spawn(cpu_worker(ms, results))
    return k, results


# -- memory ---------------------------------------------------------------------------

victims = st.one_of(
    st.tuples(st.just("candidate"), st.integers(0, 63)),
    st.tuples(st.just("not a candidate"), st.sampled_from([-1, 16, 10**6, *HUGE])),
)


@explore
@given(kind=kinds, victim=victims)
def test_a_victim_is_evicted_by_its_real_value_or_the_module_is_ejected(kind, victim):
    k, results = kernel_with("memory")
    try:
        pairs: list[list] = []  # [victim answered, frame then evicted]
        where, value = victim

        def select_victim(candidates):
            real = candidates[value % len(candidates)] if where == "candidate" else value
            pairs.append([real, None])
            return make(kind, real, k)

        def on_evict(frame, pid, vpn):
            if pairs and pairs[-1][1] is None:
                pairs[-1][1] = frame

        rec = told(k, "memory", select_victim=select_victim, on_evict=on_evict)
        run(k)
        assert results == [0]
        valid = kind in INT_KINDS and where == "candidate"
        used_or_ejected(rec, valid)
        if valid:
            assert pairs and all(answered == evicted for answered, evicted in pairs)
    finally:
        k.shutdown()


offsets = st.one_of(st.integers(-4, 40), st.sampled_from(HUGE))
vpn_items = st.tuples(st.just("vpn"), kinds, offsets)
pair_items = st.tuples(st.just("pair"), kinds, st.sampled_from(["own", "none"]), kinds, offsets)
containers = st.sampled_from(["list", "tuple", "generator", "endless", "ndarray", "fails_after"])


def _item(spec: tuple, pid: int, vpn: int, k: Kernel) -> tuple[Any, bool, bool]:
    """A prefetch item, whether it is well-formed, and whether its page is far out."""
    offset = spec[-1]
    page = offset if offset in HUGE else vpn + offset
    if spec[0] == "vpn":
        return make(spec[1], page, k), spec[1] in INT_KINDS, offset in HUGE
    _, pid_kind, whose, vpn_kind, _ = spec
    owner = pid if whose == "own" else 999
    item = (make(pid_kind, owner, k), make(vpn_kind, page, k))
    return item, pid_kind in INT_KINDS and vpn_kind in INT_KINDS, offset in HUGE


@explore
@given(
    container=containers,
    items=st.lists(st.one_of(vpn_items, pair_items), max_size=40),
    stop_after=st.integers(0, 40),
)
def test_pages_to_prefetch_are_read_at_most_32_by_their_real_values(container, items, stop_after):
    k, results = kernel_with("memory")
    try:
        read: list[tuple[bool, bool]] = []  # (well-formed, far out) of the items the kernel reads

        def prefetch(pid, vpn):
            made = [_item(spec, pid, vpn, k) for spec in items]
            answer: Any = [item for item, _, _ in made]
            if container == "ndarray":  # the plain vpns, as one numpy array
                pages = [vpn + s[-1] for s in items if s[0] == "vpn" and s[-1] not in HUGE]
                made, answer = [(None, True, False)] * len(pages), np.array(pages, np.int64)
            elif container == "endless":
                made, answer = made[:1] * MAX_PREFETCH_PAGES, endless(answer[0]) if made else []
            elif container == "fails_after":
                made, answer = made[:stop_after], fails_after(answer, stop_after)
            elif container == "tuple":
                answer = tuple(answer)
            elif container == "generator":
                answer = iter(answer)
            read[:] = [(ok, far) for _, ok, far in made[:MAX_PREFETCH_PAGES]]
            return answer

        rec = told(k, "memory", prefetch=prefetch)
        run(k)
        assert results == [0]
        # fails_after raises when the kernel asks for more than it yields
        raised = container == "fails_after" and min(stop_after, len(items)) < MAX_PREFETCH_PAGES
        well_formed = all(ok for ok, _ in read)
        far = any(far for _, far in read)
        used_or_ejected(rec, well_formed and not raised, may_eject=far)
    finally:
        k.shutdown()


@explore
@given(kind=st.sampled_from(INT_KINDS + OTHER_KINDS[:6] + OTHER_KINDS[-2:]))
def test_a_prefetch_answer_that_is_not_a_collection_ejects_the_module(kind):
    k, results = kernel_with("memory")
    try:
        rec = told(k, "memory", prefetch=lambda pid, vpn: make(kind, vpn + 1, k))
        run(k)
        assert results == [0]
        used_or_ejected(rec, valid=False)
    finally:
        k.shutdown()


def test_a_prefetch_answer_whose_iteration_raises_ejects_the_module():
    k, results = kernel_with("memory")
    try:
        rec = told(k, "memory", prefetch=lambda pid, vpn: IterBomb())
        run(k)
        assert results == [0]
        used_or_ejected(rec, valid=False)
    finally:
        k.shutdown()


# -- sched ----------------------------------------------------------------------------

choices = st.one_of(
    st.tuples(st.just("candidate"), st.integers(0, 9)),
    st.tuples(st.just("no opinion"), st.just(0)),
    st.tuples(kinds, st.integers(0, 9)),
)


@explore
@given(choice=choices)
def test_the_next_task_is_one_of_the_candidates_given_or_the_module_is_ejected(choice):
    k, results = kernel_with("cpu")
    try:
        events: list[tuple[str, int | None]] = []
        form, index = choice

        def select_next(candidates, cpu):
            view = candidates[index % len(candidates)]
            if form == "no opinion":
                events.append(("select", None))
                return None
            events.append(("select", view.pid))
            return view if form == "candidate" else make(form, view.pid, k)

        def time_slice(task):
            events.append(("slice", task.pid))
            return None

        rec = told(k, "sched", select_next=select_next, time_slice=time_slice)
        run(k)
        assert results == ["done"] * 3
        valid = form in ("candidate", "no opinion")
        used_or_ejected(rec, valid)
        if valid:
            for (what, chosen), (_, then) in pairwise(events):
                assert what != "select" or chosen is None or chosen == then
    finally:
        k.shutdown()


slices = st.sampled_from([10_000, 2_000_000, 10_000_000_000, 9_999, 10_000_000_001, 0, -1, *HUGE])


@explore
@given(kind=kinds, value=slices)
def test_a_time_slice_is_granted_by_its_real_value_or_the_module_is_ejected(kind, value):
    k, results = kernel_with("cpu")
    try:
        rec = told(k, "sched", time_slice=lambda task: make(kind, value, k))
        with no_escape():
            granted = k.sched.time_slice(k.tasks[1])
        run(k)
        assert results == ["done"] * 3
        valid = kind in INT_KINDS and 10_000 <= value <= 10_000_000_000
        used_or_ejected(rec, valid)
        if valid:
            assert type(granted) is int and granted == value
        else:
            assert granted == k.sched.slice_ns
    finally:
        k.shutdown()


# -- gpu and power ----------------------------------------------------------------------

masks = st.sampled_from([1, 3, 255, 0, 256, -1, *HUGE])
entries = st.lists(
    st.tuples(st.sampled_from([1, 2, 3]), kinds, kinds, masks),
    min_size=1, max_size=3, unique_by=lambda e: e[0],
)  # fmt: skip


@explore
@given(container=st.sampled_from(["dict", "pairs", "list"]), entries=entries)
def test_a_tpc_allocation_is_copied_into_plain_ints_or_the_module_is_ejected(container, entries):
    k, results = kernel_with("cpu")
    try:

        def tpc_allocation(contexts, n_tpcs):
            if container == "dict":
                return {ctx: make(mask_kind, mask, k) for ctx, _, mask_kind, mask in entries}
            pairs = [(make(kk, ctx, k), make(mk, mask, k)) for ctx, kk, mk, mask in entries]
            return PairsMapping(pairs) if container == "pairs" else pairs

        rec = told(k, "gpu", tpc_allocation=tpc_allocation)
        with no_escape():
            answer = k.mlaas.gpu.tpc_allocation([1, 2], 8)
        run(k)
        assert results == ["done"] * 3
        valid = container != "list" and all(
            (container == "dict" or key_kind in INT_KINDS)
            and ctx in (1, 2)
            and mask_kind in INT_KINDS
            and 0 < mask < 256
            for ctx, key_kind, mask_kind, mask in entries
        )
        used_or_ejected(rec, valid)
        if valid:
            assert type(answer) is dict
            assert all(type(ctx) is int and type(mask) is int for ctx, mask in answer.items())
            assert answer == {ctx: mask for ctx, _, _, mask in entries}
        else:
            assert answer is None
    finally:
        k.shutdown()


@explore
@given(kind=kinds, value=st.sampled_from([1410, 210, 225, 1000, 1411, 0, -1, *HUGE]))
def test_a_clock_is_one_of_the_device_s_by_its_real_value_or_the_module_is_ejected(kind, value):
    k, results = kernel_with("cpu")
    try:
        rec = told(k, "power", frequency=lambda device: make(kind, value, k))
        with no_escape():
            clock = k.mlaas.gpu.frequency(SimpleNamespace(clocks_mhz=CLOCKS_MHZ))
        run(k)
        assert results == ["done"] * 3
        valid = kind in INT_KINDS and value in CLOCKS_MHZ
        used_or_ejected(rec, valid)
        if valid:
            assert type(clock) is int and clock == value
        else:
            assert clock is None
    finally:
        k.shutdown()
