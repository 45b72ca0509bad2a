"""GPU programs and the `gpu` shell command (an nvidia-smi-like view)."""

from __future__ import annotations

from kernel.traps import GetTime
from userland.gpulib import gpu_request, open_context
from userland.lib import UsageError, int_arg, println, program

BAR = "·▁▂▃▄▅▆▇█"  # an idle TPC is a dot, so an idle GPU shows no empty field


@program
def gpu_burn(proc):
    """gpu-burn [SECONDS] [MEM_MB]: keep every TPC busy for SECONDS of virtual time."""
    seconds = int_arg(proc.argv, 0, "seconds", default=1, minimum=1)
    mem_mb = int_arg(proc.argv, 1, "memory in MB", default=1024, minimum=0)
    ctx = yield from open_context(proc)
    if mem_mb:
        yield from ctx.alloc(mem_mb << 20)
    start = yield GetTime()
    deadline = start + seconds * 1_000_000_000
    kernels = 0
    # A GEMM-like kernel, mostly compute-bound: 864 blocks of 500 µs, 2 per TPC
    # (8 waves on an A100's 54 TPCs).
    from userland.gpulib import LaunchSpec  # the driver's; not imported by the shell

    spec = LaunchSpec("burn_gemm", grid_blocks=864, block_us=500.0, mem_fraction=0.2)
    now = start
    while now < deadline:
        for _ in range(4):
            yield from ctx.launch(spec)
            kernels += 1
        now = yield from ctx.sync()
    yield from ctx.destroy()
    yield from println(proc, f"gpu-burn: {kernels} kernels in {(now - start) / 1e9:.3f} s")


@program
def gpu_loop(proc):
    """gpu-loop KERNELS [BLOCKS] [BLOCK_US]: launch and wait for KERNELS kernels
    one at a time (BLOCKS blocks of BLOCK_US, default 216 x 300 us), printing
    when each completed."""
    kernels = int_arg(proc.argv, 0, "kernels", minimum=1)
    blocks = int_arg(proc.argv, 1, "blocks", default=216, minimum=1)
    block_us = int_arg(proc.argv, 2, "block microseconds", default=300, minimum=1)
    from userland.gpulib import LaunchSpec

    ctx = yield from open_context(proc)
    spec = LaunchSpec("loop_kernel", grid_blocks=blocks, block_us=float(block_us))
    for i in range(kernels):
        done = yield from ctx.sync((yield from ctx.launch(spec)))
        yield from println(proc, f"gpu-loop: kernel {i} done at {done / 1e9:.9f} s")
    yield from ctx.destroy()


def cmd_gpu(sh, args):
    """gpu: the GPU's sharing policy, clock, power, energy, contexts and TPC occupancy"""
    if args:
        raise UsageError("usage: gpu")
    cap = sh.proc.caps.get("gpu")
    if cap is None:
        raise UsageError("this machine has no GPU")
    view = (yield from gpu_request(cap, "stats")).msg.payload
    yield from println(sh.proc, format_view(view))


def format_view(view) -> str:
    s = view.stats
    gb = 1e9
    width = 66
    rule = "+" + "-" * width + "+"
    lines = [
        rule,
        _row(f"malvos vGPU  {view.preset}  {view.n_tpcs} TPCs", f"t={s.now_ns / 1e9:.6f} s", width),
        *[_row(line, "", width) for line in _policy_lines(view, width - 4)],
        _row(f"clock {s.clock_mhz} MHz   power {s.power_w:7.1f} W", f"energy {s.energy_j:10.3f} J", width),
        _row(f"busy TPCs {s.busy_tpcs:>3}/{view.n_tpcs}   blocks running {s.running_blocks}",
             f"memory {s.memory_used_bytes / gb:.2f}/{view.memory_bytes / gb:.0f} GB", width),
        rule,
        _row(" ctx  owner     memory (MiB)   queued   done   TPCs  share", "", width),
    ]  # fmt: skip
    for c in view.contexts:
        share = f"{c.share}%" if c.share else "-"
        lines.append(_row(
            f"{c.ctx:>4}  {c.owner:<8} {c.memory_bytes / (1 << 20):>12.1f}"
            f"   {c.kernels_queued:>6}   {c.kernels_done:>4}   {c.tpcs:>4}  {share:>5}", "", width,
        ))  # fmt: skip
    if not view.contexts:
        lines.append(_row("  no contexts", "", width))
    lines.append(rule)
    occ = "".join(BAR[min(8, round(o * 8))] for o in s.tpc_occupancy)
    lines.append(f"TPC occupancy |{occ}|" + ("" if s.busy_tpcs else " idle"))
    return "\n".join(lines)


def _policy_lines(view, width: int) -> list[str]:
    """The sharing policy and its figures, wrapped to the box."""
    words = [f"sharing {view.policy}"]
    for key, value in (view.policy_report or {}).items():
        if isinstance(value, float):
            value = f"{value:.3g}"
        elif isinstance(value, (list, tuple)):
            value = ",".join(str(v) for v in value)
        words.append(f"{key}={value}")
    lines = [words[0]]
    for word in words[1:]:
        if len(lines[-1]) + 1 + len(word) > width:
            lines.append("  " + word)
        else:
            lines[-1] += " " + word
    return lines


def _row(left: str, right: str, width: int) -> str:
    return f"| {left}{' ' * max(1, width - 2 - len(left) - len(right))}{right} |"


COMMANDS = {"gpu": cmd_gpu}
