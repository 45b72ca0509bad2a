"""Snapshots: a guest saved to a file and restored continues exactly as the
guest that was left running (memory, IPC, the GPU and a module), and a file
that is not a good snapshot is refused with one line."""

from __future__ import annotations

import struct

import attrs
import pytest
from forge import forge, reseal
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kernel import Kernel
from kernel.config import KernelConfig
from kernel.hypervisor import Hypervisor, VmError, VmState
from kernel.hypervisor import snapshot as snapshots
from kernel.hypervisor.snapshot import SnapshotError

LATER_NS = 150_000_000  # how long both runs go on after the snapshot


def busy_world():
    """A host with a vGPU, and two guests at work: `a` swaps under the lru
    module it chose by hypercall, runs IPC round trips and a sleeper, and
    launches GPU kernels through its 60% share; `b` competes for the host
    CPUs and the vGPU (40%)."""
    host = Kernel(seed=0, name="host").boot()
    hv = Hypervisor(host)
    config = KernelConfig(seed=11, gpu=None, frames=64)
    a = hv.create("a", config, allowed_modules=("lru",), gpu_share=60)
    b = hv.create("b", attrs.evolve(config, seed=12), gpu_share=40)
    a.start()
    b.start()
    a.shell("insmod lru")
    a.shell("run memhog 100 &")
    a.shell("run pingpong 3000 &")
    a.shell("run sleep 7 &")
    a.shell("run gpu-loop 40 216 300 &")
    b.shell("run gpu-loop 40 432 300 &")
    b.shell("run spin 30 &")
    b.shell("run pingpong 2000 &")
    return host, hv


def outcome(host, hv):
    """Run both guests on, and return what `a` and `b` became."""
    host.machine.run(until=host.machine.now_ns + LATER_NS)
    a, b = hv.get("a"), hv.get("b")
    return (
        a.console_output,
        snapshots.state_hash(a.kernel, a.window, a._console),
        a.kernel.mm.faults,
        a.domain.used_ns,
        b.console_output,
        b.domain.used_ns,
    )


@pytest.mark.parametrize("after_ns", [1_000_000, 3_300_000, 12_345_678, 40_000_000])
def test_a_restored_guest_continues_exactly_as_the_one_left_running(tmp_path, after_ns):
    host, hv = busy_world()
    host.machine.run(until=host.machine.now_ns + after_ns)
    hv.get("a").snapshot(str(tmp_path / "left.snap"))
    left_running = outcome(host, hv)
    host.machine.shutdown()

    host, hv = busy_world()
    host.machine.run(until=host.machine.now_ns + after_ns)
    info = hv.get("a").snapshot(str(tmp_path / "a.snap"))
    hv.destroy("a")
    restored = hv.restore(info.path)
    assert restored.state is VmState.RUNNING and restored.kernel.machine is host.machine
    assert outcome(host, hv) == left_running
    assert "memhog: 100 pages written and read back, 0 corrupt" in left_running[0]
    assert "gpu-loop: kernel 39 done at" in left_running[0]
    assert "gpu-loop: kernel 39 done at" in left_running[4]
    host.machine.shutdown()


def test_a_snapshot_reports_where_and_how_big_and_leaves_the_vm_as_it_was(host, tmp_path):
    vm = host.hv.create("g").start()
    host.machine.run(until=host.machine.now_ns + 2_000_000)
    info = vm.snapshot(str(tmp_path / "g.snap"))
    assert info.vm == "g" and info.at_ns >= 2_000_000 and info.inputs > 0
    assert info.bytes == (tmp_path / "g.snap").stat().st_size
    assert vm.state is VmState.RUNNING
    vm.pause()
    vm.snapshot(str(tmp_path / "g2.snap"))
    assert vm.state is VmState.PAUSED


def test_a_paused_snapshot_is_restored_paused(host, tmp_path):
    vm = host.hv.create("g").start()
    vm.pause()
    vm.snapshot(str(tmp_path / "g.snap"))
    host.hv.destroy("g")
    again = host.hv.restore(str(tmp_path / "g.snap"))
    assert again.state is VmState.PAUSED
    again.resume()
    assert "hello" in again.shell("run echo hello")


def test_restore_refuses_a_name_in_use_and_a_file_from_the_future(host, tmp_path):
    vm = host.hv.create("g").start()
    vm.snapshot(str(tmp_path / "g.snap"))
    with pytest.raises(SnapshotError, match="already a vm named 'g'"):
        host.hv.restore(str(tmp_path / "g.snap"))
    other = Kernel(seed=0, name="other").boot()
    try:
        with pytest.raises(SnapshotError, match="in this machine's future"):
            Hypervisor(other).restore(str(tmp_path / "g.snap"))
    finally:
        other.machine.shutdown()


def test_the_host_shell_snapshots_stops_and_restores_a_guest(host, tmp_path):
    path = tmp_path / "w.snap"
    host.shell("vm create w")
    host.shell("vm start w")
    host.shell("vm console w run sleep 5 &")
    out = host.shell(f"vm snapshot w {path}")
    assert out.startswith("vm: w: saved to ") and "inputs" in out
    assert "w: stopped" in host.shell("vm stop w")
    assert "w: restored from" in host.shell(f"vm restore {path}")
    assert "hi there" in host.shell("vm console w run echo hi there")
    assert "running" in host.shell("vm list")
    assert "vm: " in host.shell(f"vm restore {tmp_path / 'none.snap'}")


# -- files that are not good snapshots ---------------------------------------------------------


def refused(host, path) -> str:
    with pytest.raises(SnapshotError) as err:
        host.hv.restore(str(path))
    message = str(err.value)
    assert "\n" not in message and "g" not in host.hv.vms
    return message


def test_a_truncated_or_foreign_file_is_refused_in_one_line(saved, tmp_path):
    host, path = saved
    data = path.read_bytes()
    (tmp_path / "short").write_bytes(data[:-10])
    assert "is truncated" in refused(host, tmp_path / "short")
    (tmp_path / "text").write_bytes(b"#!/bin/sh\necho not a snapshot\n")
    assert "is not a malvos snapshot" in refused(host, tmp_path / "text")
    (tmp_path / "empty").write_bytes(b"")
    assert "is not a malvos snapshot" in refused(host, tmp_path / "empty")
    future = bytearray(data)
    future[8:10] = struct.pack("<H", 99)
    (tmp_path / "v99").write_bytes(bytes(future))
    assert "format version 99; this malvos reads version 2" in refused(host, tmp_path / "v99")
    assert "cannot read" in refused(host, tmp_path / "missing")


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_any_corrupted_byte_is_refused(saved, tmp_path, data):
    host, path = saved
    blob = bytearray(path.read_bytes())
    at = data.draw(st.integers(0, len(blob) - 1))
    blob[at] ^= data.draw(st.integers(1, 255))
    (tmp_path / "bad").write_bytes(bytes(blob))
    refused(host, tmp_path / "bad")


# (A forgery below is sealed with the host's own key: what a holder of the key,
# or a bug, could write.  Even such a file is checked value by value.)


def test_a_forged_journal_is_caught_by_the_replay(saved):
    host, path = saved

    def cut_last_grant(image):
        grants = [e for e in image["journal"] if e[4] == "grant"]
        grants[-1][5][1] = grants[-1][0] + 1  # the guest's last grant, cut to 1 ns

    forge(path, cut_last_grant)
    assert "the replay diverged" in refused(host, path)


def test_a_forged_state_hash_is_caught(saved):
    host, path = saved
    forge(path, lambda image: image.__setitem__("state_hash", "0" * 64))
    assert "state hash differs" in refused(host, path)


def test_a_malformed_image_is_refused(saved):
    host, path = saved
    original = path.read_bytes()
    forge(path, lambda image: image.__setitem__("journal", [[1, 2]]))
    assert "malformed snapshot: journal[0]: not a journal entry" in refused(host, path)
    path.write_bytes(original)
    forge(path, lambda image: image.pop("ticks"))
    assert "the key 'ticks' is missing" in refused(host, path)
    reseal(path, [1, 2, 3])
    assert "malformed snapshot: the image: expected a map, got a list" in refused(host, path)


def test_a_vm_that_is_not_running_or_paused_cannot_be_snapshotted(host, tmp_path):
    vm = host.hv.create("g")
    with pytest.raises(VmError, match="it is created"):
        vm.snapshot(str(tmp_path / "g.snap"))


def test_a_guest_given_a_program_from_outside_cannot_be_snapshotted(host, tmp_path):
    vm = host.hv.create("g").start()

    def stray(proc):
        yield from ()

    vm.kernel.spawn(stray)
    with pytest.raises(VmError, match="'stray' was started from outside it"):
        vm.snapshot(str(tmp_path / "g.snap"))
    assert vm.state is VmState.RUNNING and not (tmp_path / "g.snap").exists()


def test_a_guest_of_a_realtime_host_is_snapshotted_and_restored(tmp_path):
    host = Kernel(seed=0, name="host", gpu=None, realtime=True).boot()
    try:
        hv = Hypervisor(host)
        vm = hv.create("rt").start()
        assert vm.kernel.config.realtime
        vm.snapshot(str(tmp_path / "rt.snap"))
        hv.destroy("rt")
        again = hv.restore(str(tmp_path / "rt.snap"))
        assert again.kernel.config.realtime and again.kernel.machine is host.machine
        assert again.shell("run echo back") == "back\n"
    finally:
        host.machine.shutdown()


def _write_outside_the_window(image) -> None:
    """A journaled host write far past the window, at the place (and with the
    digest) of the last input that came from the host's events."""
    last = next(e for e in reversed(image["journal"]) if not e[3] and e[4] != "hc")
    image["journal"].insert(
        image["journal"].index(last) + 1, [*last[:4], "dma", [1 << 40, b"x"], last[6]]
    )


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda im: im["vm"].__setitem__("name", "../etc"), "a vm name is letters"),
        (lambda im: im["vm"].__setitem__("allowed_modules", ["no_such_module"]), "allowed_modules"),
        (lambda im: im["vm"].__setitem__("gpu_share", 101), "vm.gpu_share: 101 is outside"),
        (lambda im: im["vm"].__setitem__("weight", "heavy"), "vm.weight: expected an int"),
        (lambda im: im["domain"].__setitem__("waiting", [["0", 1]]), "domain.waiting[0][0]"),
        (lambda im: im["domain"].__setitem__("credit_ns", 1.5), "domain.credit_ns: expected"),
        (lambda im: im.__setitem__("pending", [[1, "x"]]), "pending[0][1]: expected an int"),
        (lambda im: im.__setitem__("queues", {"0": {"idx": -1, "state": {}}}), "queues['0'].idx"),
        (lambda im: im.__setitem__("balloon_given", 10**9), "balloon_given: 1000000000 is out"),
        (_write_outside_the_window, "1099511627776 is outside 0..1048576"),
    ],
)
def test_host_side_state_from_a_forged_snapshot_is_checked_before_it_is_used(saved, change, words):
    host, path = saved
    forge(path, change)
    assert words in refused(host, path)
    assert not host.halted and "g" not in host.hv.vms
