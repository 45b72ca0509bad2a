"""sh: the malvos shell.

It reads a line from the console, splits it on `;`, and runs each command.
Builtins live in `COMMANDS`, one generator function each; their docstrings
are what `help` prints.  `run PROG [ARGS] [&]` starts a program from the
program table, in the foreground (Ctrl-C interrupts it) or as a background
job.  Bad input gets one clear line, never a traceback.

A command fails when it is not found, is used wrongly, gets a system call
error, or runs a program that exits with a non-zero status.  The shell logs
each failure ("command failed") and, before it ends or powers off, a summary
("commands failed") that `malv boot --headless` turns into its exit status.
`set -e`, as in sh, makes the first failure stop the shell: it powers off.
"""

from __future__ import annotations

import shlex

from kernel.errors import SyscallError
from kernel.text import printable
from kernel.traps import (
    Call,
    Dmesg,
    GetTime,
    Kill,
    Log,
    MemInfo,
    Message,
    Poweroff,
    ProcList,
    Send,
    Spawn,
    WaitPid,
)
from userland.gpu import COMMANDS as GPU_COMMANDS
from userland.lib import UsageError, int_arg, println, write
from userland.modcmds import COMMANDS as MODULE_COMMANDS
from userland.top import CLEAR
from userland.top import COMMANDS as TOP_COMMANDS
from userland.tracecmd import COMMANDS as TRACE_COMMANDS
from userland.vmcmds import COMMANDS as VM_COMMANDS

PROMPT = "$ "
#: Failed commands a summary names (it counts them all).
NAMED_FAILURES = 5


class Shell:
    def __init__(self, proc) -> None:
        self.proc = proc
        self.con = proc.caps["console"]
        self.jobs: dict[int, tuple[int, str]] = {}  # job number -> (pid, command line)
        self.next_job = 1
        self.failures = 0
        self.failed: list[str] = []  # the first NAMED_FAILURES failed commands
        self.errexit = False  # set -e


def shell(proc):
    sh = Shell(proc)
    while True:
        r = yield Call(sh.con, Message("readline", PROMPT))
        if r.msg.label != "line":
            yield from log_failures(sh)
            return 1 if sh.failures else 0
        for command in str(r.msg.payload).split(";"):
            status = yield from run_command(sh, command)
            if status:
                yield from failed(sh, command.strip(), status)


def run_command(sh: Shell, command: str):
    """Run one command; its status (0: it succeeded)."""
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        yield from println(sh.proc, f"sh: {exc}")
        return 2
    if not argv:
        return 0
    fn = COMMANDS.get(argv[0])
    if fn is None:
        yield from println(sh.proc, f"sh: {argv[0]}: command not found (try 'help')")
        return 127
    try:
        status = yield from fn(sh, argv[1:])
    except UsageError as exc:
        yield from println(sh.proc, f"{argv[0]}: {exc}")
        return 2
    except SyscallError as exc:  # may quote a module (insmod, reload): printed escaped
        yield from println(sh.proc, f"{argv[0]}: {printable(str(exc), None)}")
        return 1
    return status if isinstance(status, int) else 0


def failed(sh: Shell, command: str, status: int):
    """A command failed: log it; under `set -e`, stop here and power off."""
    sh.failures += 1
    if len(sh.failed) < NAMED_FAILURES:
        sh.failed.append(command[:200])
    yield Log("command failed", {"command": command[:200], "status": status})
    if sh.errexit:
        yield from println(sh.proc, f"sh: stopping at a failed command (set -e): {command}")
        yield from cmd_poweroff(sh, [])


def log_failures(sh: Shell):
    """The summary a host reads for its exit status (image/runtime.py)."""
    if sh.failures:
        named = "; ".join(sh.failed) + ("; ..." if sh.failures > len(sh.failed) else "")
        fields = {"count": sh.failures, "commands": named, "stopped": sh.errexit}
        yield Log("commands failed", fields)


# -- commands -------------------------------------------------------------------


def cmd_help(sh: Shell, args):
    """help: list the commands"""
    lines = ["commands:"]
    for name, fn in COMMANDS.items():
        lines.append(f"  {(fn.__doc__ or name).split(chr(10))[0]}")
    yield from println(sh.proc, "\n".join(lines))


def cmd_ps(sh: Shell, args):
    """ps: list the tasks"""
    rows = yield ProcList()
    lines = [f"{'PID':>5} {'PPID':>5} {'STATE':<9} {'CPU(ms)':>9} {'RSS(KiB)':>9}  NAME"]
    for pid, ppid, state, cpu_ns, rss, name in rows:
        lines.append(f"{pid:>5} {ppid:>5} {state:<9} {cpu_ns / 1e6:>9.3f} {rss * 4:>9}  {name}")
    yield from println(sh.proc, "\n".join(lines))


def cmd_dmesg(sh: Shell, args):
    """dmesg: print the kernel log"""
    lines = yield Dmesg()
    yield from println(sh.proc, "\n".join(lines))


def cmd_free(sh: Shell, args):
    """free: physical memory and swap, in KiB"""
    m = yield MemInfo()
    yield from println(
        sh.proc,
        f"{'':6}{'total':>10}{'used':>10}{'free':>10}\n"
        f"{'Mem:':6}{m['total_kib']:>10}{m['used_kib']:>10}{m['free_kib']:>10}\n"
        f"{'Swap:':6}{m['swap_total_kib']:>10}{m['swap_used_kib']:>10}"
        f"{m['swap_total_kib'] - m['swap_used_kib']:>10}\n"
        f"page faults {m['faults']}, swapped in {m['swap_ins']}, swapped out {m['swap_outs']}",
    )


def cmd_uptime(sh: Shell, args):
    """uptime: virtual time since boot"""
    now = yield GetTime()
    rows = yield ProcList()
    yield from println(sh.proc, f"up {now / 1e9:.6f} s, {len(rows)} tasks")


def cmd_kill(sh: Shell, args):
    """kill PID: end a task"""
    pid = int_arg(args, 0, "pid", minimum=1)
    yield Kill(pid)
    yield from println(sh.proc, f"killed {pid}")


def cmd_run(sh: Shell, args):
    """run PROG [ARGS] [&]: start a program (in the background with &)"""
    background = bool(args) and args[-1] == "&"
    if background:
        args = args[:-1]
    elif args and args[-1].endswith("&"):
        args = args[:-1] + [args[-1][:-1]]
        background = True
    if not args:
        raise UsageError("usage: run PROG [ARGS] [&]")
    if not background:
        return (yield from run_foreground(sh, args[0], args[1:], args[0]))
    pid = yield Spawn(args[0], tuple(args[1:]), caps=sh.proc.caps)
    job = sh.next_job
    sh.next_job += 1
    sh.jobs[job] = (pid, " ".join(args))
    yield from println(sh.proc, f"[{job}] {pid}")


def run_foreground(sh: Shell, program, args, name: str):
    """Start `program` (a name or a generator function) with the shell's caps
    and wait for it; Ctrl-C on the console interrupts it.  Its exit status."""
    pid = yield Spawn(program, tuple(args), caps=sh.proc.caps, name=name)
    yield Send(sh.con, Message("foreground", pid))
    try:
        status = yield WaitPid(pid)
    finally:
        yield Send(sh.con, Message("foreground", 0))
    if status == -2:
        yield from write(sh.proc, "^C\n")
    elif status != 0:
        yield from println(sh.proc, f"{name}: exited with status {status}")
    return status


def cmd_jobs(sh: Shell, args):
    """jobs: list background jobs"""
    lines = []
    for job, (pid, cmdline) in list(sh.jobs.items()):
        status = yield WaitPid(pid, nohang=True)
        if status is None:
            lines.append(f"[{job}] {pid:>5} running   {cmdline}")
        else:
            lines.append(f"[{job}] {pid:>5} done ({status})  {cmdline}")
            del sh.jobs[job]
    yield from println(sh.proc, "\n".join(lines) if lines else "no jobs")


def cmd_clear(sh: Shell, args):
    """clear: clear the terminal screen"""
    if args:
        raise UsageError("usage: clear")
    yield from write(sh.proc, CLEAR)


def cmd_set(sh: Shell, args):
    """set -e | set +e: stop at the first failed command (power off), or not"""
    if args not in (["-e"], ["+e"]):
        raise UsageError("usage: set -e | set +e")
    sh.errexit = args == ["-e"]
    yield from ()


def cmd_poweroff(sh: Shell, args):
    """poweroff: halt the machine"""
    yield from log_failures(sh)
    yield from println(sh.proc, "powering off")
    yield Call(sh.con, Message("status"))  # the console has printed everything before this
    yield Poweroff()


COMMANDS = {
    "help": cmd_help,
    "ps": cmd_ps,
    "dmesg": cmd_dmesg,
    "free": cmd_free,
    "uptime": cmd_uptime,
    "kill": cmd_kill,
    "run": cmd_run,
    "jobs": cmd_jobs,
    "clear": cmd_clear,
    "set": cmd_set,
    "poweroff": cmd_poweroff,
}
COMMANDS.update(MODULE_COMMANDS)
COMMANDS.update(GPU_COMMANDS)
COMMANDS.update(VM_COMMANDS)
COMMANDS.update(TRACE_COMMANDS)
COMMANDS.update(TOP_COMMANDS)
