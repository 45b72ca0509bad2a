"""Shell commands for guest VMs: `vm list|create|start|stop|pause|resume|snapshot|restore|console`.

The shell reaches the hypervisor only through the `VmControl` trap; on a
kernel that hosts no VMs the trap fails with ENOSYS.  The shell merges this
`COMMANDS` table into its own.
"""

from __future__ import annotations

from kernel.traps import VmControl
from userland.lib import UsageError, println

VM_USAGE = (
    "usage: vm list | vm create NAME [cpus=N] [weight=W] [cap=C] [gpu=PERCENT] | "
    "vm start|stop|pause|resume NAME | vm snapshot NAME FILE | vm restore FILE | "
    "vm console NAME CMD..."
)


def format_vm_list(rows) -> str:
    lines = [f"{'NAME':<12} {'STATE':<9} {'VCPUS':>5} {'WEIGHT':>6} {'CAP':>4} {'CPU(ms)':>10}"]
    for r in rows:
        cap = f"{r['cap']}" if r["cap"] else "-"
        lines.append(
            f"{r['name']:<12} {r['state']:<9} {r['vcpus']:>5} {r['weight']:>6} {cap:>4} "
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
    elif op == "restore" and len(rest) == 1:
        answer = yield VmControl("restore", tuple(rest))
        yield from println(sh.proc, f"vm: {answer}")
    elif op in ("start", "stop", "pause", "resume") and len(rest) == 1:
        answer = yield VmControl(op, (rest[0],))
        yield from println(sh.proc, f"vm: {answer}")
    elif op == "console" and len(rest) >= 2:
        output = yield VmControl("console", (rest[0], " ".join(rest[1:])))
        if output:
            yield from println(sh.proc, output.rstrip("\n"))
    else:
        raise UsageError(VM_USAGE)


COMMANDS = {"vm": cmd_vm}
