"""`malv bench vm`: what a guest costs, beside a bare kernel in the same run.

* Guest boot: create a guest on a booted host, start it to its shell prompt,
  destroy it; the baseline is a bare kernel with the same devices (no GPU)
  booted to its prompt and shut down.  Medians of many, interleaved so that
  a noisy neighbour on the host hits both alike.
* Eight guests: the wall time to create and start eight guests on one host,
  and the check that all eight answer on their consoles.
* A virtqueue request: one request and its reply through a split ring
  (the guest's `Driver` to the host's `Device` and back), beside one IPC
  Call/ReplyRecv round trip between two tasks: the ring's own cost.
* A hypercall round trip: a guest task's `Hypercall(VM_INFO)`, trap,
  dispatch and journal, beside the IPC round trip.
* Snapshot and restore of a VM one virtual second old (busy with IPC and
  computing all along): the wall time of each, and the file's size.
* The virtqueue GPU launch path: launches per second (wall clock) of a
  program's loop of launch + sync of a one-block kernel in a guest (front
  end, GPU queue, host back end, host vGPU driver), as a ratio of the same
  program on a bare kernel's vGPU.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time

from bench.ipc import kernel_round_trips
from bench.report import Figure
from kernel import Kernel, KernelConfig, boot
from kernel.hypervisor import Hypervisor
from kernel.hypervisor.hypercall import Hc
from kernel.hypervisor.virtqueue import Device, Driver, GuestMemory, RingLayout
from kernel.traps import Compute, GetTime, Hypercall
from userland.gpulib import LaunchSpec, open_context

NO_GPU = KernelConfig(gpu=None)
TINY = LaunchSpec("tiny", grid_blocks=1, block_us=1.0)
# A layer of ResNet-50 inference at batch 4: 6.5 ms over 175 kernels, one wave of ~37 us each.
LAYER = LaunchSpec("resnet50_layer", grid_blocks=108, block_us=37.0)


def _bare_boot_ms() -> float:
    t0 = time.perf_counter()
    boot(NO_GPU).shutdown()
    return (time.perf_counter() - t0) * 1e3


def _guest_boot_ms(hv: Hypervisor, i: int) -> float:
    t0 = time.perf_counter()
    vm = hv.create(f"g{i}").start()
    vm.destroy()
    return (time.perf_counter() - t0) * 1e3


def _eight_guests_s() -> float:
    host = Kernel(seed=0, name="host").boot()
    hv = Hypervisor(host)
    try:
        t0 = time.perf_counter()
        vms = [hv.create(f"vm{i}").start() for i in range(8)]
        elapsed = time.perf_counter() - t0
        for vm in vms:
            if vm.shell("run echo up") != "up\n":
                raise RuntimeError(f"guest {vm.name} did not answer on its console")
        return elapsed
    finally:
        hv.shutdown()
        host.machine.shutdown()


def _ring_requests_per_s(n: int) -> float:
    memory = GuestMemory(64 * 1024)
    layout = RingLayout.packed(0, 256)
    device = Device(memory, layout, lambda req: req.data, lambda: None)
    driver = Driver(memory, layout, device.process)
    out, into = 32 * 1024, 40 * 1024
    memory.write(out, b"ping" * 16)
    t0 = time.perf_counter()
    for _ in range(n):
        driver.add([(out, 64)], [(into, 128)])
        driver.kick()
        driver.used()
    return n / (time.perf_counter() - t0)


def _launch_loop(n: int, out: list[tuple[float, float]], spec: LaunchSpec = TINY):
    """A program: `n` launch + sync of a one-block kernel; notes launches per
    wall-clock second and per virtual second (the context's creation not counted)."""

    def program(proc):
        ctx = yield from open_context(proc)
        yield Compute(1)
        t0 = time.perf_counter()
        v0 = yield GetTime()
        for _ in range(n):
            yield from ctx.sync((yield from ctx.launch(spec)))
        v1 = yield GetTime()
        out.append((n / (time.perf_counter() - t0), n / ((v1 - v0) / 1e9)))

    return program


def _launches_per_s(
    kernel: Kernel, machine_of: Kernel, n: int, spec: LaunchSpec = TINY
) -> tuple[float, float]:
    """Run the launch loop on `kernel` (with its `gpu` cap) until it is done."""
    out: list[tuple[float, float]] = []
    kernel.spawn(_launch_loop(n, out, spec), caps={"gpu": kernel.servers["gpu"]}, name="launches")
    machine = machine_of.machine
    while not out:
        machine.run(until=machine.now_ns + 10_000_000)
    return out[0]


def _gpu_launch_path(
    n: int, spec: LaunchSpec = TINY
) -> tuple[tuple[float, float], tuple[float, float]]:
    """(guest, bare) launches per wall-clock and per virtual second, each the
    better of two runs (the virtual rates are the same in both)."""
    bare = Kernel(seed=0, name="bare", gpu="a100").boot()
    host = Kernel(seed=0, name="host", gpu="a100").boot()
    hv = Hypervisor(host)
    try:
        vm = hv.create("vm1", gpu_share=50).start()
        rates = [(_launches_per_s(vm.kernel, host, n, spec), _launches_per_s(bare, bare, n, spec))
                 for _ in range(2)]  # fmt: skip
    finally:
        hv.shutdown()
        host.machine.shutdown()
        bare.machine.shutdown()
    return max(g for g, _ in rates), max(b for _, b in rates)  # by wall-clock rate


def _hypercalls_per_s(n: int) -> float:
    host = Kernel(seed=0, name="host").boot()
    hv = Hypervisor(host)
    try:
        vm = hv.create("hc").start()

        def caller(proc):
            for _ in range(n):
                yield Hypercall(Hc.VM_INFO, ())

        vm.kernel.spawn(caller, name="caller")
        t0 = time.perf_counter()
        host.machine.run()
        elapsed = time.perf_counter() - t0
        if [e.kind for e in vm.journal.entries].count("hc") != n:
            raise RuntimeError("the guest did not make every hypercall")
        return n / elapsed
    finally:
        hv.shutdown()
        host.machine.shutdown()


def _snapshot_and_restore(age_ns: int) -> tuple[float, float, int]:
    """Wall seconds to snapshot and to restore a VM `age_ns` old, and the file's bytes."""
    host = Kernel(seed=0, name="host").boot()
    hv = Hypervisor(host)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            vm = hv.create("old").start()
            vm.shell(f"run spin {age_ns // 1_000_000} &")
            vm.shell("run pingpong 100000 &")
            host.machine.run(until=age_ns)
            path = os.path.join(tmp, "old.snap")
            t0 = time.perf_counter()
            info = vm.snapshot(path)
            taken = time.perf_counter() - t0
            hv.destroy("old")
            t0 = time.perf_counter()
            hv.restore(path)
            restored = time.perf_counter() - t0
            return taken, restored, info.bytes
    finally:
        hv.shutdown()
        host.machine.shutdown()


def run(quick: bool = False) -> list[Figure]:
    n = 30 if quick else 100
    _bare_boot_ms()  # warm the program table and imports
    host = Kernel(seed=0, name="host").boot()
    hv = Hypervisor(host)
    try:
        _guest_boot_ms(hv, -1)
        bare, guest = [], []
        for i in range(n):  # interleaved
            bare.append(_bare_boot_ms())
            guest.append(_guest_boot_ms(hv, i))
    finally:
        hv.shutdown()
        host.machine.shutdown()
    eight_s = _eight_guests_s()
    ring = _ring_requests_per_s(2_000 if quick else 20_000)
    ipc = kernel_round_trips(2_000 if quick else 20_000)
    hypercalls = _hypercalls_per_s(2_000 if quick else 20_000)
    age_ns = 100_000_000 if quick else 1_000_000_000
    taken_s, restored_s, size = _snapshot_and_restore(age_ns)
    (guest_rate, guest_virtual), (bare_rate, bare_virtual) = _gpu_launch_path(
        300 if quick else 2_000
    )
    (_, guest_layer), (_, bare_layer) = _gpu_launch_path(100 if quick else 500, LAYER)
    return [
        Figure("vm.guest_boot_median", statistics.median(guest), "ms",
               baseline=statistics.median(bare), baseline_name="a bare kernel (no GPU)",
               target="<= 3x"),
        Figure("vm.eight_guests_start", eight_s * 1e3, "ms"),
        Figure("vm.virtqueue_request", 1e9 / ring, "ns/request",
               baseline=1e9 / ipc, baseline_name="an IPC Call/ReplyRecv round trip"),
        Figure("vm.hypercall_round_trip", 1e9 / hypercalls, "ns/call",
               baseline=1e9 / ipc, baseline_name="an IPC Call/ReplyRecv round trip",
               target="<= 2x"),
        Figure(f"vm.snapshot_{age_ns // 1_000_000}ms_old", taken_s * 1e3, "ms"),
        Figure(f"vm.restore_{age_ns // 1_000_000}ms_old", restored_s * 1e3, "ms"),
        Figure(f"vm.snapshot_{age_ns // 1_000_000}ms_old_size", size / 1024, "KiB"),
        Figure("vm.virtqueue_gpu_launch_virtual", guest_virtual, "launches/virtual s",
               baseline=bare_virtual, baseline_name="the same loop on a bare kernel's vGPU",
               target=">= 0.5x"),
        Figure("vm.virtqueue_gpu_launch_layer_virtual", guest_layer, "launches/virtual s",
               baseline=bare_layer, baseline_name="the same loop on a bare kernel's vGPU"),
        Figure("vm.virtqueue_gpu_launch", guest_rate, "launches/s",
               baseline=bare_rate, baseline_name="the same loop on a bare kernel's vGPU",
               target=">= 0.5x"),
    ]  # fmt: skip
