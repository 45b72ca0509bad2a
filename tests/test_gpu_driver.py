"""The vGPU driver server: contexts by capability, launches, sync, and `gpu`."""

from __future__ import annotations

import re

from drivers.vgpu.server import LaunchGraph, LaunchSpec
from kernel import Kernel, KernelConfig, Message
from kernel.config import BootPlan
from kernel.errors import CapabilityError
from kernel.traps import Call, GetTime, Sleep, Spawn, WaitPid
from userland.gpulib import open_context
from userland.lib import UsageError


def run_program(k: Kernel, program) -> list:
    """Run a program with the GPU cap init hands out; return what it recorded."""
    log: list = []
    shell = next(t for t in k.tasks.values() if t.name == "sh")
    caps = {"gpu": shell.cspace.lookup(shell.proc.caps["gpu"])}
    pid = k.spawn(lambda proc: program(proc, log), caps=caps, name="gputest")
    while pid in k.tasks:
        k.run(until=k.loop.now_ns + 100_000_000)
    return log


def test_gpu_burn_shows_the_gpu_busy_with_power_and_energy(malv_kernel: Kernel):
    k = malv_kernel
    assert re.match(r"\[1\] \d+", k.shell("run gpu-burn 1 &"))
    k.shell("run sleep 300")
    view = k.shell("gpu")
    assert re.search(r"busy TPCs\s+54/54", view)
    power = float(re.search(r"power\s+([\d.]+) W", view).group(1))
    energy = float(re.search(r"energy\s+([\d.]+) J", view).group(1))
    assert power > 300 and energy > 50
    assert "TPC occupancy |" + "█" * 54 + "|" in view


def test_kernels_of_one_stream_run_in_order_and_sync_returns_after_them(malv_kernel: Kernel):
    def program(proc, log):
        ctx = yield from open_context(proc)
        spec = LaunchSpec("k", grid_blocks=108, block_us=100.0)  # one wave: 100 µs
        t0 = yield from ctx.sync()
        first = yield from ctx.launch(spec)
        yield from ctx.launch(spec)
        log.append((yield from ctx.sync(first)) - t0)
        log.append((yield from ctx.sync()) - t0)

    first_done, all_done = run_program(malv_kernel, program)
    assert 100_000 <= first_done < 200_000
    assert all_done >= first_done + 100_000


def test_a_launch_graph_runs_its_kernels_in_order_and_a_bad_one_launches_nothing(
    malv_kernel: Kernel,
):
    def program(proc, log):
        ctx = yield from open_context(proc)
        spec = LaunchSpec("k", grid_blocks=108, block_us=100.0)  # one wave: 100 µs
        t0 = yield from ctx.sync()
        last = yield from ctx.launch_graph(LaunchGraph((spec, spec, spec)))
        log.append((yield from ctx.sync(last)) - t0)
        bad = LaunchGraph((spec, LaunchSpec("bad", grid_blocks=0, block_us=1.0)))
        try:
            yield from ctx.launch_graph(bad)
        except UsageError as exc:
            log.append(str(exc))
        log.append((yield Call(proc.caps["gpu"], Message("stats"))).msg.payload.stats)

    done, refused, stats = run_program(malv_kernel, program)
    assert done >= 300_000  # three waves, one after the other
    assert "grid_blocks" in refused
    assert stats.kernels_completed == 3  # the refused graph launched nothing


def test_a_program_cannot_touch_another_programs_context(malv_kernel: Kernel):
    def program(proc, log):
        ctx = yield from open_context(proc)
        # The plain gpu cap names no context; only the minted context cap does.
        r = yield Call(proc.caps["gpu"], Message("alloc", 4096))
        log.append(r.msg.payload)
        other = yield from open_context(proc)
        yield from ctx.alloc(1 << 20)
        view = yield Call(proc.caps["gpu"], Message("stats"))
        mine = {c.ctx: c.memory_bytes for c in view.msg.payload.contexts}
        log.append((mine[ctx.ctx], mine[other.ctx]))
        yield from ctx.destroy()
        try:
            yield Call(ctx.cap, Message("alloc", 4096))
        except CapabilityError:
            log.append("revoked")

    refused, usage, revoked = run_program(malv_kernel, program)
    assert "needs a context cap" in refused
    assert usage == (1 << 20, 0)
    assert revoked == "revoked"


def test_bad_requests_get_clear_errors_and_the_device_stays_consistent(malv_kernel: Kernel):
    def program(proc, log):
        ctx = yield from open_context(proc, quota_bytes=1 << 20)
        for label, payload in [
            ("launch", LaunchSpec("zero", grid_blocks=0, block_us=1.0)),
            ("launch", LaunchSpec("neg", grid_blocks=4, block_us=-1.0)),
            ("launch", LaunchSpec("nomask", grid_blocks=4, block_us=1.0, mask=0)),
            ("launch", "not a spec"),
            ("alloc", -5),
            ("alloc", 2 << 20),
            ("free", 12345),
            ("frobnicate", None),
        ]:
            r = yield Call(ctx.cap, Message(label, payload))
            log.append((label, r.msg.label))
        r = yield Call(proc.caps["gpu"], Message("set_clock", 5000))
        log.append(("set_clock", r.msg.label))
        log.append(("alloc-ok", (yield Call(ctx.cap, Message("alloc", 4096))).msg.label))

    answers = run_program(malv_kernel, program)
    assert all(label == "error" for _, label in answers[:-1]), answers
    assert answers[-1] == ("alloc-ok", "handle")


def test_gpu_command_without_a_gpu_says_so(malv_boot):
    k = malv_boot(gpu=None)
    assert k.shell("gpu") == "gpu: this machine has no GPU\n"
    assert "no GPU" in k.shell("run gpu-burn 1")


def test_headless_gpu_demo_through_the_cli():
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, "-m", "image.cli", "boot", "--headless", "--run", "run gpu-burn 1 &; run sleep 200; gpu; poweroff"],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert re.search(r"busy TPCs\s+54/54", r.stdout)
    assert re.search(r"power\s+[1-9][\d.]* W", r.stdout)


def test_spawned_programs_inherit_the_gpu_cap(malv_kernel: Kernel):
    seen = []

    def child(proc):
        seen.append(sorted(proc.caps))
        yield from ()

    def parent(proc, log):
        pid = yield Spawn(child, caps=proc.caps)
        yield WaitPid(pid)

    run_program(malv_kernel, parent)
    assert seen == [["gpu"]]


def test_the_driver_offers_the_vgpu_to_kernel_space_inference(malv_kernel: Kernel):
    backends = malv_kernel.mlaas.inference.backends
    assert set(backends) == {"cpu", "vgpu"}
    view = malv_kernel.shell("gpu")
    assert re.search(
        r"^\|\s+0\s+kernel\s+0\.0\s+0\s+0\s+0\s+-\s+\|$", view, re.M
    )  # inference's own context


def test_a_booted_kernel_without_a_gpu_infers_on_the_cpu_only(malv_boot):
    k = malv_boot(gpu=None)
    assert set(k.mlaas.inference.backends) == {"cpu"}


def test_launches_follow_the_attached_gpu_advisor_and_rmmod_restores_the_whole_device(
    malv_kernel: Kernel,
):
    k = malv_kernel
    assert "attached" in k.shell("insmod first_fit")

    def program(proc, log):
        mine = yield from open_context(proc)
        yield from open_context(proc)  # a second context: first_fit halves the device
        yield from mine.launch(LaunchSpec("wide", grid_blocks=20 * 108, block_us=1000.0))
        yield Sleep(500)
        view = (yield Call(proc.caps["gpu"], Message("stats"))).msg.payload
        log.append(view.stats.busy_tpcs)
        yield from mine.sync()

    assert run_program(k, program) == [27]
    k.shell("rmmod first_fit")
    assert run_program(k, program) == [54]


def test_the_clock_follows_the_attached_power_advisor(malv_kernel: Kernel):
    k = malv_kernel
    k.shell("insmod fixed_clock clock_mhz=900")
    k.shell("run gpu-burn 1 &")
    k.shell("run sleep 50")  # the governor asks while the device works; a switch takes 20 ms
    assert "clock 900 MHz" in k.shell("gpu")
    k.shell("rmmod fixed_clock")
    k.shell("insmod fixed_clock")  # 0: the highest clock
    k.shell("run sleep 50")
    assert "clock 1410 MHz" in k.shell("gpu")


def test_a_killed_programs_context_is_reclaimed_with_its_memory(malv_kernel: Kernel):
    k = malv_kernel
    k.shell("run gpu-burn 5 &")
    k.shell("run sleep 100")
    assert re.search(r"memory 1\.07/40 GB", k.shell("gpu"))
    pid = next(p for p, t in k.tasks.items() if t.name == "gpu-burn")
    k.shell(f"kill {pid}")
    k.shell("run sleep 50")  # its kernels in flight finish, then nobody holds the context
    view = k.shell("gpu")
    assert re.search(r"memory 0\.00/40 GB", view)
    assert not re.search(r"^\|\s+1\s+program", view, re.M)
    assert "context reclaimed" in k.shell("dmesg")


def test_a_driver_given_a_wake_period_answers_sync_late_with_the_exact_completion_time():
    plan = BootPlan.standard("a100", gpu_args=("500",))  # wake at most every 500 µs
    with Kernel(KernelConfig(plan=plan)) as k:
        k.boot()

        def program(proc, log):
            ctx = yield from open_context(proc)
            t0 = yield from ctx.sync()
            kernel = yield from ctx.launch(LaunchSpec("k", grid_blocks=108, block_us=100.0))
            done = yield from ctx.sync(kernel)
            log.append((done - t0, (yield GetTime()) - t0))

        [(done_ns, answered_ns)] = run_program(k, program)
    assert 100_000 <= done_ns < 150_000  # the device's own time: exact
    assert answered_ns >= 500_000  # the answer waited for the driver's next wake


def test_a_driver_given_a_bad_wake_period_says_so_and_the_kernel_goes_on():
    with Kernel(KernelConfig(plan=BootPlan.standard("a100", gpu_args=("soon",)))) as k:
        k.boot()
        assert "WAKE_US must be microseconds" in "\n".join(k.log.lines())
        assert "vgpu" not in [t.name for t in k.tasks.values()]  # the driver exited
