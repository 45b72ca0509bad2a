"""Shell commands for guest VMs: `vm list|create|start|stop|pause|resume|snapshot|restore|console`.

The shell reaches the hypervisor only through the `VmControl` trap; on a
kernel that hosts no VMs the trap fails with ENOSYS.  The shell merges this
`COMMANDS` table into its own.
"""

from __future__ import annotations

from kernel.errors import SyscallError
from kernel.traps import Call, Message, VmControl
from kernel.tty import CONSOLE_ESCAPE
from userland.lib import UsageError, println

VM_USAGE = (
    "usage: vm list | vm create NAME [cpus=N] [weight=W] [cap=C] [gpu=PERCENT] | "
    "vm start|stop|destroy|pause|resume NAME | vm snapshot NAME FILE | "
    "vm restore FILE [--key KEYFILE] | "
    "vm console NAME [CMD...]"
)


def format_vm_list(rows) -> str:
    lines = [
        f"{'NAME':<12} {'STATE':<9} {'VCPUS':>5} {'WEIGHT':>6} {'CAP':>4} {'GPU':>4} {'CPU(ms)':>10}"
    ]
    for r in rows:
        cap = f"{r['cap']}" if r["cap"] else "-"
        gpu = f"{r['gpu_share']}%" if r["gpu_share"] else "-"
        lines.append(
            f"{r['name']:<12} {r['state']:<9} {r['vcpus']:>5} {r['weight']:>6} {cap:>4} {gpu:>4} "
            f"{r['cpu_ns'] / 1e6:>10.3f}"
        )
    return "\n".join(lines)


def cmd_vm(sh, args):
    """vm list|create|start|stop|pause|resume|snapshot|restore|console: guest VMs (vm alone: usage)"""
    if not args:
        raise UsageError(VM_USAGE)
    op, rest = args[0], args[1:]
    if op == "list" and not rest:
        rows = yield VmControl("list")
        yield from println(sh.proc, format_vm_list(rows))
    elif op == "create" and rest:
        info = yield VmControl("create", tuple(rest))
        cap = f", cap {info['cap']}" if info["cap"] else ""
        yield from println(
            sh.proc,
            f"vm: created {info['name']} ({info['vcpus']} vCPUs, weight {info['weight']}{cap})",
        )
    elif op == "snapshot" and len(rest) == 2:
        answer = yield VmControl("snapshot", tuple(rest))
        yield from println(sh.proc, f"vm: {answer}")
    elif op == "restore" and (len(rest) == 1 or (len(rest) == 3 and rest[1] == "--key")):
        # --key: another host's snapshot key, to restore its snapshot on purpose
        answer = yield VmControl("restore", (rest[0], *rest[2:]))
        yield from println(sh.proc, f"vm: {answer}")
    elif op in ("start", "stop", "destroy", "pause", "resume") and len(rest) == 1:
        answer = yield VmControl("stop" if op == "destroy" else op, (rest[0],))
        yield from println(sh.proc, f"vm: {answer}")
    elif op == "console" and len(rest) >= 2:
        output = yield VmControl("console", (rest[0], " ".join(rest[1:])))
        if output:
            yield from println(sh.proc, output.rstrip("\n"))
    elif op == "console" and len(rest) == 1:
        yield from attach(sh, rest[0])
    else:
        raise UsageError(VM_USAGE)


def attach(sh, name: str):
    """`vm console NAME`: type lines into the guest's shell, until `exit`,
    Ctrl-] or end of input.  While attached, the host's terminal sends Ctrl-C
    and Ctrl-P to the guest (`Tty.attach`)."""
    rows = yield VmControl("list")
    state = next((r["state"] for r in rows if r["name"] == name), None)
    if state != "running":
        raise UsageError(f"no running vm named {name!r}" + (f" (it is {state})" if state else ""))
    yield VmControl("attach", (name,))
    yield from println(
        sh.proc, f"vm: attached to {name}'s console; Ctrl-] or 'exit' comes back to the host"
    )
    try:
        yield from _console_lines(sh, name)
    except SyscallError:
        yield VmControl("detach")
        raise
    yield VmControl("detach")
    yield from println(sh.proc, f"vm: back on the host from {name}")


def _console_lines(sh, name: str):
    while True:
        r = yield Call(sh.con, Message("readline", f"{name}$ "))
        line = str(r.msg.payload)
        if r.msg.label != "line" or line == CONSOLE_ESCAPE or line.strip() == "exit":
            return
        if not line.strip():
            continue
        output = yield VmControl("console", (name, line, "attached"))
        if output:
            yield from println(sh.proc, output.rstrip("\n"))


COMMANDS = {"vm": cmd_vm}
