"""`top`: a live view of the tasks, the CPUs and the GPU.

Every interval (500 ms of virtual time by default, which in the interactive
terminal is real time) it samples the task list (`ProcList`), the CPUs'
busy time (`CpuInfo`) and, when the machine has a GPU, the driver's stats,
and prints a frame: each task's share of one CPU over the interval, its
state and resident memory; each CPU's use; the GPU's busy TPCs, clock and
power.  It runs until `q` is typed (or Ctrl-C); `-n N` stops after N
frames.  With no person at the keyboard (a headless run) it prints one
frame unless `-n` says otherwise, so a script never hangs on it.
"""

from __future__ import annotations

from kernel.traps import Call, CpuInfo, GetTime, Message, ProcList, Sleep
from userland.gpulib import gpu_request
from userland.lib import UsageError, program, write

CLEAR = "\x1b[H\x1b[2J"  # cursor home, erase the screen
BAR_WIDTH = 20


@program
def top(proc):
    """top [-n FRAMES] [-d MS]: tasks, CPUs and GPU every MS ms (500) until q"""
    frames, interval_ms = _options(proc.argv)
    _, interactive = yield from _keys(proc)
    if frames is None:
        frames = 0 if interactive else 1  # 0: until q
    before = yield from _sample(proc)
    shown = 0
    while frames == 0 or shown < frames:
        yield Sleep(interval_ms * 1000)
        keys, _ = yield from _keys(proc)
        if "q" in keys.lower():
            break
        after = yield from _sample(proc)
        text = _frame(before, after)
        yield from write(proc, (CLEAR if interactive else "\n" if shown else "") + text)
        before = after
        shown += 1
    return 0


def _options(argv) -> tuple[int | None, int]:
    """(-n frames or None, -d interval in ms)."""
    frames, interval_ms = None, 500
    args = list(argv)
    while args:
        flag = args.pop(0)
        if flag not in ("-n", "-d") or not args:
            raise UsageError("usage: top [-n FRAMES] [-d MS]")
        value = args.pop(0)
        if not value.isdigit() or int(value) < 1:
            raise UsageError(f"{flag} takes a positive integer, got {value!r}")
        if flag == "-n":
            frames = int(value)
        else:
            interval_ms = int(value)
    return frames, interval_ms


def _keys(proc):
    """(keys typed since the last look, whether a person is at the keyboard)."""
    con = proc.caps.get("console")
    if con is None:
        return "", False
    r = yield Call(con, Message("keys"))
    return r.msg.payload


def _sample(proc):
    now = yield GetTime()
    tasks = yield ProcList()
    cpus = yield CpuInfo()
    gpu = None
    if "gpu" in proc.caps:
        gpu = (yield from gpu_request(proc.caps["gpu"], "stats")).msg.payload
    return now, tasks, cpus, gpu


def _frame(before, after) -> str:
    t0, tasks0, cpus0, _ = before
    now, tasks, cpus, gpu = after
    elapsed = max(1, now - t0)
    lines = [f"top - up {now / 1e9:.3f} s, {len(tasks)} tasks, last {elapsed / 1e6:.0f} ms"]
    for (cpu, busy, pid), (_, busy0, _) in zip(cpus, cpus0, strict=True):
        share = (busy - busy0) / elapsed
        filled = round(share * BAR_WIDTH)
        running = f"pid {pid}" if pid else "idle"
        lines.append(
            f"cpu{cpu:<3}[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {100 * share:5.1f}%  {running}"
        )
    if gpu is not None:
        s = gpu.stats
        lines.append(
            f"gpu   {gpu.preset}  busy TPCs {s.busy_tpcs}/{gpu.n_tpcs}  "
            f"clock {s.clock_mhz} MHz  power {s.power_w:.1f} W  contexts {len(gpu.contexts)}"
        )
    lines.append(f"{'PID':>5} {'STATE':<9} {'%CPU':>6} {'RSS(KiB)':>9}  NAME")
    used0 = {pid: cpu_ns for pid, _, _, cpu_ns, _, _ in tasks0}
    for pid, _ppid, state, cpu_ns, rss, name in tasks:
        share = (cpu_ns - used0.get(pid, 0)) / elapsed
        lines.append(f"{pid:>5} {state:<9} {100 * share:>6.1f} {rss * 4:>9}  {name}")
    return "\n".join(lines) + "\n"


def cmd_top(sh, args):
    """top [-n FRAMES] [-d MS]: live tasks, CPU and GPU use; q or Ctrl-C quits"""
    from userland.shell import run_foreground

    _options(args)  # bad options: one line from the shell, no task started
    yield from run_foreground(sh, top, args, "top")


COMMANDS = {"top": cmd_top}
