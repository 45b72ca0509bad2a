"""What a module says reaches people as plain, bounded, printable text.

A module's log records enter the kernel through one door, `KernelLog.module`,
in-process and isolated alike; exit reports, `lsmod` and `modinfo` quote a
module through `kernel.text.printable`.  The attacks come from the hostile
module tests/mlaas/hostile/loud_log.py, run both ways; the door itself is
explored with hypothesis.
"""

from __future__ import annotations

import gc
import json
import os
import tracemalloc
from typing import Any

import pytest
from adversary import DETONATIONS, Bomb, RaisingFloat, RaisingInt, RaisingStr
from hypothesis import given, settings
from hypothesis import strategies as st

from kernel import Kernel
from kernel.log import MODULE_RECORDS_PER_WINDOW, MODULE_WINDOW_NS, KernelLog
from kernel.mlaas.child import decode, encode
from kernel.mlaas.faults import MAX_REPORT_CHARS
from kernel.text import (
    KERNEL_FIELDS,
    MAX_EVENT_CHARS,
    MAX_FIELDS,
    MAX_KEY_CHARS,
    MAX_RECORD_CHARS,
    MAX_VALUE_CHARS,
)

LOUD = os.path.join(os.path.dirname(__file__), "hostile", "loud_log.py")
MODES = ["in-process", "isolated"]
#: What a terminal obeys: C0 controls (ESC, BEL, ...), DEL, C1 controls (CSI is
#: U+009B), and the bidi overrides that reorder a line as it is shown.
RAW = [chr(c) for c in range(0x20)] + [chr(c) for c in range(0x7F, 0xA0)] + ["\u202e", "\u2066"]


def raw_controls(text: str) -> list[str]:
    return sorted({ch for ch in text if ch in RAW or not ch.isprintable()} - {"\n"})


def loud(kernel: Kernel, mode: str, attack: str, run: str = "run spin 3", **params: Any) -> str:
    """Load loud_log with `attack`, run `run`, and return what the shell printed."""
    kernel.mlaas.starve_timeout_ns = 10**12
    flag = "--isolated " if mode == "isolated" else ""
    words = " ".join(f"{k}={v}" for k, v in {"attack": attack, **params}.items())
    out = kernel.shell(f"insmod {flag}{LOUD} {words}")
    assert "attached as the sched advisor" in out
    return kernel.shell(run)


def module_records(kernel: Kernel) -> list[dict[str, Any]]:
    """The records loud_log logged (the kernel's own about it left out)."""
    kernel_events = ("module loaded", "module ejected", "module removed")
    return [
        r
        for r in kernel.log.records()
        if r.get("module") == "loud_log" and r["event"] not in kernel_events
    ]


def live(kernel: Kernel) -> bool:
    return kernel.mlaas.modules["loud_log"].state == "live"


# -- the attacks ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_a_module_cannot_set_the_kernel_s_own_fields(malv_kernel: Kernel, mode: str):
    loud(malv_kernel, mode, "kernel_fields")
    dmesg = malv_kernel.shell("dmesg")  # raised TypeError when t_ns was "boom"
    assert "mlaas: x  module=loud_log  module.t_ns=boom" in dmesg
    x = malv_kernel.log.find("x")[0]
    assert type(x["t_ns"]) is int and x["subsystem"] == "mlaas" and x["module"] == "loud_log"
    y = malv_kernel.log.find("y")[0]
    assert (y["subsystem"], y["level"], y["module"]) == ("mlaas", "info", "loud_log")
    assert y["module.module"] == "kernel" and y["module.level"] == 7
    assert y["module.subsystem"] == "['not', 'a', 'name']" and y["module.kernel"] == "None"
    assert live(malv_kernel)


@pytest.mark.parametrize("mode", MODES)
def test_terminal_escapes_reach_the_console_and_dmesg_escaped(malv_kernel: Kernel, mode: str):
    loud(malv_kernel, mode, "escapes")
    dmesg = malv_kernel.shell("dmesg")
    console = "".join(malv_kernel.tty.transcript)  # warnings are echoed as they happen
    line = (
        "WARNING: hello\\x1b[2J\\x1b]0;PWNED\\x07  module=loud_log  note=\\x1b]52;c;cHduZWQ=\\x07"
    )
    assert line in dmesg and line in console
    assert raw_controls(dmesg) == [] and raw_controls(console) == []
    assert live(malv_kernel)


@pytest.mark.parametrize("mode", MODES)
def test_terminal_escapes_reach_json_logs_escaped(malv_boot, mode: str):
    kernel = malv_boot(log_format="json")
    loud(kernel, mode, "escapes")
    lines = kernel.shell("dmesg").splitlines()
    records = [json.loads(line) for line in lines if '"loud_log"' in line]
    warned = [r for r in records if r["level"] == "warning"]
    assert warned and warned[0]["event"] == "hello\\x1b[2J\\x1b]0;PWNED\\x07"
    assert warned[0]["note"] == "\\x1b]52;c;cHduZWQ=\\x07"
    for record in records:  # decoded, the JSON gives back no control character either
        assert all(raw_controls(str(v)) == [] for v in record.values())


@pytest.mark.parametrize("mode", MODES)
def test_a_field_of_many_empty_lists_makes_a_bounded_record(malv_kernel: Kernel, mode: str):
    loud(malv_kernel, mode, "empty_lists", items=20_000)  # 20 KB on the wire, 1.4 MiB decoded
    records = malv_kernel.log.find("lists")
    assert records and live(malv_kernel)
    for record in records:
        junk = record["junk"]
        assert type(junk) is str and len(junk) <= MAX_VALUE_CHARS and junk.startswith("[[], [], ")
        assert len(json.dumps(record)) < MAX_RECORD_CHARS


@pytest.mark.slow  # 64 messages of a million lists
def test_64_calls_of_a_million_empty_lists_leave_the_kernel_s_memory_bounded(malv_kernel: Kernel):
    """The isolated attack at the kernel's door: 1 MB on the wire, about 69 MiB
    decoded, 64 times.  The ring keeps a bounded record of each, not the lists."""
    frame = encode(["info", "lists", {"junk": [[]] * 1_000_000}])
    assert len(frame) > 1_000_000
    log = malv_kernel.log
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        level, event, fields = decode(frame[4:])  # what the kernel reads off the pipe
        for _ in range(64):
            log.module("loud_log", level, event, fields)
        del fields
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(log.find("lists")) == 64
    assert grown < 1 << 20, f"the kernel kept {grown / 2**20:.1f} MiB"


def test_hostile_values_are_read_without_running_their_methods(malv_kernel: Kernel):
    loud(malv_kernel, "in-process", "hostile_values")  # a method that runs raises SystemExit
    assert live(malv_kernel), malv_kernel.mlaas.modinfo("loud_log")["last_exit"]
    record = module_records(malv_kernel)[0]
    assert record["event"] == "ev\\x1b[2J"
    assert (record["n"], record["f"], record["s"]) == (7, 2.5, "s\\x07")
    assert type(record["n"]) is int and type(record["f"]) is float and type(record["s"]) is str
    assert record["obj"] == "<Mask\\x1b[2J>" and record["nested"] == "[1, ('t',)]"


@pytest.mark.parametrize("mode", MODES)
def test_a_flood_is_cut_to_the_quota_with_a_line_that_counts_the_drops(
    malv_kernel: Kernel, mode: str
):
    loud(malv_kernel, mode, "flood", run="run spin 300", lines=40)
    records = module_records(malv_kernel)
    per_window: dict[int, int] = {}
    for r in records:
        if r["event"] != "flood":
            continue
        window = r["t_ns"] // MODULE_WINDOW_NS
        per_window[window] = per_window.get(window, 0) + 1
    assert max(per_window.values()) <= MODULE_RECORDS_PER_WINDOW
    dropped = [r for r in records if r["event"] == "log records dropped"]
    assert dropped and all(r["count"] > 0 and r["level"] == "warning" for r in dropped)
    windows = [r["t_ns"] // MODULE_WINDOW_NS for r in dropped]
    assert len(set(windows)) == len(windows)  # one line a window at most
    assert live(malv_kernel)


ESCAPING_MODULE = '''"""Escapes: \x1b[2J clears the screen,
\x1b]0;PWNED\x07 sets the window title."""

from kernel.mlaas import SchedAdvisor


class Escapes(SchedAdvisor):
    name = "escapes"
    params = {"label": "\x1b]52;c;Zm9v\x07"}

    def select_next(self, candidates, cpu):
        raise ValueError("\x1b[2J\x1b]0;PWNED\x07" * 100)
'''


@pytest.mark.parametrize("mode", MODES)
def test_lsmod_modinfo_and_exit_reports_show_a_module_s_text_escaped(
    malv_kernel: Kernel, tmp_path, mode: str
):
    path = tmp_path / "esc\x1b[2Japes.py"  # its file name too
    path.write_text(ESCAPING_MODULE)
    malv_kernel.mlaas.starve_timeout_ns = 10**12
    malv_kernel.mlaas.insmod(str(path), isolated=mode == "isolated")
    out = malv_kernel.shell("run spin 3; lsmod; modinfo escapes; dmesg")
    assert "escapes              sched   ejected" in out
    assert "esc\\x1b[2Japes.py" in out  # lsmod's origin and modinfo's file
    assert "select_next raised ValueError: \\x1b[2J\\x1b]0;PWNED\\x07" in out  # the exit report
    assert "description: Escapes: \\x1b[2J clears the screen,\n" in out  # its lines stay lines
    assert "label=\\x1b]52;c;Zm9v\\x07" in out
    assert raw_controls(out) == []
    report = malv_kernel.mlaas.modinfo("escapes")["last_exit"]
    assert len(report.message) <= MAX_REPORT_CHARS and report.message.endswith("...")
    malv_kernel.mlaas.rmmod("escapes")
    assert raw_controls(malv_kernel.shell("modinfo escapes")) == []


@pytest.mark.parametrize("mode", MODES)
def test_a_refused_insmod_quotes_the_module_escaped(malv_kernel: Kernel, tmp_path, mode: str):
    path = tmp_path / "refused.py"
    path.write_text('raise ValueError("\\x1b]0;PWNED\\x07\\x1b[2J")\n')
    flag = "--isolated " if mode == "isolated" else ""
    out = malv_kernel.shell(f"insmod {flag}{path}; dmesg")
    assert "raised ValueError: \\x1b]0;PWNED\\x07\\x1b[2J" in out
    assert "insmod refused" in out and raw_controls(out) == []


# -- the quota and the ring share, at the door ------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now_ns = 0

    def __call__(self) -> int:
        return self.now_ns


def test_records_past_the_quota_are_counted_in_one_line_in_the_next_window():
    clock = Clock()
    log = KernelLog(clock)
    for n in range(MODULE_RECORDS_PER_WINDOW + 36):
        log.module("m", "info", "tick", {"n": n})
    assert len(log.find("tick")) == MODULE_RECORDS_PER_WINDOW
    clock.now_ns = MODULE_WINDOW_NS - 1
    log.module("m", "info", "tick", {"n": -1})  # still the first window: dropped too
    clock.now_ns = MODULE_WINDOW_NS
    log.module("m", "info", "tock", {})
    (dropped,) = log.find("log records dropped")
    assert (dropped["count"], dropped["module"], dropped["t_ns"]) == (37, "m", MODULE_WINDOW_NS)
    assert [r["event"] for r in log.records()[-2:]] == ["log records dropped", "tock"]
    assert "WARNING: log records dropped  module=m  count=37" in log.lines()[-2]


def test_a_module_fills_at_most_its_share_of_the_ring_and_keeps_its_newest_records():
    clock = Clock()
    log = KernelLog(clock, capacity=64)
    share = log.module_share
    assert share == 16
    for n in range(10):
        log.info("kernel", "booted", n=n)
    for n in range(100):
        clock.now_ns = n * MODULE_WINDOW_NS  # one record a window: never over the quota
        log.module("m", "info", "tick", {"n": n})
        if n < 5:
            log.module("other", "info", "tock", {"n": n})
    ticks = [r["n"] for r in log.find("tick")]
    assert ticks == list(range(100 - share, 100))
    assert [r["n"] for r in log.find("booted")] == list(range(10))
    assert len(log.find("tock")) == 5
    for n in range(200):  # the kernel's own records still push everything out, in order
        log.info("kernel", "later", n=n)
    assert len(log.ring) == 64 and log.find("tick") == []
    clock.now_ns += MODULE_WINDOW_NS
    for n in range(share):
        log.module("m", "info", "again", {"n": n})  # its count left the ring with its records
    assert len(log.find("again")) == share and len(log.find("later")) == 64 - share


def test_the_docs_state_the_code_s_log_limits(malv_kernel: Kernel):
    here = os.path.dirname(__file__)
    readme = open(os.path.join(here, "..", "..", "docs", "design", "mlaas.md")).read()
    section = readme.split("**What a module says is text, in either mode.**")[1].split("\n\n")[0]
    text = " ".join(section.split())
    log = malv_kernel.log
    for phrase in (
        f"The event becomes text of at most {MAX_EVENT_CHARS} characters",
        f"ASCII identifier of at most {MAX_KEY_CHARS} characters",
        f"bool of at most {MAX_VALUE_CHARS} characters",
        f"at most {MAX_FIELDS} fields and {MAX_RECORD_CHARS} characters",
        f"{MODULE_RECORDS_PER_WINDOW} records per {MODULE_WINDOW_NS // 1_000_000} ms of virtual time",
        f"a quarter of the ring ({log.module_share} of its {log.ring.maxlen} records)",
    ):
        assert phrase in text
    assert log.module_share * 4 == log.ring.maxlen


# -- any log call at all ------------------------------------------------------------------------

controls = st.sampled_from(
    ["\x1b[2J", "\x1b]0;PWNED\x07", "\x9b31m", "\u202e", "\ud800", "\x00", "\n", "\x7f"]
)
texts = st.lists(st.one_of(st.text(max_size=20), controls), max_size=4).map("".join)
long_texts = st.one_of(texts, st.integers(0, 5000).map(lambda n: "x\x1b" * n))
keys = st.one_of(
    st.sampled_from(sorted(KERNEL_FIELDS)), st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,40}", fullmatch=True),
    texts,
)  # fmt: skip
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), long_texts, st.binary(max_size=8),
    st.sampled_from([63, 64, 300, 792, 793, 5000, 100_000]).map(lambda bits: -(2**bits)),
    st.sampled_from([19, 240, 241, 4301, 100_000]).map(lambda digits: 10**digits),
    st.integers().map(RaisingInt), st.floats().map(RaisingFloat), texts.map(RaisingStr),
    st.builds(Bomb, st.just("raise")), st.builds(object),
)  # fmt: skip
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=6), st.tuples(inner, inner), st.dictionaries(st.text(max_size=4), inner, max_size=4),
        st.frozensets(st.integers(), max_size=4), st.integers(0, 3000).map(lambda n: [[]] * n),
    ),
    max_leaves=20,
)  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(
    level=st.sampled_from(["info", "warning", "error", "\x1b"]),
    event=st.one_of(long_texts, scalars),
    fields=st.lists(st.tuples(keys, values), max_size=24),
)
def test_any_log_call_becomes_a_plain_bounded_printable_record(level, event, fields):
    DETONATIONS.clear()
    clock = Clock()
    clock.now_ns = 12_345
    log = KernelLog(clock, kernel_name="host")
    log.module("m", level, event, dict(fields))
    (record,) = log.records()
    assert (record["t_ns"], record["subsystem"], record["module"], record["kernel"]) == (
        12_345, "mlaas", "m", "host",
    )  # fmt: skip
    assert record["level"] in ("info", "warning")
    assert type(record["event"]) is str and len(record["event"]) <= MAX_EVENT_CHARS
    own = {
        k: v
        for k, v in record.items()
        if k not in ("t_ns", "subsystem", "module", "kernel", "level", "event")
    }
    size = len(record["event"])
    for key, value in own.items():
        assert (
            type(key) is str and key.isprintable() and key.replace("module.", "", 1).isidentifier()
        )
        assert key.startswith("module.") or key not in KERNEL_FIELDS or key == "fields_dropped"
        assert type(value) in (str, int, float, bool)
        if type(value) is str:
            assert len(value) <= MAX_VALUE_CHARS and value.isprintable()
            size += len(value)
        elif type(value) is int:
            assert -(2**63) <= value < 2**63
    assert len(own) <= MAX_FIELDS + 1 and size <= MAX_RECORD_CHARS
    assert DETONATIONS == []
    console = log.render(record)
    assert raw_controls(console) == [] and "\n" not in console
    log.fmt = "json"
    decoded = json.loads(log.render(record))  # strict: no NaN or Infinity
    assert decoded == json.loads(json.dumps(record, allow_nan=False))
