"""Guests with a vGPU share, for the GPU virtualization tests."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import attrs
import msgpack

from kernel import Kernel
from kernel.config import KernelConfig, ServerSpec
from kernel.hypervisor import Hypervisor
from kernel.hypervisor.hypercall import Hc
from kernel.hypervisor.virtqueue import Driver
from kernel.programs import ProgramTable
from kernel.traps import (
    BindNotification,
    GetTime,
    Hypercall,
    MapDevice,
    NewEndpoint,
    Recv,
    Sleep,
)
from userland.gpulib import GpuRequestFailed, LaunchSpec, gpu_request, open_context

#: A small GEMM-like kernel: 216 blocks of 200 µs, 2 per TPC (two waves on an A100).
SMALL = LaunchSpec("small_gemm", grid_blocks=216, block_us=200.0, mem_fraction=0.2)


def hv_host(advisor: str | None = None) -> Kernel:
    """A booted host with an a100 vGPU, a hypervisor (`host.hv`) and,
    if named, a GPU advisor inserted (`gpu_lithos`, ...)."""
    host = Kernel(seed=0, name="host", gpu="a100").boot()
    host.hv = Hypervisor(host)
    if advisor is not None:
        out = host.shell(f"insmod {advisor}")
        assert "error" not in out.lower(), out
    return host


def run_until(machine: Any, done: Callable[[], bool], limit_ns: int = 20_000_000_000) -> None:
    """Run every kernel on `machine` until `done()` (virtual time only)."""
    deadline = machine.now_ns + limit_ns
    while not done():
        assert machine.now_ns < deadline, "the guests' GPU work did not finish in time"
        machine.run(until=machine.now_ns + 1_000_000)


def spawn_gpu(vm: Any, program: Any, name: str = "work") -> int:
    """Start `program` in guest `vm` with the guest's `gpu` cap, as its shell would."""
    return int(vm.kernel.spawn(program, caps={"gpu": vm.kernel.servers["gpu"]}, name=name))


def gpu_work(results: list[dict[str, Any]], kernels: int, spec: LaunchSpec = SMALL):
    """A guest program: launch `kernels` of `spec` on a context of its own,
    sync, and note what the driver answered (virtual times)."""

    def program(proc):
        ctx = yield from open_context(proc)
        handle = yield from ctx.alloc(1 << 20)
        start = yield GetTime()
        ids = []
        for _ in range(kernels):
            ids.append((yield from ctx.launch(spec)))
        done = yield from ctx.sync()
        yield from ctx.destroy()
        results.append({"start": start, "done": done, "kernels": ids, "handle": handle})

    return program


def late_kernel(latencies: list[int], spec: LaunchSpec, after_us: int):
    """A guest program: open a context, sleep `after_us`, launch one kernel
    of `spec`, and note how long it took from launch to completion."""

    def program(proc):
        ctx = yield from open_context(proc)
        yield Sleep(after_us)
        start = yield GetTime()
        done = yield from ctx.sync((yield from ctx.launch(spec)))
        latencies.append(done - start)
        yield from ctx.destroy()

    return program


def naming(results: list[str], requests: list[tuple[str, Any]]):
    """A guest program: make each (label, payload) request on a context of
    its own and note the answer's label, or the driver's refusal."""

    def program(proc):
        ctx = yield from open_context(proc)
        for label, payload in requests:
            try:
                r = yield from gpu_request(ctx.cap, label, payload)
                results.append(r.msg.label)
            except GpuRequestFailed as exc:
                results.append(f"error: {exc}")

    return program


def idle_driver(proc):
    """A guest's `gpu` server that holds the GPU queue and does nothing with it,
    so a test can drive the queue by hand (`RawQueue`)."""
    yield Recv(proc.caps["endpoint"])


def raw_guest(host: Kernel, name: str, share: int, state: dict | None = None) -> Any:
    """A started guest whose GPU queue no front end drives; its back end
    starts from `state` when given (as a restored VM's does)."""
    programs = ProgramTable()
    programs.register("gpu-idle", idle_driver)
    config = KernelConfig(seed=len(host.hv.vms) + 1, gpu=None)
    servers = (*config.plan.servers, ServerSpec("gpu", "gpu-idle", devices=("gpuq",)))
    config = attrs.evolve(config, plan=attrs.evolve(config.plan, servers=servers))
    vm = host.hv.create(name, config, gpu_share=share, programs=programs)
    if state is not None:
        vm.queues[0].state.update(copy.deepcopy(state))
    return vm.start()


def ask(host: Kernel, raw: RawQueue, *requests: bytes) -> list[list[Any]]:
    """Publish `requests` on a raw guest's queue; the decoded answers."""
    raw.answers.clear()
    queue = raw.vm.kernel.devices["gpuq"]
    raw.vm.kernel.spawn(raw.publisher(list(requests)), caps={"gpuq": queue}, name="ask")
    run_until(host.machine, lambda: len(raw.answers) == len(requests))
    return [msgpack.unpackb(data[1:], raw=False) for data in raw.answers]


class RawQueue:
    """A guest's GPU queue driven by hand (no front end): what a hostile or
    broken guest driver can publish."""

    def __init__(self, vm: Any) -> None:
        self.vm = vm
        self.queue = vm.kernel.devices["gpuq"]
        self.ring = Driver(self.queue.memory, self.queue.layout)
        self.answers: list[bytes] = []

    def publisher(self, payloads: list[bytes]):
        """A guest task that publishes `payloads`, kicks, and collects the answers."""
        raw = self

        def program(proc):
            queue = yield MapDevice(proc.caps["gpuq"])
            wait_ep = yield NewEndpoint()  # nobody sends: only the interrupt wakes its Recv
            yield BindNotification(proc.caps["gpuq"])
            base, _ = queue.buffers
            heads = {}
            for i, data in enumerate(payloads):
                addr = base + 8192 * i
                queue.memory.write(addr, data[:4096])
                head = raw.ring.add([(addr, min(len(data), 4096) or 1)], [(addr + 4096, 4096)])
                heads[head] = addr + 4096
            yield Hypercall(int(Hc.GPU_SUBMIT), (queue.queue,))
            while heads:
                yield Recv(wait_ep)
                for head, length in raw.ring.used():
                    addr = heads.pop(head)
                    raw.answers.append(queue.memory.read(addr, length) if length else b"")

        return program
