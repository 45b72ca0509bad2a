"""Grader of lab memory: the student's page replacement against LRU and OPT.

A task on a kernel with 32 frames of memory maps a region several times
larger, writes every page once (so the data lives in swap), loads the
advisor with the module trap, and reads one byte of each page of a seeded
reference string (`exp.memory.reference_string`).  Faults are counted over
the reads only.  LRU (the shipped `lru`) runs the same string from the same
memory state, and Belady's OPT (`exp.memory.belady_faults`) is computed
offline from that state: the fewest faults any demand pager could have.
The grade asks for part of the LRU-to-OPT gap, in faults, to be closed.
"""

from __future__ import annotations

import functools
import random

import attrs
import pytest

from exp.memory import belady_faults, reference_string
from image.labs import advisor_loads
from kernel import boot
from kernel.errors import SyscallError
from kernel.memory import PAGE_SIZE
from kernel.traps import MemMap, MemRead, MemWrite, ModLoad

FRAMES = 32
ACCESSES = 4000
GAP_TO_CLOSE = 0.20


@attrs.frozen
class Run:
    faults: int
    resident_at_start: frozenset[int]  # pages of the region in memory when the reads began
    error: str | None


@functools.cache
def references(workload: str, seed: int) -> tuple[int, tuple[int, ...]]:
    pages, refs = reference_string(workload, ACCESSES, FRAMES, random.Random(f"lab:{seed}"))
    return pages, tuple(refs)


#: Checked once, before any test: the student's module loads, isolated.
student_code_loads = advisor_loads


@functools.cache
def run_string(spec: str, workload: str, seed: int, isolated: bool = False) -> Run:
    """Read the reference string with the module `spec` (a shipped name or a
    path) loaded; the student's runs `isolated`, in a sandboxed process."""
    pages, refs = references(workload, seed)
    probe: dict = {"loaded": None, "error": None}

    def reader(proc):
        base = yield MemMap(pages)
        for i in range(pages):
            yield MemWrite(base + i * PAGE_SIZE, b"\x01")
        try:
            probe["loaded"] = (yield ModLoad(spec, isolated=isolated))["name"]
        except SyscallError as exc:
            probe["error"] = f"insmod refused it: {exc}"
            return
        table = k.tasks[proc.pid].aspace.table
        first = base // PAGE_SIZE
        probe["resident"] = frozenset(v - first for v, pte in table.items() if pte.frame >= 0)
        probe["faults"] = k.mm.faults
        wrong = 0
        for page in refs:
            wrong += (yield MemRead(base + page * PAGE_SIZE, 1)) != b"\x01"
        probe["faults"] = k.mm.faults - probe["faults"]
        probe["wrong"] = wrong

    k = boot(cpus=1, gpu=None, frames=FRAMES)
    try:
        k.spawn(reader, name="reader")
        k.run()
        error = probe["error"] or verdict(k, probe)
        return Run(probe.get("faults", 0), probe.get("resident", frozenset()), error)
    finally:
        k.shutdown()


def verdict(k, probe: dict) -> str | None:
    """What went wrong in a run whose insmod was not refused, or None."""
    rec = k.mlaas.modules[probe["loaded"]]
    if rec.state != "live":
        return f"{rec.name} was ejected: {rec.report.reason}: {rec.report.message}"
    if "wrong" not in probe:
        return "the reader did not finish"
    if probe["wrong"]:
        return f"{probe['wrong']} reads returned the wrong data"
    return None


def student_run(lab_file, workload: str, seed: int) -> Run:
    run = run_string(str(lab_file), workload, seed, isolated=True)
    assert run.error is None, run.error
    return run


def gap_closed(lab_file, workload: str, seed: int) -> tuple[float, str]:
    """The fraction of the LRU-to-OPT gap in faults the student's advisor
    closes, and a line that says how it went."""
    ours = student_run(lab_file, workload, seed)
    lru = run_string("lru", workload, seed)
    assert lru.error is None, lru.error
    opt = belady_faults(references(workload, seed)[1], FRAMES, set(ours.resident_at_start))
    closed = (lru.faults - ours.faults) / (lru.faults - opt)
    line = (
        f"{workload}: {ours.faults} faults, LRU {lru.faults}, OPT {opt}: "
        f"{100 * closed:.0f}% of the gap closed, needs {100 * GAP_TO_CLOSE:.0f}%"
    )
    return closed, line


# -- the graded tests ------------------------------------------------------------------------


@pytest.mark.points(10)
def test_advisor_loads_as_a_memory_advisor(malv_boot, lab_file):
    """the advisor loads as a memory advisor"""
    rec = malv_boot(cpus=1, gpu=None).mlaas.insmod(str(lab_file), isolated=True)
    assert rec.kind == "memory", f"{rec.name} is a {rec.kind} advisor, not a memory advisor"


@pytest.mark.points(20)
def test_every_read_returns_its_data_and_the_advisor_stays_loaded(lab_file):
    """every read returns the data written, and the advisor is never ejected"""
    run = student_run(lab_file, "sequential", 1)
    assert run.faults > 0, "no page faulted: the reads did not run"


@pytest.mark.points(40)
def test_closes_a_fifth_of_the_lru_to_opt_gap_on_a_hot_set_with_a_scan(lab_file):
    """hot set + scan: at least 20% of the LRU-to-OPT gap closed"""
    closed, line = gap_closed(lab_file, "sequential", 1)
    assert closed >= GAP_TO_CLOSE, line


@pytest.mark.points(30)
def test_closes_a_fifth_of_the_lru_to_opt_gap_on_zipf_popularity(lab_file):
    """Zipf popularity: at least 20% of the LRU-to-OPT gap closed"""
    closed, line = gap_closed(lab_file, "zipf", 2)
    assert closed >= GAP_TO_CLOSE, line
