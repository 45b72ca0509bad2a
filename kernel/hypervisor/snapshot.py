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
  they keep their places among the host's events at the same instant).

`take` first pauses the VM and waits until it is *quiet*: no host CPU grant
held, nothing outstanding on its queues or on the host's vGPU.  `restore`
replays the journal on a fresh kernel (replay.py), checks the state hash,
moves the rebuilt kernel onto the host's machine with its pending events, and
gives the host-side state back.  The restored VM then runs exactly as the
one that was snapshotted and left running does.

Cost: the file grows with the inputs (mostly host CPU grants, a few per
millisecond of the VM's busy time), and restoring takes as long as running
the guest alone from its boot: it grows with the VM's age.  README,
"Snapshots", gives measured figures.

File format: ``MAGIC | version (u16) | body length (u64) | SHA-256 of the
body | body``, the body being zlib-compressed msgpack of plain values.  A
file with another magic, another version, a short body or a wrong hash is
refused with one line saying which.
"""

from __future__ import annotations

import hashlib
import os
import struct
import zlib
from typing import TYPE_CHECKING, Any

import attrs
import msgpack

from kernel.config import BootPlan, KernelConfig, ServerSpec
from kernel.errors import SyscallError
from kernel.hypervisor.hypercall import Hc
from kernel.hypervisor.journal import Entry
from kernel.hypervisor.replay import Replay, ReplayDiverged

if TYPE_CHECKING:
    from kernel.hypervisor.virtqueue import GuestMemory
    from kernel.hypervisor.vm import Hypervisor, Vm
    from kernel.kernel import Kernel

MAGIC = b"MALVSNAP"
FORMAT_VERSION = 1
_HEADER = struct.Struct("<8sHQ32s")
MAX_BODY_BYTES = 1 << 30


class SnapshotError(Exception):
    """A snapshot could not be taken, read or restored; the message says why, in one line."""


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


def _config_to_plain(config: KernelConfig) -> dict[str, Any]:
    return attrs.asdict(config, recurse=True)


def _config_from_plain(plain: dict[str, Any]) -> KernelConfig:
    plan = plain["plan"]
    servers = tuple(ServerSpec(**server) for server in plan["servers"])
    fields = {k: v for k, v in plain.items() if k != "plan"}
    return KernelConfig(**fields, plan=BootPlan(servers, plan["init"]))


def _module_hashes(entries: list[Entry]) -> dict[str, str]:
    """The module files the guest's policy hypercalls named, by content hash."""
    hashes: dict[str, str] = {}
    for entry in entries:
        if entry.kind == "hc" and entry.data[0] == Hc.POLICY_CHOOSE and entry.data[2][0] == 0:
            path = entry.data[2][1]
            hashes[path] = _file_hash(path)
    return hashes


def _file_hash(path: str) -> str:
    if os.path.isdir(path):
        path = os.path.join(path, "__init__.py")
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return "missing"


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
    scheduler = hv.scheduler
    domain = vm.domain
    waiting = [[i, v.id] for i, v in enumerate(scheduler.waiting) if v.kernel is guest]
    pending = [[entry[0], entry[1]] for entry in guest.loop.owned(guest)]
    entries = vm.journal.entries
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
        "config": _config_to_plain(guest.config),
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
        "modules": _module_hashes(entries),
    }


def write(path: str, image: dict[str, Any]) -> int:
    """Write `image` to `path` (atomically: a reader never sees half a file); its size."""
    body = zlib.compress(msgpack.packb(image, use_bin_type=True), 6)
    header = _HEADER.pack(MAGIC, FORMAT_VERSION, len(body), hashlib.sha256(body).digest())
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(header)
            f.write(body)
        os.replace(tmp, path)
    except OSError as exc:
        raise SnapshotError(f"cannot write the snapshot {path}: {exc.strerror or exc}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return len(header) + len(body)


# -- reading ------------------------------------------------------------------------------------


def read(path: str) -> dict[str, Any]:
    """The image in the file at `path`; SnapshotError, in one line, if it is not one."""
    try:
        with open(path, "rb") as f:
            header = f.read(_HEADER.size)
            if len(header) < _HEADER.size or header[:8] != MAGIC:
                raise SnapshotError(f"{path} is not a malvos snapshot")
            magic, version, length, digest = _HEADER.unpack(header)
            if version != FORMAT_VERSION:
                raise SnapshotError(
                    f"{path} is a snapshot of format version {version}; "
                    f"this malvos reads version {FORMAT_VERSION}"
                )
            if length > MAX_BODY_BYTES:
                raise SnapshotError(f"{path} claims a body of {length} bytes: corrupted")
            body = f.read(length + 1)
    except OSError as exc:
        raise SnapshotError(f"cannot read the snapshot {path}: {exc.strerror or exc}") from None
    if len(body) < length:
        raise SnapshotError(f"{path} is truncated: {len(body)} of {length} bytes")
    if len(body) > length:
        raise SnapshotError(f"{path} has bytes past its end: corrupted")
    if hashlib.sha256(body).digest() != digest:
        raise SnapshotError(f"{path} is corrupted: its hash does not match its contents")
    try:
        image = msgpack.unpackb(zlib.decompress(body), raw=False, strict_map_key=False)
    except Exception as exc:  # a body that hashes right but does not decode: not ours
        raise SnapshotError(f"{path} does not decode as a snapshot: {type(exc).__name__}") from None
    _check_image(path, image)
    return image


_IMAGE_KEYS = {
    "format": int, "vm": dict, "config": dict, "created_ns": int, "at_ns": int, "ticks": int, "calls": int,
    "journal": list, "state_hash": str, "pending": list, "domain": dict, "queues": dict,
    "balloon_given": int, "modules": dict,
}  # fmt: skip


def _check_image(path: str, image: Any) -> None:
    if type(image) is not dict:
        raise SnapshotError(f"{path} does not hold a snapshot image")
    for key, kind in _IMAGE_KEYS.items():
        if type(image.get(key)) is not kind:
            raise SnapshotError(f"{path}: the snapshot's {key!r} is missing or malformed")
    if image["format"] != FORMAT_VERSION:
        raise SnapshotError(f"{path}: the image is of format {image['format']}")


# -- restoring ----------------------------------------------------------------------------------


def _ints(value: Any, n: int) -> bool:
    return type(value) is list and len(value) == n and all(type(v) is int for v in value)


def _check_host_state(path: str, image: dict[str, Any]) -> None:
    """Refuse, before anything is rebuilt, host-side state that is not plain
    values of the right shape: what `vm.adopt` gives back to the host."""
    meta, domain = image["vm"], image["domain"]
    if type(meta.get("isolated_modules")) is not bool or type(meta.get("was_running")) is not bool:
        raise SnapshotError(f"{path}: the vm's isolated_modules and was_running must be booleans")
    if (
        not all(type(domain.get(k)) is int for k in ("credit_ns", "used_ns"))
        or type(domain.get("active")) is not bool
    ):
        raise SnapshotError(f"{path}: the vm's credit-scheduler domain is malformed")
    waiting = domain.get("waiting")
    if type(waiting) is not list or not all(_ints(w, 2) and min(w) >= 0 for w in waiting):
        raise SnapshotError(f"{path}: the vm's place in the scheduler's queue is malformed")
    if not all(_ints(p, 2) and min(p) >= 0 for p in image["pending"]):
        raise SnapshotError(f"{path}: the vm's pending events are malformed")
    for number, queue in image["queues"].items():
        if (
            type(number) is not str
            or not number.isdigit()
            or type(queue) is not dict
            or type(queue.get("idx")) is not int
            or not 0 <= queue["idx"] <= 0xFFFF
            or type(queue.get("state")) is not dict
        ):
            raise SnapshotError(f"{path}: the vm's queue {number!r} is malformed")
    if not 0 <= image["balloon_given"] <= image["config"].get("frames", 0):
        raise SnapshotError(f"{path}: the vm's balloon holds {image['balloon_given']} pages")


def restore(hv: Hypervisor, image: dict[str, Any], path: str = "snapshot") -> Vm:
    """Rebuild the VM of `image` on `hv`'s host, paused where it was taken, and
    resume it if it was running.  SnapshotError if it cannot be rebuilt exactly."""
    from kernel.hypervisor import vm as vms

    try:
        meta = image["vm"]
        name = meta["name"]
        if name in hv.vms:
            raise SnapshotError(f"there is already a vm named {name!r}: destroy it first")
        try:  # the settings a VM is created with are checked as `create` checks them
            hv.check_settings(
                name, meta["weight"], meta["cap"], meta["allowed_modules"], meta["gpu_share"]
            )
        except vms.VmError as exc:
            raise SnapshotError(f"{path}: {exc.args[0]}") from None
        _check_host_state(path, image)
        for module, digest in image["modules"].items():
            if _file_hash(module) != digest:
                raise SnapshotError(f"the module {module} changed since the snapshot was taken")
        config = _config_from_plain(image["config"])
        entries = [Entry(*e) for e in image["journal"]]
        if image["at_ns"] < (entries[-1].time_ns if entries else 0):
            raise SnapshotError(f"{path}: its journal runs past its own time")
        if image["at_ns"] > hv.machine.now_ns:
            raise SnapshotError(
                f"{path} was taken at {image['at_ns']} ns, in this machine's future "
                f"({hv.machine.now_ns} ns)"
            )
        gpu_share = meta["gpu_share"]
        if gpu_share and "gpu" not in hv.host.servers:
            raise SnapshotError(f"vm {name!r} has a GPU share, but this host has no vGPU")
        isolated = meta["isolated_modules"] is True

        def wire(kernel: Kernel, window: GuestMemory) -> None:
            vms.wire_guest(kernel, window, gpu_share > 0, isolated)

        replay = Replay(config, entries, hv.host.programs, wire, image["created_ns"])
        guest = replay.run(image["at_ns"], image["ticks"], image["calls"])
        if state_hash(guest, replay.window, replay.console) != image["state_hash"]:
            raise ReplayDiverged("the replayed guest's state hash differs from the snapshot's")
    except (KeyError, TypeError, ValueError, IndexError, SyscallError) as exc:
        # (a SyscallError: a journaled write outside the guest's window)
        raise SnapshotError(f"{path}: a malformed snapshot ({type(exc).__name__}: {exc})") from None
    except ReplayDiverged as exc:
        raise SnapshotError(f"{path}: the replay diverged: {exc}") from None
    return vms.adopt(hv, image, replay, entries)
