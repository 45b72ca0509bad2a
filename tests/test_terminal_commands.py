"""The terminal's commands: top, trace, clear; typed-ahead keys; one-line errors."""

from __future__ import annotations

import json
import re

from kernel import Kernel
from kernel.kernel import Kernel as KernelClass
from kernel.syscall import TRAP_TABLE
from userland.gpulib import LaunchSpec, open_context
from userland.lib import println

FRAME_HEAD = re.compile(r"^top - up [\d.]+ s, \d+ tasks, last \d+ ms$", re.M)


# -- top ------------------------------------------------------------------------------------


def test_top_without_a_person_prints_one_frame_and_returns(malv_kernel: Kernel):
    out = malv_kernel.shell("top")
    assert len(FRAME_HEAD.findall(out)) == 1
    assert re.search(r"^cpu0\s+\[[#.]{20}\]\s+[\d.]+%", out, re.M)
    assert re.search(r"^gpu\s+a100\s+busy TPCs \d+/54\s+clock \d+ MHz\s+power [\d.]+ W", out, re.M)
    assert re.search(r"^\s+4 \w+\s+[\d.]+\s+\d+\s+sh$", out, re.M)
    assert "\x1b[" not in out  # no screen control without a terminal


def test_top_n_prints_that_many_frames(malv_kernel: Kernel):
    out = malv_kernel.shell("top -n 3 -d 100")
    assert len(FRAME_HEAD.findall(out)) == 3
    assert out.count("last 100 ms") == 3


def test_top_shows_a_busy_task_and_its_cpu_at_full_use(malv_kernel: Kernel):
    malv_kernel.shell("run spin 5000 &")
    out = malv_kernel.shell("top -d 200")
    spin = re.search(r"^\s+\d+ running\s+([\d.]+)\s+\d+\s+spin$", out, re.M)
    assert spin and float(spin.group(1)) >= 95  # of one CPU; the rest is context switches
    assert re.search(r"^cpu\d\s+\[#{19,20}\.?\]\s+(9\d|100)\.\d%\s+pid \d+$", out, re.M)


def test_top_without_a_gpu_has_no_gpu_line(malv_boot):
    out = malv_boot(gpu=None).shell("top")
    assert FRAME_HEAD.search(out) and not re.search(r"^gpu ", out, re.M)


def test_top_quits_when_q_is_typed(malv_kernel: Kernel):
    malv_kernel.tty.interactive = True  # a person: top runs until q
    malv_kernel.tty.feed("top -d 100")
    malv_kernel.run(until=malv_kernel.loop.now_ns + 350_000_000)
    assert malv_kernel.tty.waiting_prompt is None  # still refreshing
    malv_kernel.tty.type_key("q")
    assert malv_kernel.run_until_prompt(2_000_000_000)
    transcript = "".join(malv_kernel.tty.transcript)
    assert transcript.count("\x1b[H\x1b[2J") >= 3  # each frame on a cleared screen


def test_bad_top_options_get_one_line(malv_kernel: Kernel):
    assert malv_kernel.shell("top -n 0") == "top: -n takes a positive integer, got '0'\n"
    assert malv_kernel.shell("top -x") == "top: usage: top [-n FRAMES] [-d MS]\n"


# -- trace ----------------------------------------------------------------------------------


def test_trace_of_pingpong_has_slices_for_both_tasks_on_cpus(malv_kernel: Kernel, tmp_path):
    path = tmp_path / "t.json"
    out = malv_kernel.shell(f"trace start; run pingpong 100; trace stop; trace save {path}")
    assert re.search(r"trace: (\d+) events written to ", out)
    events = json.loads(path.read_text())["traceEvents"]
    slices = [e for e in events if e["ph"] == "X" and e["pid"] == 1]
    assert {"pingpong", "pong"} <= {e["name"] for e in slices}
    cpu_names = {e["args"]["name"] for e in events if e.get("name") == "thread_name"}
    assert {"cpu0", "cpu1"} <= cpu_names
    assert all(e["dur"] >= 0 and e["tid"] in (0, 1) for e in slices)
    calls = [e for e in events if e["ph"] == "i" and e["name"] == "Call" and e["cat"] == "ipc"]
    assert len(calls) >= 100  # every ping is a Call
    starts = {e["id"] for e in events if e["ph"] == "s"}
    ends = {e["id"] for e in events if e["ph"] == "f"}
    assert ends and ends <= starts  # each arrow lands where a woken task ran


def test_trace_has_the_gpu_kernels_and_clock(malv_kernel: Kernel, tmp_path):
    path = tmp_path / "gpu.json"
    malv_kernel.shell(f"trace start; run gpu-loop 2; trace stop; trace save {path}")
    events = json.loads(path.read_text())["traceEvents"]
    kernels = [e for e in events if e["ph"] == "X" and e["pid"] == 2]
    assert [e["name"] for e in kernels] == ["loop_kernel", "loop_kernel"]
    assert all(e["dur"] > 0 and e["args"]["done"] for e in kernels)
    assert any(e["ph"] == "C" and e["name"] == "clock (MHz)" for e in events)


def test_tracing_off_leaves_the_cpu_loop_untouched(malv_kernel: Kernel):
    malv_kernel.shell("trace start")
    assert "_step" in vars(malv_kernel) and malv_kernel.trap_table is not TRAP_TABLE
    malv_kernel.shell("trace stop")
    assert not {"_step", "wake", "handoff"} & set(vars(malv_kernel))
    assert malv_kernel.trap_table is TRAP_TABLE
    assert malv_kernel._step.__func__ is KernelClass._step


def test_trace_misuse_gets_one_line(malv_kernel: Kernel, tmp_path):
    assert (
        malv_kernel.shell("trace stop") == "trace: EINVAL: nothing traced yet (trace start first)\n"
    )
    assert (
        malv_kernel.shell("trace") == "trace: usage: trace start | trace stop | trace save FILE\n"
    )
    malv_kernel.shell("trace start")
    assert "already tracing" in malv_kernel.shell("trace start")
    assert "still tracing" in malv_kernel.shell(f"trace save {tmp_path / 'x.json'}")
    malv_kernel.shell("trace stop")
    out = malv_kernel.shell(f"trace save {tmp_path / 'no' / 'such' / 'dir.json'}")
    assert out.startswith("trace: EINVAL: cannot write ") and out.count("\n") == 1


# -- the console ----------------------------------------------------------------------------


def test_clear_clears_the_screen(malv_kernel: Kernel):
    assert malv_kernel.shell("clear") == "\x1b[H\x1b[2J"


def test_keys_typed_while_a_program_runs_run_after_it(malv_kernel: Kernel):
    malv_kernel.tty.feed("run sleep 100")
    malv_kernel.run(until=malv_kernel.loop.now_ns + 10_000_000)
    malv_kernel.tty.type_key(
        "run echo x\x7fafter\nupti"
    )  # a backspace, a whole line, a partial one
    assert malv_kernel.run_until_prompt()
    transcript = "".join(malv_kernel.tty.transcript)
    assert transcript.endswith("$ run sleep 100\n$ run echo after\nafter\n")
    assert malv_kernel.tty.claim_prompt() == ("$ ", "upti")  # where the line editor starts


def test_an_insmod_refusal_is_printed_once(malv_kernel: Kernel):
    malv_kernel.shell("echo start")
    start = len(malv_kernel.tty.transcript)
    malv_kernel.shell("insmod nosuch")
    shown = "".join(malv_kernel.tty.transcript[start:])
    assert shown.count("no module named 'nosuch'") == 1
    assert "insmod refused" in malv_kernel.shell("dmesg")  # still in the kernel log


def test_the_gpu_view_of_an_idle_gpu_has_no_blank_fields(malv_kernel: Kernel):
    out = malv_kernel.shell("gpu")
    occupancy = re.search(r"^TPC occupancy \|(.*)\| idle$", out, re.M)
    assert occupancy and occupancy.group(1) == "·" * 54


# -- programs from the Python API -----------------------------------------------------------


def test_a_gpu_program_spawned_from_the_api_reaches_the_gpu(malv_kernel: Kernel):
    done: list[int] = []

    def my_gpu_program(proc):
        ctx = yield from open_context(proc)  # uses proc.caps["gpu"]
        yield from ctx.alloc(1 << 30)
        yield from ctx.launch(LaunchSpec("gemm", grid_blocks=864, block_us=500.0))
        done.append((yield from ctx.sync()))
        yield from println(proc, "gemm done")

    pid = malv_kernel.spawn(my_gpu_program)
    malv_kernel.run(until=malv_kernel.loop.now_ns + 10**9)
    assert done and done[0] > 0
    assert malv_kernel.exit_codes.get(pid, 0) == 0
    assert "gemm done\n" in malv_kernel.tty.transcript


def test_api_spawn_with_caps_gets_exactly_those(bare_kernel: Kernel):
    seen: list[set[str]] = []

    def program(proc):
        seen.append(set(proc.caps))
        yield from ()

    bare_kernel.spawn(program, caps={})
    bare_kernel.run()
    assert seen == [set()]
