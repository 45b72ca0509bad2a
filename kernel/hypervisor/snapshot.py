"""Snapshots: a guest VM saved to a file, and brought back to continue exactly.

A guest's tasks are Python generators, which cannot be saved.  But a guest
kernel is deterministic given its inputs, and the hypervisor journals every
input as the guest gets it, with its exact place in the guest's run
(journal.py).  So a snapshot holds the guest's *recipe* rather than its
memory image:

* its configuration and the journal of its inputs, from its boot on;
* where it stood (virtual time, ticks, provider calls) and a SHA-256 of its
  whole state there: physical memory, the shared window, console output,
  tasks and kernel log;
* what the host held for it: its credit-scheduler domain (credit, CPU time,
  place in the queue), its queues' indices and its GPU back end's tables, its
  balloon, and the sequence numbers of its pending events (so that, restored,
  they keep their places among the host's events at the same instant);
* the modules it chose, by registry name and the hash of their sources.

`take` first pauses the VM and waits until it is *quiet*: no host CPU grant
held, nothing outstanding on its queues or on the host's vGPU.  `restore`
replays the journal on a fresh kernel (replay.py), checks the state hash,
moves the rebuilt kernel onto the host's machine with its pending events, and
gives the host-side state back.  The restored VM then runs exactly as the
one that was snapshotted and left running does.

A snapshot file is input from outside, so restore trusts nothing in it:

1. the file's MAC must check under the host's key before a byte of it is
   decoded (seal.py);
2. the decoded image is checked value by value against `IMAGE`, a declared
   schema (schema.py): types, ranges, lengths, depth and total size, and then
   value against value (a vCPU the VM has, a write inside its window);
3. the VM's rights come from this host: a VM this host made keeps the
   settings the host gave it, and one it did not make may be no larger, and
   allowed no other modules, than the host allows a guest (`settings`);
4. nothing in the file is opened or imported as a path: a module the guest
   chose is named by its registry name, found through the host's own module
   path, and must hash as it did (`chosen_modules`); the replay loads that
   file, whatever the journal says the host answered.

Cost: the file grows with the inputs (mostly host CPU grants, a few per
millisecond of the VM's busy time), and restoring takes as long as running
the guest alone from its boot: it grows with the VM's age.  README,
"Snapshots", gives measured figures.
"""

from __future__ import annotations

import hashlib
import os
import stat
from typing import TYPE_CHECKING, Any

import attrs
import msgpack

from kernel.config import DEVICES, MAX_CPUS, MAX_FRAMES, BootPlan, KernelConfig, ServerSpec
from kernel.hypervisor import seal
from kernel.hypervisor.credit import MAX_WEIGHT
from kernel.hypervisor.hypercall import MAX_MODULE_NAME, Hc
from kernel.hypervisor.journal import Entry
from kernel.hypervisor.port import GPU_QUEUE, WINDOW_BYTES
from kernel.hypervisor.replay import Replay, ReplayDiverged
from kernel.hypervisor.schema import (
    I64_MAX,
    Bool,
    Budget,
    Bytes,
    Int,
    Invalid,
    List,
    Map,
    Maybe,
    Node,
    Plain,
    Record,
    Str,
    Switch,
    Tuple,
    check,
)
from kernel.mlaas import loader
from kernel.mlaas.faults import ModuleError

if TYPE_CHECKING:
    from kernel.hypervisor.virtqueue import GuestMemory
    from kernel.hypervisor.vm import Hypervisor, Vm, VmSettings
    from kernel.kernel import Kernel

SnapshotError = seal.SnapshotError
FORMAT_VERSION = seal.FORMAT_VERSION
MAX_JOURNAL_ENTRIES = 1 << 20  # hours of a busy VM (README, "Snapshots")
MAX_LINE_CHARS = 1 << 16  # one console line typed into a guest
MAX_MODULE_BYTES = 1 << 24  # one source file of a module the guest chose
MAX_MESSAGE_CHARS = 300  # a refusal's line


@attrs.frozen
class SnapshotInfo:
    """What `Vm.snapshot` reports."""

    path: str
    vm: str
    at_ns: int  # the virtual time of the snapshot
    bytes: int  # the file's size
    inputs: int  # journal entries


# -- the guest's state --------------------------------------------------------------------------


def state_hash(kernel: Kernel, window: GuestMemory, console: list[str]) -> str:
    """A SHA-256 of everything a guest is: memory, window, console, tasks, log."""
    h = hashlib.sha256()
    h.update(bytes(kernel.mm.buf))
    h.update(window.read(0, window.size))
    h.update("".join(console).encode())
    for t in sorted(kernel.tasks.values(), key=lambda t: t.pid):
        h.update(f"{t.pid} {t.name} {t.state.name} {t.cpu_ns} {t.traps}\n".encode())
    h.update(f"{kernel.loop.now_ns} {kernel.ticks}\n".encode())
    for line in kernel.log.lines():
        h.update(line.encode())
    return h.hexdigest()


def module_hash(path: str) -> str:
    """A SHA-256 of a module's sources (each named within the module): what
    its files hold, not where they are.  Only regular files are read."""
    h = hashlib.sha256()
    root = path if os.path.isdir(path) else os.path.dirname(path)
    for source in loader.sources(path):
        try:
            fd = os.open(source, os.O_RDONLY | os.O_NONBLOCK)
            with os.fdopen(fd, "rb") as f:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    raise SnapshotError(f"the module source {source} is not a regular file")
                data = f.read(MAX_MODULE_BYTES + 1)
        except OSError as exc:
            raise SnapshotError(f"cannot read the module {source}: {exc.strerror or exc}") from None
        if len(data) > MAX_MODULE_BYTES:
            raise SnapshotError(
                f"the module source {source} is larger than {MAX_MODULE_BYTES} bytes"
            )
        h.update(os.path.relpath(source, root).encode() + b"\0" + hashlib.sha256(data).digest())
    return h.hexdigest()


def _chosen(entries: list[Any]) -> list[tuple[int, str]]:
    """(index, name) of each module the guest's policy hypercalls were given."""
    return [
        (i, e[5][1][0])
        for i, e in enumerate(entries)
        if e[4] == "hc" and e[5][0] == Hc.POLICY_CHOOSE and e[5][2][0] == 0
    ]


# -- the image's schema -------------------------------------------------------------------------

_TIME = Int(0, I64_MAX)
_COUNT = Int(0, I64_MAX)
_HASH = Str(64, "[0-9a-f]{64}")
_MODULE = Str(32, loader.NAME_RE.pattern.strip("^$"))
_NAME = Str(64, min_len=1)  # a vm's name; `Hypervisor.check_settings` checks its form
_CPU = Int(0, MAX_CPUS - 1)

_PLAN = Record({
    "servers": List(Record({
        "name": Str(64), "program": Str(64), "args": List(Str(256), 16),
        "devices": List(Str(16), len(DEVICES)),
    }), 16),
    "init": Str(64),
})  # fmt: skip
_CONFIG_FIELD = {"int": Int(), "bool": Bool(), "str": Str(64), "str | None": Maybe(Str(64)),
                 "BootPlan": _PLAN}  # fmt: skip
#: A KernelConfig, field by field (its validators then check each value).
_CONFIG = Record({f.name: _CONFIG_FIELD[str(f.type)] for f in attrs.fields(KernelConfig)})

_GPU_ID = Int(0, 1 << 31)
_GPU_BYTES = Int(0, 1 << 40)
#: The GPU back end's tables (drivers/vgpu/backend.py, `VmGpu`): empty before it first ran.
_GPU_STATE = Switch(
    lambda v: "new" if v == {} else "tables",
    {
        "new": Record({}),
        "tables": Record({
            "vm": _NAME, "share": Int(0, 100), "ctx": Maybe(_GPU_ID),
            "next_ctx": _GPU_ID, "next_handle": _GPU_ID, "next_kernel": _GPU_ID,
            "contexts": Map(_GPU_ID, Tuple(Maybe(_GPU_BYTES), _GPU_BYTES, Maybe(_TIME), _GPU_ID), 4096),
            "handles": Map(_GPU_ID, Tuple(_GPU_ID, Int(), _GPU_BYTES), 1 << 16),
            "kernels": Map(_GPU_ID, Tuple(_GPU_ID, Int(), Maybe(_TIME)), 1 << 16),
        }),
    },
    "a GPU back end's state",
)  # fmt: skip

_ARG = Switch(
    lambda v: type(v) if type(v) in (int, str) else None,
    {int: Int(), str: Str(MAX_MODULE_NAME)},
    "an int or a str",
)
_HC = Tuple(Int(), List(_ARG, 8), Tuple(Int(0, 4095), Plain(depth=4, max_len=4096)))
#: What each kind of journal entry carries (journal.py, replay.py `_apply`).
_DATA: dict[str, Node] = {
    "grant": Tuple(_CPU, _TIME),
    "line": Tuple(Str(MAX_LINE_CHARS)),
    "keys": Tuple(Str(MAX_LINE_CHARS)),
    "eof": Tuple(), "intr": Tuple(), "procdump": Tuple(), "boot": Tuple(),
    "irq": Tuple(Str(16), Int(0, (1 << 64) - 1)),
    "dma": Tuple(Int(0, WINDOW_BYTES), Bytes(WINDOW_BYTES)),
    "echo": Tuple(Int(0, 100)),
    "hc": _HC,
}  # fmt: skip
_ENTRY = Switch(
    lambda v: v[4] if type(v) is list and len(v) == 7 and type(v[4]) is str else None,
    {
        kind: Tuple(_TIME, _COUNT, _COUNT, Bool(), Str(16), data, Int(0, (1 << 32) - 1))
        for kind, data in _DATA.items()
    },
    "a journal entry of a known kind",
)

IMAGE = Record({
    "format": Int(FORMAT_VERSION, FORMAT_VERSION),
    "vm": Record({
        "name": _NAME, "allowed_modules": List(_MODULE, 64), "gpu_share": Int(0, 100),
        "isolated_modules": Bool(), "weight": Int(1, MAX_WEIGHT), "cap": Int(0, 100 * MAX_CPUS),
        "was_running": Bool(),
    }),
    "config": _CONFIG,
    "created_ns": _TIME, "at_ns": _TIME, "ticks": _COUNT, "calls": _COUNT,
    "journal": List(_ENTRY, MAX_JOURNAL_ENTRIES),
    "state_hash": _HASH,
    "pending": List(Tuple(_TIME, Int(0, 1 << 53)), 1 << 16),
    "domain": Record({
        "credit_ns": Int(-(1 << 53), 1 << 53), "used_ns": _TIME, "active": Bool(),
        "waiting": List(Tuple(Int(0, 1 << 20), _CPU), MAX_CPUS),
    }),
    "queues": Map(Str(5, "[0-9]{1,5}"), Record({"idx": Int(0, 0xFFFF), "state": _GPU_STATE}), 1),
    "balloon_given": Int(0, MAX_FRAMES),
    "modules": Map(_MODULE, _HASH, 64),
})  # fmt: skip


def check_image(path: str, tree: Any) -> dict[str, Any]:
    """`tree`, as read from the file at `path`, checked against `IMAGE` and
    against itself: a fresh image of plain values, or SnapshotError."""
    budget = Budget(items=12 * MAX_JOURNAL_ENTRIES, text_bytes=seal.MAX_IMAGE_BYTES)
    try:
        image: dict[str, Any] = check(IMAGE, tree, budget)
    except Invalid as exc:
        raise _refusal(f"{path}: a malformed snapshot: {exc}") from None
    _check_journal(path, image)
    return image


def _check_journal(path: str, image: dict[str, Any]) -> None:
    """Values against values: the journal's times, vCPUs, window and modules."""
    cpus = image["config"]["cpus"]
    last, at_ns = image["created_ns"], image["at_ns"]
    if last > at_ns:
        raise SnapshotError(f"{path}: the vm was made after its snapshot was taken")
    for i, (time_ns, _ticks, _calls, _inside, kind, data, _digest) in enumerate(image["journal"]):
        if not last <= time_ns <= at_ns:
            raise SnapshotError(f"{path}: journal entry {i} is out of time order")
        last = time_ns
        if kind == "grant" and data[0] >= cpus:
            raise SnapshotError(f"{path}: journal entry {i} grants vCPU {data[0]} of {cpus}")
        if kind == "dma" and data[0] + len(data[1]) > WINDOW_BYTES:
            raise SnapshotError(
                f"{path}: journal entry {i} writes past the vm's window of {WINDOW_BYTES} bytes"
            )
        if kind == "irq" and data[0] not in DEVICES:
            raise SnapshotError(f"{path}: journal entry {i} interrupts an unknown device")
    named = {name for _i, name in _chosen_entries(path, image["journal"])}
    if set(image["modules"]) != named:
        raise SnapshotError(f"{path}: the modules it hashes are not those its guest chose")


def _chosen_entries(path: str, entries: list[Any]) -> list[tuple[int, str]]:
    chosen = _chosen(entries)
    for i, _name in chosen:
        args = entries[i][5][1]
        if len(args) != 1 or type(args[0]) is not str or not loader.NAME_RE.fullmatch(args[0]):
            raise SnapshotError(f"{path}: journal entry {i} chose a module by other than its name")
    return chosen


def _refusal(message: str) -> SnapshotError:
    line = message.replace("\n", " ")
    if len(line) > MAX_MESSAGE_CHARS:
        line = line[: MAX_MESSAGE_CHARS - 3] + "..."
    return SnapshotError(line)


def _config_from_plain(plain: dict[str, Any]) -> KernelConfig:
    plan = plain["plan"]
    servers = tuple(ServerSpec(**server) for server in plan["servers"])
    fields = {k: v for k, v in plain.items() if k != "plan"}
    return KernelConfig(**fields, plan=BootPlan(servers, plan["init"]))


# -- taking -------------------------------------------------------------------------------------


def image_of(vm: Vm, was_running: bool) -> dict[str, Any]:
    """The snapshot of a quiet VM, in plain values."""
    hv, guest = vm.hv, vm.kernel
    outside = next((e for e in vm.journal.entries if e.kind == "spawn"), None)
    if outside is not None:
        raise SnapshotError(
            f"vm {vm.name!r} cannot be snapshotted: {outside.data[0]!r} was started from "
            "outside it (Kernel.spawn), which its journal cannot replay; start programs "
            "with the guest's shell"
        )
    if len(vm.journal.entries) > MAX_JOURNAL_ENTRIES:
        raise SnapshotError(
            f"vm {vm.name!r} cannot be snapshotted: its journal holds "
            f"{len(vm.journal.entries)} inputs, more than a snapshot may ({MAX_JOURNAL_ENTRIES})"
        )
    scheduler = hv.scheduler
    domain = vm.domain
    waiting = [[i, v.id] for i, v in enumerate(scheduler.waiting) if v.kernel is guest]
    pending = [[entry[0], entry[1]] for entry in guest.loop.owned(guest)]
    entries = vm.journal.entries
    # The path each module was loaded from is the host's own answer (live, or
    # rewritten by `restore`); the file names the module, and keeps its hash.
    modules = {
        entries[i].data[1][0]: module_hash(entries[i].data[2][1]) for i, _ in _chosen(entries)
    }
    return {
        "format": FORMAT_VERSION,
        "vm": {
            "name": vm.name,
            "allowed_modules": list(vm.allowed_modules),
            "gpu_share": vm.gpu_share,
            "isolated_modules": guest.mlaas.require_isolation,
            "weight": domain.weight,
            "cap": domain.cap,
            "was_running": was_running,
        },
        "config": attrs.asdict(guest.config, recurse=True),
        "created_ns": guest.boot_ns,
        "at_ns": guest.loop.now_ns,
        "ticks": guest.ticks,
        "calls": vm.vcpus.calls,
        "journal": [list(e) for e in entries],
        "state_hash": state_hash(guest, vm.window, vm._console),
        "pending": pending,
        "domain": {
            "credit_ns": domain.credit_ns,
            "used_ns": domain.used_ns,
            "active": domain.active,
            "waiting": waiting,
        },
        "queues": {
            str(n): {"idx": q.device.last_avail, "state": q.state} for n, q in vm.queues.items()
        },
        "balloon_given": vm.balloon.given_pages,
        "modules": modules,
    }


def write(path: str, image: dict[str, Any]) -> int:
    """Seal `image` into `path` with this host's key; its size.  The image is
    checked as a restore would check it first: what is written can be read."""
    try:
        tree = msgpack.unpackb(msgpack.packb(image, use_bin_type=True), strict_map_key=False)
    except (TypeError, ValueError, OverflowError) as exc:
        raise _refusal(f"the snapshot holds a value it cannot store: {exc}") from None
    check_image(path, tree)
    return seal.write(path, image, seal.host_key())


# -- reading ------------------------------------------------------------------------------------


def read(path: str, key_file: str | None = None) -> dict[str, Any]:
    """The image in the file at `path`, authentic (under this host's key, or
    the one in `key_file`) and checked; SnapshotError, in one line, if not."""
    key = seal.read_key(key_file) if key_file is not None else seal.host_key()
    return check_image(path, seal.read(path, key, other_key=key_file is not None))


# -- restoring ----------------------------------------------------------------------------------


def settings_for(hv: Hypervisor, path: str, image: dict[str, Any]) -> VmSettings:
    """The settings the restored VM gets: this host's, never wider than it allows."""
    from kernel.hypervisor import vm as vms

    meta = image["vm"]
    name = meta["name"]
    if name in hv.vms:
        raise SnapshotError(f"there is already a vm named {name!r}: destroy it first")
    try:  # the settings a VM is created with are checked as `create` checks them
        allowed = hv.check_settings(
            name, meta["weight"], meta["cap"], meta["allowed_modules"], meta["gpu_share"]
        )
        config = _config_from_plain(image["config"])
    except (vms.VmError, ValueError, TypeError) as exc:
        raise _refusal(f"{path}: {exc.args[0] if exc.args else exc}") from None
    if config.name != name:
        raise SnapshotError(f"{path}: the vm is named {name!r}, its kernel {config.name!r}")
    wanted = vms.VmSettings(
        config, meta["weight"], meta["cap"], allowed, meta["isolated_modules"], meta["gpu_share"]
    )
    known = hv.settings.get(name)
    if known is None:
        return _within_host_limits(hv, path, wanted)
    if attrs.evolve(wanted, allowed_modules=(), isolated_modules=False) != attrs.evolve(
        known, allowed_modules=(), isolated_modules=False
    ):
        raise SnapshotError(
            f"{path}: vm {name!r} was not made with the settings this host gives it"
        )
    extra = set(allowed) - set(known.allowed_modules)
    if extra:
        raise _refusal(
            f"{path}: vm {name!r} allows {', '.join(sorted(extra))}, which this host does not "
            f"allow it (allowed: {', '.join(known.allowed_modules) or 'none'})"
        )
    if known.isolated_modules and not wanted.isolated_modules:
        raise SnapshotError(
            f"{path}: this host runs vm {name!r}'s modules isolated; the file does not"
        )
    return attrs.evolve(known, isolated_modules=wanted.isolated_modules)


def _within_host_limits(hv: Hypervisor, path: str, wanted: VmSettings) -> VmSettings:
    """A VM this host did not make (another host's, or this one's before a
    restart): no larger than the host, booting what the host's own guests
    boot, and allowed only the modules it allows any guest."""
    from kernel.hypervisor.vm import guest_plan

    name, host = wanted.config.name, hv.host
    plan = BootPlan.standard(None)
    if wanted.config.gpu is not None or wanted.config.plan != (
        guest_plan(plan) if wanted.gpu_share else plan
    ):
        raise SnapshotError(
            f"{path}: vm {name!r} boots servers of its own; this host gives a vm it did not "
            "make the plan of its own guests"
        )
    extra = set(wanted.allowed_modules) - host.mlaas.allowed
    if extra:
        raise _refusal(
            f"{path}: vm {name!r} allows {', '.join(sorted(extra))}, which this host does not "
            f"allow a guest (allowed: {', '.join(sorted(host.mlaas.allowed)) or 'none'})"
        )
    if wanted.config.frames > host.config.frames:
        raise SnapshotError(
            f"{path}: vm {name!r} has {wanted.config.frames} frames; this host gives a vm it "
            f"did not make at most its own {host.config.frames}"
        )
    if wanted.gpu_share and "gpu" not in host.servers:
        raise SnapshotError(f"vm {name!r} has a GPU share, but this host has no vGPU")
    return wanted


def chosen_modules(
    hv: Hypervisor, path: str, image: dict[str, Any], allowed: tuple[str, ...]
) -> dict[str, str]:
    """Each module the guest chose, by name -> the file this host has for it:
    one it allows this VM, found in its own module path, hashing as it did."""
    found: dict[str, str] = {}
    for name, digest in image["modules"].items():
        try:
            where = os.path.abspath(hv.host.mlaas.offer(name, allowed))
        except ModuleError as exc:
            raise _refusal(f"{path}: the vm chose the module {name}: {exc}") from None
        if module_hash(where) != digest:
            raise SnapshotError(f"{path}: the module {name} changed since the snapshot was taken")
        found[name] = where
    return found


def _entries(image: dict[str, Any], modules: dict[str, str]) -> list[Entry]:
    """The journal as entries, each policy answer the path this host found."""
    entries = []
    for time_ns, ticks, calls, inside, kind, data, digest in image["journal"]:
        if kind == "hc":
            number, args, (status, value) = data
            if number == Hc.POLICY_CHOOSE and status == 0:
                value = modules[args[0]]
            data = [number, tuple(args), (status, value)]
        entries.append(Entry(time_ns, ticks, calls, inside, kind, tuple(data), digest))
    return entries


def _check_host_state(path: str, image: dict[str, Any], replay: Replay) -> None:
    """The host-side state (what `vm.adopt` gives back) against the replayed
    guest: its pending events (their order among themselves kept by their
    sequence numbers), the vCPUs waiting for the host's CPUs (in the order
    they asked), its queues and its balloon."""
    meta, domain, guest = image["vm"], image["domain"], replay.kernel
    pending = image["pending"]
    if [time_ns for time_ns, _seq in pending] != [e[0] for e in guest.loop.owned(guest)]:
        raise SnapshotError(f"{path}: the vm's pending events are not the replayed guest's")
    if any(a[1] >= b[1] for a, b in zip(pending, pending[1:], strict=False) if a[0] == b[0]):
        raise SnapshotError(f"{path}: the vm's pending events are out of order")
    if len({seq for _time, seq in pending}) != len(pending):
        raise SnapshotError(f"{path}: the vm's pending events share sequence numbers")
    waiting = domain["waiting"]
    if [cpu_id for _i, cpu_id in waiting] != replay.cpus.asking or any(
        a[0] >= b[0] for a, b in zip(waiting, waiting[1:], strict=False)
    ):
        raise SnapshotError(f"{path}: the vm's place in the scheduler's queue is not its vCPUs'")
    queues = image["queues"]
    if set(queues) != ({str(GPU_QUEUE)} if meta["gpu_share"] else set()):
        raise SnapshotError(f"{path}: the vm's queues are not those of its settings")
    for queue in queues.values():
        state = queue["state"]
        if state and (state["vm"], state["share"]) != (meta["name"], meta["gpu_share"]):
            raise SnapshotError(f"{path}: the vm's GPU back end is another vm's")
        if state and not _gpu_tables_agree(state):
            raise SnapshotError(f"{path}: the vm's GPU back end's tables do not agree")
    if image["balloon_given"] > image["config"]["frames"]:
        raise SnapshotError(f"{path}: the vm's balloon holds {image['balloon_given']} pages")


def _gpu_tables_agree(state: dict[str, Any]) -> bool:
    """The GPU back end's tables (drivers/vgpu/backend.py, `VmGpu`) against
    themselves: each buffer and kernel of a context that exists, a context's
    bytes the sum of its buffers' and within its quota, each context on a
    lane of its own, and every id below the next one to be given."""
    contexts, handles, kernels = state["contexts"], state["handles"], state["kernels"]
    held = dict.fromkeys(contexts, 0)
    for ctx, _host_handle, nbytes in handles.values():
        if ctx not in held:
            return False
        held[ctx] += nbytes
    for ctx, (quota, allocated, _done, _lane) in contexts.items():
        if held[ctx] != allocated or (quota is not None and allocated > quota):
            return False
    lanes = [entry[3] for entry in contexts.values()]
    return (
        all(entry[0] in contexts for entry in kernels.values())
        and len(set(lanes)) == len(lanes)
        and all(
            max(table, default=0) < state[key]
            for table, key in (
                (contexts, "next_ctx"),
                (handles, "next_handle"),
                (kernels, "next_kernel"),
            )
        )
    )


def restore(hv: Hypervisor, image: dict[str, Any], path: str = "snapshot") -> Vm:
    """Rebuild the VM of a checked `image` (`read`) on `hv`'s host, paused
    where it was taken, and resume it if it was running.  SnapshotError if
    this host would not run it, or it cannot be rebuilt exactly."""
    from kernel.hypervisor import vm as vms

    given = settings_for(hv, path, image)
    modules = chosen_modules(hv, path, image, given.allowed_modules)
    entries = _entries(image, modules)
    if image["at_ns"] > hv.machine.now_ns:
        raise SnapshotError(
            f"{path} was taken at {image['at_ns']} ns, in this machine's future "
            f"({hv.machine.now_ns} ns)"
        )

    def wire(kernel: Kernel, window: GuestMemory) -> None:
        vms.wire_guest(kernel, window, given.gpu_share > 0, given.isolated_modules)

    replay: Replay | None = None
    try:
        replay = Replay(given.config, entries, hv.host.programs, wire, image["created_ns"])
        guest = replay.run(image["at_ns"], image["ticks"], image["calls"])
        if state_hash(guest, replay.window, replay.console) != image["state_hash"]:
            raise ReplayDiverged("the replayed guest's state hash differs from the snapshot's")
        _check_host_state(path, image, replay)
    except Exception as exc:
        if replay is not None:
            replay.discard()
        if isinstance(exc, SnapshotError):
            raise
        # Diverged, or the journal drove the guest where no run of it goes.
        what = "diverged" if isinstance(exc, ReplayDiverged) else f"failed: {type(exc).__name__}"
        raise _refusal(f"{path}: the replay {what}: {exc}") from None
    return vms.adopt(hv, image, replay, entries, given)
