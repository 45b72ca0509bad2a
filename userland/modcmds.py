"""Shell commands for MLaaS modules: insmod, rmmod, reload, lsmod, modinfo.

Each is a generator function in the style of `userland.shell`; they reach
the kernel's module registry only through the module traps (`ModLoad`,
`ModUnload`, `ModReload`, `ModList`, `ModInfo`).  The shell merges this
`COMMANDS` table into its own.
"""

from __future__ import annotations

from kernel.text import plain_value
from kernel.traps import ModInfo, ModList, ModLoad, ModReload, ModUnload
from userland.lib import UsageError, println


def _split_params(words: list[str]) -> dict[str, str]:
    params = {}
    for word in words:
        key, eq, value = word.partition("=")
        if not eq or not key:
            raise UsageError(f"parameters are key=value, got {word!r}")
        params[key] = value
    return params


INSMOD_USAGE = "usage: insmod [--isolated] [-f] NAME|PATH [key=value ...]"


def cmd_insmod(sh, args):
    """insmod [--isolated] [-f] NAME|PATH [key=value ...]: load an MLaaS advisor module
    (--isolated: in a sandboxed process of its own; -f: it may take a shipped module's name)"""
    flags = set()
    while args and args[0].startswith("-"):
        if args[0] not in ("--isolated", "-f"):
            raise UsageError(f"unknown option {args[0]}; {INSMOD_USAGE}")
        flags.add(args[0])
        args = args[1:]
    if not args:
        raise UsageError(INSMOD_USAGE)
    info = yield ModLoad(
        args[0], _split_params(args[1:]), isolated="--isolated" in flags, override="-f" in flags
    )
    params = " ".join(f"{k}={plain_value(v)}" for k, v in info["params"].items())
    mode = ", isolated" if info["mode"] == "isolated" else ""
    yield from println(
        sh.proc,
        f"insmod: {info['name']} attached as the {info['kind']} advisor{mode}"
        + (f" ({params})" if params else ""),
    )


def cmd_rmmod(sh, args):
    """rmmod NAME: detach a module; the default policy takes over"""
    if len(args) != 1:
        raise UsageError("usage: rmmod NAME")
    yield ModUnload(args[0])
    yield from println(sh.proc, f"rmmod: {args[0]} removed")


def cmd_reload(sh, args):
    """reload NAME [key=value ...]: load NAME's file again, keeping its state"""
    if not args:
        raise UsageError("usage: reload NAME [key=value ...]")
    info = yield ModReload(args[0], _split_params(args[1:]))
    yield from println(sh.proc, f"reload: {info['name']}: {info['report'].message}")


def cmd_lsmod(sh, args):
    """lsmod: list the loaded modules"""
    rows = yield ModList()
    lines = [
        f"{'Module':<20} {'Kind':<7} {'State':<8} {'Calls':>9} {'CPU(ms)':>10} {'Faults':>6}"
        f"  {'Mode':<10} Origin"
    ]
    for r in rows:
        lines.append(
            f"{r['name']:<20} {r['kind']:<7} {r['state']:<8} {r['calls']:>9} "
            f"{r['time_ms']:>10.3f} {r['faults']:>6}  {r['mode']:<10} {r['origin']}"
        )
    yield from println(sh.proc, "\n".join(lines))


def cmd_modinfo(sh, args):
    """modinfo NAME: a module's description, parameters and last exit report"""
    if len(args) != 1:
        raise UsageError("usage: modinfo NAME")
    info = yield ModInfo(args[0])
    yield from println(sh.proc, format_modinfo(info))


def format_modinfo(info: dict) -> str:
    report = info.get("last_exit")
    last = report.line() if report is not None else "none"
    if info["state"] == "not loaded":
        return f"{'name:':<13}{info['name']}\n{'state:':<13}not loaded\n{'last exit:':<13}{last}"
    params = (
        " ".join(
            f"{k}={v}"
            + ("" if info["defaults"].get(k) == v else f" (default {info['defaults'].get(k)})")
            for k, v in info["params"].items()
        )
        or "none"
    )
    infer = info["inference_ns"]
    inference = (
        f"{info['inference_rows']} rows, "
        + ", ".join(f"{ns / 1e6:.3f} ms on {b}" for b, ns in sorted(infer.items()))
        if info["inference_rows"]
        else "none"
    )
    description = info["description"].replace("\n", "\n" + " " * 13)
    fields = [
        ("name", info["name"]), ("kind", info["kind"]), ("state", info["state"]),
        ("mode", info["mode"]), ("origin", info["origin"]),
        ("file", info["path"]), ("version", info["version"]), ("api", info["api_version"]),
        ("budget", f"{info['budget_us']:g} us of CPU per call"), ("parameters", params),
        ("calls", f"{info['calls']} ({info['time_ms']:.3f} ms of CPU)"), ("faults", info["faults"]),
        ("inference", inference), ("last exit", last), ("description", description),
    ]  # fmt: skip
    return "\n".join(f"{key + ':':<13}{value}" for key, value in fields)


COMMANDS = {
    "insmod": cmd_insmod,
    "rmmod": cmd_rmmod,
    "reload": cmd_reload,
    "lsmod": cmd_lsmod,
    "modinfo": cmd_modinfo,
}
