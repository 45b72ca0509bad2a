"""Isolated MLaaS modules: the same answers as in-process, and nothing a hostile
module does in its process reaches the kernel's (kernel/mlaas/isolated.py).

The hostile modules, one per attack, are in tests/mlaas/hostile/.  Each test
starts its own child; the kernel's side is a `FakeHost`.
"""

from __future__ import annotations

import os
import random
import struct
import threading
import time
import types

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernel.mlaas import loader
from kernel.mlaas.child import (
    MAX_CONTAINERS,
    TASK_FIELDS,
    FrameReader,
    ProtocolError,
    check_plain,
    decode,
    encode,
)
from kernel.mlaas.context import TaskView
from kernel.mlaas.faults import ModuleError, describe
from kernel.mlaas.isolated import (
    CHILD_ENV,
    MISS_STRIKES,
    NOTICE_BATCH,
    PASSED_ENV,
    IsolatedFault,
    Limits,
    start,
)

HERE = os.path.dirname(__file__)
MODULES = os.path.join(os.path.dirname(os.path.dirname(HERE)), "mlaas_modules")


def hostile(name: str) -> str:
    return os.path.join(HERE, "hostile", f"{name}.py")


def module(name: str) -> str:
    return os.path.join(MODULES, f"{name}.py")


class FakeHost:
    """The kernel's side of an isolated module: a clock, dmesg and a memory view
    of 64 frames, frame f holding page 10*f of task 1."""

    def __init__(self) -> None:
        self.now = 1_000
        self.logs: list[tuple[str, str, dict]] = []
        self.queries: list[tuple[str, str, tuple]] = []

    def now_ns(self) -> int:
        return self.now

    def log(self, level: str, event: str, fields: dict) -> None:
        self.logs.append((level, event, fields))

    def query(self, view: str, method: str, args: tuple):
        self.queries.append((view, method, args))
        if method == "nframes":
            return 64
        if method == "owner":
            if not 0 <= args[0] < 64:
                raise IndexError("list index out of range")
            return (1, 10 * args[0])
        if method == "swapped_pages":
            return [3, 4]
        raise NotImplementedError(method)


class View:
    """What the scheduler passes a sched advisor: a task's plain attributes."""

    def __init__(self, pid: int, cpu_ns: int = 0) -> None:
        self.pid, self.name, self.argv, self.parent = pid, f"task{pid}", (f"task{pid}",), 1
        self.created_ns, self.cpu_ns, self.state, self.alive = 100 * pid, cpu_ns, "runnable", True


class Device:
    clocks_mhz = (210, 810, 1410, 1980)
    clock_mhz = 1410
    busy_tpcs = 12
    n_tpcs = 66
    power_w = 312.5


@pytest.fixture
def host() -> FakeHost:
    return FakeHost()


@pytest.fixture
def isolate(host):
    """Start isolated modules; every one is closed after the test."""
    started = []

    def isolate(path: str, params=None, **limits):
        m = start(path, params, seed=7, host=host, limits=Limits(**limits))
        started.append(m)
        return m

    yield isolate
    for m in started:
        m.close()
        assert not _exists(m.pid)


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def in_process(path: str, params=None, seed=7):
    """The same module, loaded and constructed in this process with a plain ctx."""
    loaded = loader.load(path, lambda fn, *args: fn(*args))
    advisor = loaded.cls()
    advisor.ctx = types.SimpleNamespace(
        name=loaded.name,
        kind=loaded.kind,
        params=types.MappingProxyType(loader.convert_params(loaded, params)),
        rng=random.Random(f"{seed}:{loaded.name}"),
        now_ns=0,
    )
    loader.forget(loaded.module)
    return advisor


def _faults(call, reason: str, match: str = "") -> IsolatedFault:
    with pytest.raises(IsolatedFault) as info:
        call()
    assert info.value.reason == reason, info.value
    assert match in info.value.message
    return info.value


# -- the same answers as in-process -------------------------------------------------


def test_isolated_lru_answers_as_in_process_and_hands_its_state_over(isolate):
    m = isolate(module("lru"))
    assert (m.name, m.kind, m.budget_us, m.digest) == (
        "lru",
        "memory",
        2000.0,
        loader.digest(m.path),
    )
    assert m.overridden == {"on_load", "on_access", "on_evict", "select_victim", "export_state",
                            "import_state"}  # fmt: skip
    assert "least-recently-used" in m.doc
    twin = in_process(module("lru"))
    answers: dict[str, list] = {"isolated": [], "in-process": []}
    for advisor, out in ((m.advisor, answers["isolated"]), (twin, answers["in-process"])):
        advisor.on_load()
        rng = random.Random(3)
        for step in range(2 * NOTICE_BATCH + 40):  # more notices than one batch holds
            frame = rng.randrange(32)
            advisor.on_access(frame, 1, frame * 7)
            if step % 50 == 49:
                out.append(advisor.select_victim(sorted(rng.sample(range(32), 8))))
                advisor.on_evict(out[-1], 1, 0)
        out.append(advisor.export_state())
    assert answers["isolated"] == answers["in-process"]
    assert m.last_cpu_ns > 0
    state = answers["isolated"][-1]
    m.advisor.import_state(state[::-1])
    assert m.advisor.export_state() == state[::-1]


def test_isolated_rr_picks_the_same_tasks_and_hands_back_the_kernels_views(isolate):
    assert TaskView._fields == TASK_FIELDS  # the child rebuilds the kernel's own views
    m = isolate(module("rr"), {"slice_ms": "2"})
    assert m.params == {"slice_ms": 2.0} and m.defaults == {"slice_ms": 5.0}
    twin = in_process(module("rr"), {"slice_ms": "2"})
    m.advisor.on_load()
    twin.on_load()
    views = [View(pid) for pid in (4, 2, 9, 5)]
    for step in range(12):
        candidates = views[: 2 + step % 3]
        mine, theirs = m.advisor.select_next(candidates, 0), twin.select_next(candidates, 0)
        assert mine is theirs and mine in candidates
        assert m.advisor.time_slice(mine) == twin.time_slice(mine) == 2_000_000
        if step == 6:
            m.advisor.on_exit(views[0], 123)
            twin.on_exit(views[0], 123)


def test_isolated_fixed_clock_sees_the_device_and_pins_the_same_clock(isolate):
    m = isolate(module("fixed_clock"))
    assert m.advisor.frequency(Device()) == in_process(module("fixed_clock")).frequency(Device())
    assert m.advisor.frequency(Device()) == 1980


def test_the_context_offers_params_time_rng_log_and_views_but_not_inference(isolate, host):
    m = isolate(hostile("probe"), {"label": "y"})
    host.now = 5_000
    m.advisor.on_load()
    m.advisor.on_fault(1, 3, True)
    host.now = 6_000
    report = m.advisor.export_state()
    assert report == {
        "params": {"depth": 2, "label": "y"},
        "name": "probe",
        "kind": "memory",
        "now_ns": 6_000,
        "rng": random.Random("7:probe").random(),  # seeded as in-process
        "nframes": 64,
        "owner": [1, 50],
        "swapped": [3, 4],
        "missing": "IndexError: memory.owner: list index out of range",
        "faults": [[1, 3, True, 5_000]],
    }
    assert ("memory", "owner", (5,)) in host.queries
    level, event, fields = host.logs[-1]
    assert (level, event, fields["faults"]) == ("info", "probed", 1)
    assert fields["odd"] == "<class 'object'>"
    _faults(lambda: m.advisor.select_victim([1]), "raised",
            "select_victim raised RuntimeError: kernel-space inference is not available "
            "to isolated modules")  # fmt: skip


# -- loading ------------------------------------------------------------------------


@pytest.mark.parametrize("source, reason", [
    ("raise RuntimeError('no')\n", "raised RuntimeError: no"),
    ("from kernel.mlaas import SchedAdvisor\nclass A(SchedAdvisor):\n    name='a'\n"
     "    def select_victim(self, candidates):\n        return None\n", "wrong base"),
    ("import time\ntime.sleep(60)\n", "the module did not load within 1 s"),
    ("import os\nos._exit(7)\n", "the module's process exited with status 7 while loading"),
    ("from kernel import Kernel\n", "raised ImportError"),  # the kernel is not there to import
])  # fmt: skip
def test_a_module_refused_in_its_process_is_a_module_error(isolate, tmp_path, source, reason):
    path = tmp_path / "mod.py"
    path.write_text(source)
    # Only the module that sleeps at its top level is meant to meet the start-up limit.
    startup_s = 1 if "did not load" in reason else Limits().startup_s
    with pytest.raises(ModuleError, match=reason):
        isolate(str(path), startup_s=startup_s)


def test_refusals_are_those_of_in_process_loading(isolate):
    broken = os.path.join(HERE, "broken")
    with pytest.raises(ModuleError, match="syntax error in syntax_error.py line 9"):
        isolate(os.path.join(broken, "syntax_error.py"))
    with pytest.raises(ModuleError, match="mlfq has no parameter 'colour'"):
        isolate(module("mlfq"), {"colour": "red"})


# -- notices ------------------------------------------------------------------------


def test_a_notice_that_raised_faults_the_next_call(isolate, tmp_path):
    path = tmp_path / "picky.py"
    path.write_text(
        "from kernel.mlaas import MemoryAdvisor\n"
        "class Picky(MemoryAdvisor):\n"
        "    name = 'picky'\n"
        "    def on_access(self, frame, pid, vpn):\n"
        "        if frame == 13:\n"
        "            raise ValueError(frame)\n"
        "    def select_victim(self, candidates):\n"
        "        return candidates[0]\n"
    )
    m = isolate(str(path))
    m.advisor.on_access(1, 1, 1)
    m.flush()
    m.advisor.on_access(13, 1, 1)  # queued: the child has not run it yet
    fault = _faults(
        lambda: m.advisor.select_victim([4]), "raised", "on_access raised ValueError: 13"
    )
    assert not _exists(m.pid) and m.fault is not None
    again = _faults(lambda: m.advisor.on_access(2, 1, 1), "raised")  # a faulty module stays faulty
    assert again.message == fault.message


# -- hostile modules ----------------------------------------------------------------


@pytest.mark.parametrize("name, how", [
    ("exits", "exited with status 3"),
    ("segfaults", "died (SIGSEGV)"),
])  # fmt: skip
def test_a_child_that_dies_is_crashed_and_the_kernel_goes_on(isolate, name, how):
    threads = set(threading.enumerate())
    m = isolate(hostile(name))
    _faults(lambda: m.advisor.select_victim([1, 2]), "crashed", how)
    assert not _exists(m.pid)
    assert set(threading.enumerate()) == threads


@pytest.mark.parametrize("name", ["stops", "cpu_hog"])
def test_a_child_that_hangs_awake_is_killed_after_the_hang_limit(isolate, name):
    # Stopped or spinning, the child is never asleep at a look: no miss, the hang limit.
    m = isolate(hostile(name), hang_s=0.5)
    t0 = time.monotonic()
    _faults(lambda: m.advisor.select_victim([1]), "overrun", "did not answer within 0.5 s")
    assert 0.5 <= time.monotonic() - t0 < 5  # killed, not waited for
    assert not _exists(m.pid) and m.misses == 0


@pytest.mark.parametrize("name", ["sleeps", "unkillable"])
def test_a_child_that_sleeps_misses_its_deadlines_and_is_killed_after_three(isolate, name):
    m = isolate(hostile(name), hang_s=30)
    assert m.deadline_s == 0.02  # the floor: the module's budget is the default 1 ms
    for _ in range(MISS_STRIKES - 1):
        t0 = time.monotonic()
        assert m.advisor.select_victim([1]) is None  # the default decides
        assert time.monotonic() - t0 < 1
    _faults(lambda: m.advisor.select_victim([1]), "overrun",
            "asleep at its 20 ms deadline 3 questions in a row")  # fmt: skip
    assert not _exists(m.pid) and m.misses == MISS_STRIKES


def test_the_cpu_limit_kills_a_spinning_child(isolate):
    m = isolate(hostile("cpu_hog"), cpu_s=1, hang_s=30)
    _faults(lambda: m.advisor.select_victim([1]), "crashed", "SIGXCPU")


def test_the_memory_limit_stops_a_memory_bomb(isolate):
    m = isolate(hostile("memory_bomb"))
    _faults(lambda: m.advisor.select_victim([1]), "memory", "select_victim ran out of memory")


def test_host_files_cannot_be_read_past_the_modules_directory(isolate):
    report = isolate(hostile("reads_files")).advisor.export_state()
    assert report["at_import"] == {
        "/etc/passwd": "PermissionError",
        "parent environ": "PermissionError",
        "list /": "PermissionError",
        "own directory": "read",
    }
    assert report["in_callback"] == "PermissionError"
    assert set(report["environment"]) <= {*PASSED_ENV, *CHILD_ENV}


def test_no_file_can_be_written_anywhere(isolate):
    report = isolate(hostile("writes_files")).advisor.export_state()
    assert report == {"tmp": "PermissionError", "own directory": "PermissionError"}
    assert not os.path.exists("/tmp/mlaas-hostile-written")
    assert not os.path.exists(os.path.join(HERE, "hostile", "written-by-hostile"))


def test_no_process_or_program_can_be_started(isolate):
    report = isolate(hostile("spawns")).advisor.export_state()
    assert report == {
        "subprocess": "PermissionError",
        "fork": "PermissionError",
        "posix_spawn": "PermissionError",
        "exec": "PermissionError",
    }


def test_no_socket_can_be_opened(isolate):
    report = isolate(hostile("network")).advisor.export_state()
    assert report == {"tcp": "PermissionError", "udp": "PermissionError",
                      "unix pair": "PermissionError"}  # fmt: skip


def test_the_child_cannot_signal_others_or_lift_its_limits(isolate):
    report = isolate(hostile("escapes")).advisor.export_state()
    assert report == {
        "signal the kernel": "PermissionError",
        "signal every process": "PermissionError",
        "lift the memory limit": "ValueError",  # Python's word for setrlimit's EPERM
        "lift the CPU limit": "ValueError",
        "raise its priority": "PermissionError",
        "outlive the kernel": "PermissionError",
        "keep shared memory": "PermissionError",
        "signal itself": "done",
    }


def test_no_thread_can_be_started_and_close_leaves_nothing(isolate):
    threads = set(threading.enumerate())
    m = isolate(hostile("threads"))
    _faults(m.advisor.on_load, "raised", "on_load raised RuntimeError: can't start new thread")
    assert not _exists(m.pid)  # the fault stopped it
    m.close()
    m.close()  # idempotent
    assert set(threading.enumerate()) == threads
    _faults(lambda: m.advisor.select_victim([1]), "raised", "can't start new thread")


def test_monkey_patching_its_copy_of_malvos_changes_nothing_here(isolate):
    m = isolate(hostile("monkeypatches"))
    _faults(lambda: m.advisor.select_victim([1, 2]), "invalid", "garbage")
    assert isinstance(ModuleError("x"), Exception) and describe(ValueError("v")) == "ValueError: v"
    lru = isolate(module("lru")).advisor  # others still load and answer
    lru.on_load()
    assert lru.select_victim([1, 2]) is None


def test_answers_the_kernel_cannot_use_are_invalid(isolate):
    m = isolate(hostile("garbage_answers"))
    _faults(lambda: m.advisor.select_next([View(1), View(2)], 0), "invalid",
            "select_next chose 999999, which is not one of the candidates")  # fmt: skip
    m = isolate(hostile("garbage_answers"))
    _faults(lambda: m.advisor.time_slice(View(1)), "invalid", "time_slice returned <object")


@pytest.mark.parametrize("vpn, reason, what", [
    (0, "invalid", "undecodable message"),
    (1, "invalid", "a message of 4294967295 bytes"),
    (2, "crashed", "exited with status 0"),
])  # fmt: skip
def test_bytes_the_child_writes_past_the_protocol_are_invalid(isolate, vpn, reason, what):
    m = isolate(hostile("garbage_pipe"))
    assert m.advisor.select_victim([1, 2]) == 2  # its stdout and stderr reach no one
    _faults(lambda: m.advisor.prefetch(1, vpn), reason, what)


# -- the wire -----------------------------------------------------------------------

_plain = st.recursive(
    st.none() | st.booleans() | st.integers(-(1 << 200), 1 << 200)
    | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5)
    | st.dictionaries(st.integers() | st.text(max_size=8), inner, max_size=5),
    max_leaves=12,
)  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=512), st.booleans())
def test_any_bytes_from_the_child_decode_to_plain_values_or_are_a_protocol_error(data, framed):
    reader = FrameReader()
    reader.feed(struct.pack(">I", len(data)) + data if framed else data)
    try:
        while (message := reader.next()) is not None:
            check_plain(message)
    except ProtocolError:
        pass


@settings(max_examples=60, deadline=None)
@given(_plain)
def test_plain_values_cross_the_wire_unchanged(value):
    reader = FrameReader()
    reader.feed(encode(value))
    assert reader.next() == value


@pytest.mark.parametrize(
    "empty",
    [pytest.param(b"\x90", marks=pytest.mark.slow), b"\x80"],  # lists: the costlier decode
    ids=["lists", "maps"],
)
def test_a_message_of_millions_of_empty_containers_is_refused_not_decoded(empty):
    """16 MiB of empty lists would be about 1 GiB of Python objects: the count
    stops it after MAX_CONTAINERS, and a message of that many still decodes."""
    n = 16_000_000
    bomb = b"\xdd" + n.to_bytes(4, "big") + empty * n
    with pytest.raises(ProtocolError, match=f"more than {MAX_CONTAINERS} lists and maps"):
        decode(bomb)
    n = MAX_CONTAINERS - 1  # the outer array is one of them
    fits = b"\xdd" + n.to_bytes(4, "big") + empty * n
    assert len(decode(fits)) == n
