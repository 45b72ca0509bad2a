"""The booted vGPU driver runs the sharing policy the attached GPU advisor selects."""

from __future__ import annotations

import re

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from drivers.vgpu.engine import Engine
from drivers.vgpu.scheduler import StreamScheduler
from drivers.vgpu.server import LaunchSpec
from drivers.vgpu.sharing.compiled import AT_STREAM
from drivers.vgpu.work import KernelDesc
from kernel import Kernel, Message
from kernel.traps import Call, Sleep
from tests.test_gpu_driver import run_program
from userland.gpulib import open_context

WAVE = 108  # blocks that fill the A100 preset once (54 TPCs, 2 per TPC)


def stats(proc):
    return (yield Call(proc.caps["gpu"], Message("stats"))).msg.payload


def contexts_busy(n_contexts: int, kernels: int = 4):
    """A program that keeps `n_contexts` contexts busy with wide kernels,
    and records each context's TPCs and the sharing policy midway."""

    def program(proc, log):
        ctxs = []
        for _ in range(n_contexts):
            ctxs.append((yield from open_context(proc)))
        # Every context's stream exists before the work starts: the policy
        # re-divides the device when a stream appears, and atoms in flight
        # keep the TPCs they were launched on.
        for ctx in ctxs:
            yield from ctx.launch(LaunchSpec("tiny", grid_blocks=1, block_us=1.0))
            yield from ctx.sync()
        for ctx in ctxs:
            for _ in range(kernels):
                yield from ctx.launch(LaunchSpec("wide", grid_blocks=4 * WAVE, block_us=200.0))
        yield Sleep(300)
        view = yield from stats(proc)
        mine = [c.ctx for c in ctxs]
        log.append((view.policy, [c.tpcs for c in view.contexts if c.ctx in mine]))
        for ctx in ctxs:
            yield from ctx.sync()
            yield from ctx.destroy()

    return program


def test_mig_keeps_each_program_context_on_its_own_partition(malv_kernel: Kernel):
    k = malv_kernel
    assert "attached" in k.shell("insmod gpu_mig")
    [(policy, tpcs)] = run_program(k, contexts_busy(3))
    assert policy == "mig"
    # Seven slices of 7 TPCs split 3 ways by largest remainder: 3 + 2 + 2 slices.
    assert sorted(tpcs) == [14, 14, 21]
    assert "sharing mig" in k.shell("gpu")


def test_rmmod_gives_the_programs_the_whole_device_again(malv_kernel: Kernel):
    k = malv_kernel
    k.shell("insmod gpu_mps_limit")
    [(policy, tpcs)] = run_program(k, contexts_busy(2))
    assert policy == "mps-limit" and tpcs == [27, 27]
    k.shell("rmmod gpu_mps_limit")
    [(policy, tpcs)] = run_program(k, contexts_busy(2))
    assert policy == "default" and tpcs == [54, 54]


def test_lithos_lends_an_idle_contexts_tpcs_to_a_busy_one(malv_kernel: Kernel):
    k = malv_kernel
    k.shell("insmod gpu_lithos")

    def program(proc, log):
        busy = yield from open_context(proc)
        idle = yield from open_context(proc)
        # The idle context owns half the TPCs once it has a stream.
        yield from idle.launch(LaunchSpec("tiny", grid_blocks=1, block_us=1.0))
        yield from idle.sync()
        for _ in range(20):
            yield from busy.launch(LaunchSpec("wide", grid_blocks=8 * WAVE, block_us=100.0))
        yield Sleep(2_000)
        view = yield from stats(proc)
        log.append((view.policy, view.stats.busy_tpcs))
        yield from busy.sync()

    [(policy, busy_tpcs)] = run_program(k, program)
    assert policy == "lithos"
    assert busy_tpcs > 27  # its own quota and stolen TPCs of the idle context


def latency_of_a_priority_kernel_behind_best_effort_work(k: Kernel) -> int:
    def program(proc, log):
        be = yield from open_context(proc)
        hp = yield from open_context(proc)
        # Best effort: a long kernel of many waves, launched first.
        yield from be.launch(LaunchSpec("be", grid_blocks=20 * WAVE, block_us=100.0))
        yield Sleep(150)
        t0 = yield from hp.sync()
        kernel = yield from hp.launch(LaunchSpec("hp", grid_blocks=WAVE, block_us=50.0, priority=1))
        log.append((yield from hp.sync(kernel)) - t0)
        for ctx in (be, hp):
            yield from ctx.sync()
            yield from ctx.destroy()

    [latency] = run_program(k, program)
    return latency


def test_switching_from_mps_to_priority_while_running_lets_hp_work_pass_pending_be_blocks(
    malv_kernel: Kernel,
):
    k = malv_kernel
    # The default honours the priority a program gives its kernels, as CUDA
    # stream priorities do: the HP kernel waits only for the resident wave.
    assert latency_of_a_priority_kernel_behind_best_effort_work(k) < 300_000
    # MPS serves first launched, first served: HP waits behind the rest of
    # the BE grid (~1.9 ms) ...
    k.shell("insmod gpu_mps")
    assert latency_of_a_priority_kernel_behind_best_effort_work(k) > 1_500_000
    # ... and, without a reboot, priority dispatches HP's blocks first again.
    k.shell("rmmod gpu_mps")
    k.shell("insmod gpu_priority")
    assert latency_of_a_priority_kernel_behind_best_effort_work(k) < 300_000


def test_a_policy_the_driver_cannot_run_ejects_its_advisor_and_work_goes_on(
    malv_kernel: Kernel,
):
    k = malv_kernel
    k.shell("insmod gpu_mig")
    [(policy, tpcs)] = run_program(k, contexts_busy(8, kernels=1))
    assert policy == "default" and tpcs == [54] * 8  # MIG has 7 instances at most
    info = k.shell("modinfo gpu_mig")
    assert re.search(r"invalid", info) and "7 instances" in info
    assert "gpu_mig" not in k.shell("lsmod") or "ejected" in k.shell("lsmod")


def test_bad_policy_parameters_eject_the_advisor(malv_kernel: Kernel):
    k = malv_kernel
    k.shell("insmod gpu_timeslice slice_us=0")
    [(policy, _)] = run_program(k, contexts_busy(1, kernels=1))
    assert policy == "default"
    assert "slice must be positive" in k.shell("modinfo gpu_timeslice")


def test_a_kernel_run_to_completion_handles_every_completion_on_the_way():
    # Kernel-space inference needs its batch's result at once: the scheduler
    # runs the device until that kernel is done, and the programs' atoms that
    # complete meanwhile are handled in order (their next kernels start).
    engine = Engine("a100", dispatch_order="launch")
    scheduler = StreamScheduler(engine, lambda ctx: None)
    program, inference = engine.create_context(), engine.create_context()
    spec = LaunchSpec("k", grid_blocks=WAVE, block_us=100.0)
    ids = []
    for _ in range(2):
        desc = KernelDesc(name="k", grid_blocks=WAVE, blocks_per_tpc=2, block_duration_ns=100_000)
        ids.append(engine.add_kernel(desc))
        scheduler.submit(program, 0, ids[-1], desc, spec)
    batch = KernelDesc(name="mlp", grid_blocks=WAVE, blocks_per_tpc=2, block_duration_ns=50_000)
    batch_id = engine.add_kernel(batch)
    scheduler.submit(inference, 0, batch_id, batch, LaunchSpec("mlp", WAVE, 50.0))
    done_ns = scheduler.run_until_done(batch_id)
    # Launched behind the first program kernel, ahead of the second.
    assert done_ns == 150_000 == scheduler.now_ns == engine.now_ns
    assert engine.kernel_done_ns(ids[0]) == 100_000 and scheduler.done == {program: 1, inference: 1}
    assert not scheduler.context_idle(program)
    scheduler.catch_up(1_000_000)
    assert engine.kernel_done_ns(ids[1]) == 250_000 and scheduler.context_idle(program)


def booted_driver(k: Kernel):
    """The vGPU driver server's state (its task's `driver`)."""
    task = next(t for t in k.tasks.values() if t.name == "vgpu")
    return task.gen.gi_frame.f_locals["driver"]


@pytest.mark.parametrize("module", [None, "gpu_timeslice"])
def test_the_driver_is_the_only_owner_of_its_engine(malv_kernel: Kernel, module):
    """Kernel-space inference beside a program: only the scheduler's loop
    runs the engine (nothing calls the engine's own `advance`, `run_batch`
    or `launch`), and each batch's kernel is submitted to the scheduler, for
    the policy in charge, as the program's are."""
    import inspect

    import numpy as np

    k = malv_kernel
    if module is not None:
        assert "attached" in k.shell(f"insmod {module}")
    driver = booted_driver(k)
    engine = driver.engine
    callers: set[str] = set()  # who runs the engine: its own methods, or the loop

    def spy(obj, name):
        method = getattr(obj, name)

        def wrapped(*args, _method=method, **kwargs):
            caller = inspect.currentframe().f_back
            owner = caller.f_locals.get("self")
            callers.add(f"{type(owner).__name__}.{caller.f_code.co_name} -> {name}")
            return _method(*args, **kwargs)

        setattr(obj, name, wrapped)

    for name in ("advance", "run_batch", "launch"):
        spy(engine, name)
    service = k.mlaas.inference
    backend = service.backends["vgpu"]
    model = service.model("big", (64, 512, 512, 8))
    rows = max(service.policy.crossover_rows(model) or 1, 64)
    requests = []

    def infer(_):
        requests.append(service.submit(model, np.ones((rows, 64), np.float32)))
        service.flush(model)

    for i in range(1, 6):
        k.loop.call_later(i * 150_000, infer, owner=k)
    scheduler = driver.scheduler
    spy(scheduler.loop, "advance")
    submitted: list[int] = []  # the context of each submission (a kernel or a graph)
    for name in ("submit", "submit_graph"):

        def spied(ctx, *args, _submit=getattr(scheduler, name), **kwargs):
            submitted.append(ctx)
            return _submit(ctx, *args, **kwargs)

        setattr(scheduler, name, spied)

    def program(proc, log):
        ctx = yield from open_context(proc)
        for _ in range(8):  # a third of the TPCs: not so busy that inference avoids it
            yield from ctx.launch(LaunchSpec("narrow", grid_blocks=18, block_us=100.0))
        log.append((yield from ctx.sync()))
        log.append((yield from stats(proc)).policy)
        yield from ctx.destroy()

    [done_ns, policy] = run_program(k, program)
    assert policy == ("default" if module is None else "timeslice")
    assert len(requests) == 5 and all(r.backend == "vgpu" for r in requests)
    assert backend.batches == 5 and scheduler.done[backend.ctx] == 5
    assert submitted.count(backend.ctx) == 5 and len(set(submitted)) == 2
    assert callers and all(c.startswith("StreamScheduler.") for c in callers), callers
    assert all(c.endswith("-> advance") for c in callers), callers
    assert done_ns > 8 * 100_000


@pytest.mark.parametrize(
    "module", ["gpu_timeslice", "gpu_tgs", "gpu_reef", "gpu_orion", "gpu_lithos"]
)
def test_every_policy_serves_programs_to_completion(malv_kernel: Kernel, module: str):
    k = malv_kernel
    assert "attached" in k.shell(f"insmod {module}")

    def program(proc, log):
        hp = yield from open_context(proc)
        be = yield from open_context(proc)
        for i in range(6):
            yield from be.launch(LaunchSpec(f"be{i}", grid_blocks=3 * WAVE, block_us=80.0))
            yield from hp.launch(
                LaunchSpec(f"hp{i}", grid_blocks=WAVE // 2, block_us=40.0, priority=1)
            )
        yield from hp.sync()
        yield from be.sync()
        view = yield from stats(proc)
        log.append((view.policy, [c.kernels_done for c in view.contexts if c.owner == "program"]))

    [(policy, done)] = run_program(k, program)
    assert policy == module.removeprefix("gpu_")
    assert done == [6, 6]


@pytest.mark.parametrize(
    "value, message", [('"nope"', "unknown policy 'nope'"), ("5", "not a policy name")]
)
def test_an_advisor_naming_no_real_policy_is_ejected(
    malv_kernel: Kernel, tmp_path, value: str, message: str
):
    module = tmp_path / "gpu_bogus.py"
    module.write_text(
        "from kernel.mlaas import GpuAdvisor\n\n\n"
        "class Bogus(GpuAdvisor):\n"
        '    name = "gpu_bogus"\n'
        f"    sharing_policy = {value}\n"
    )
    k = malv_kernel
    assert "attached" in k.shell(f"insmod {module}")
    [(policy, _)] = run_program(k, contexts_busy(1, kernels=1))
    assert policy == "default"
    assert message in k.shell("modinfo gpu_bogus")


def test_mig_instances_take_a_second_to_create_in_the_booted_driver(malv_kernel: Kernel):
    k = malv_kernel
    k.shell("insmod gpu_mig")

    def program(proc, log):
        ctx = yield from open_context(proc)
        t0 = yield from ctx.sync()
        kernel = yield from ctx.launch(LaunchSpec("k", grid_blocks=WAVE, block_us=10.0))
        # Its stream is new: the driver lays out a MIG instance for it, which
        # drains the device and keeps it down for about a second.
        log.append((yield from ctx.sync(kernel)) - t0)
        t1 = yield from ctx.sync()
        kernel = yield from ctx.launch(LaunchSpec("k", grid_blocks=WAVE, block_us=10.0))
        log.append((yield from ctx.sync(kernel)) - t1)  # same layout: no downtime
        yield from ctx.destroy()

    first, second = run_program(k, program)
    assert 1_000_000_000 <= first < 1_100_000_000
    assert second < 1_000_000


def test_switching_away_from_lithos_dvfs_gives_back_the_highest_clock(malv_kernel: Kernel):
    k = malv_kernel
    k.shell("insmod gpu_lithos dvfs=True")
    k.shell("run gpu-burn 1 &")
    k.shell("run sleep 300")  # DVFS measures the kernels at f_max, then lowers the clock
    lowered = int(re.search(r"clock (\d+) MHz", k.shell("gpu")).group(1))
    assert lowered < 1410
    k.shell("rmmod gpu_lithos")
    k.shell("run sleep 100")  # a clock switch takes tens of ms
    assert "clock 1410 MHz" in k.shell("gpu")


def test_gpu_shows_the_policy_in_charge_and_its_figures(malv_kernel: Kernel):
    k = malv_kernel
    k.shell("insmod gpu_lithos")
    k.shell("run gpu-burn 1 &")
    k.shell("run gpu-burn 1 &")
    k.shell("run sleep 200")
    view = k.shell("gpu")
    assert re.search(r"^\| sharing lithos quota_tpcs=27,27 ", view, re.M)
    assert re.search(r"stolen_atoms=\d+", view)
    assert all(len(line) == 68 for line in view.splitlines() if line.startswith(("|", "+")))


# -- a kernel that arrives behind another context's long kernel ---------------

#: Context B's long kernel: 40 waves of the a100 (4,320 blocks).
LONG_GRID = 40 * WAVE
#: Block lengths, in us: shorter than, as long as and longer than A's 600 us slice.
BLOCK_US = [100, 600, 2_000, 5_000]
#: Shares of contexts A and B, and B's time slice under them (a stream's
#: share of two 500 us slices): 60/40 as two VMs', or none (equal).
SHARES = {"60-40": ((0.6, 0.4), 400_000), "equal": ((None, None), 500_000)}


def first_block_wait_ns(policy: str, block_us: int, shares, arrival_ns: int) -> int | None:
    """Context B launches LONG_GRID blocks of `block_us`; at `arrival_ns`,
    context A, idle until then, launches one wave of such blocks.  How long
    A's first block waited (None: it had not started after 10 blocks)."""
    engine = Engine("a100", dispatch_order="launch", record_blocks=True)
    scheduler = StreamScheduler(engine, lambda ctx: None)
    scheduler.select(policy)
    a, b = engine.create_context(), engine.create_context()
    for ctx, share in zip((a, b), shares, strict=True):
        scheduler.set_share(ctx, share)
    block_ns = block_us * 1000
    for ctx, name, grid in ((b, "long", LONG_GRID), (a, "short", WAVE)):
        if ctx == a:
            scheduler.catch_up(arrival_ns)
        desc = KernelDesc(name=name, grid_blocks=grid, blocks_per_tpc=2, block_duration_ns=block_ns)
        spec = LaunchSpec(name, grid_blocks=grid, block_us=float(block_us))
        kernel = engine.add_kernel(desc)
        scheduler.submit(ctx, 0, kernel, desc, spec)
    scheduler.catch_up(arrival_ns + 10 * block_ns)
    # The engine keeps every atom (no `keep_history=False`), and so does the
    # scheduler's loop: A's atoms are those of A's stream.
    atoms = scheduler.loop.dev.atoms
    (a_stream,) = [s.index for s in scheduler.streams if s.ctx == a]
    starts = [r.start_ns for r in engine.block_log() if atoms[AT_STREAM, r.atom_id] == a_stream]
    return min(starts) - arrival_ns if starts else None


@pytest.mark.parametrize("shares", SHARES)
@pytest.mark.parametrize("block_us", BLOCK_US)
@given(arrival_us=st.integers(0, 12_000))
@example(arrival_us=11_000)  # the 60% context once waited 69 ms here (2 ms blocks)
@settings(max_examples=12, deadline=None)
def test_timeslice_switches_to_a_newly_arrived_kernel_at_the_next_block_boundary(
    block_us: int, shares: str, arrival_us: int
):
    split, b_slice_ns = SHARES[shares]
    wait = first_block_wait_ns("timeslice", block_us, split, arrival_us * 1000)
    # A's turn comes when B's slice ends, and B's blocks then running end
    # within one block: the device switches at thread-block boundaries.
    assert wait is not None and wait <= b_slice_ns + block_us * 1000


@pytest.mark.parametrize("shares", SHARES)
@pytest.mark.parametrize("block_us", BLOCK_US)
@given(arrival_us=st.integers(0, 12_000))
@example(arrival_us=1_400)
@settings(max_examples=12, deadline=None)
def test_lithos_gives_a_newly_arrived_kernel_its_tpcs_within_one_block(
    block_us: int, shares: str, arrival_us: int
):
    split, _ = SHARES[shares]
    wait = first_block_wait_ns("lithos", block_us, split, arrival_us * 1000)
    # A's TPCs are its own from its arrival: B's atoms launched on them
    # before (when they were unowned, or B's) give them up at the end of
    # the blocks running there, however many of B's blocks queue behind.
    assert wait is not None and wait <= block_us * 1000


def borrowers_latency_ns(block_us: int, gap_ns: int) -> int | None:
    """Contexts A (60%) and B (40%), idle; A launches 216 blocks of 200 us,
    and B, `gap_ns` later, LONG_GRID blocks of `block_us`.  How long A's
    kernel took (None: not done after 10 of B's blocks)."""
    engine = Engine("a100", dispatch_order="launch")
    scheduler = StreamScheduler(engine, lambda ctx: None)
    scheduler.select("lithos")
    a, b = engine.create_context(), engine.create_context()
    for ctx, share in ((a, 0.6), (b, 0.4)):
        scheduler.set_share(ctx, share)
    tiny = KernelDesc(name="tiny", grid_blocks=1, blocks_per_tpc=2, block_duration_ns=1_000)
    for ctx in (a, b):  # each context's stream exists, and is idle
        scheduler.submit(ctx, 0, engine.add_kernel(tiny), tiny, LaunchSpec("tiny", 1, 1.0))
    start_ns = 1_000_000
    scheduler.catch_up(start_ns)
    ids = {}
    for ctx, name, grid, us in ((a, "small", 216, 200), (b, "long", LONG_GRID, block_us)):
        if ctx == b:
            scheduler.catch_up(start_ns + gap_ns)
        desc = KernelDesc(
            name=name, grid_blocks=grid, blocks_per_tpc=2, block_duration_ns=us * 1000
        )
        ids[ctx] = engine.add_kernel(desc)
        scheduler.submit(ctx, 0, ids[ctx], desc, LaunchSpec(name, grid, float(us)))
    scheduler.catch_up(start_ns + gap_ns + 10 * block_us * 1000)
    done_ns = engine.kernel_done_ns(ids[a])
    return None if done_ns is None else done_ns - start_ns


@pytest.mark.parametrize("block_us", BLOCK_US)
@given(gap_us=st.integers(0, 400))
@example(gap_us=2)  # A waited for the whole of B's kernel here (196.6 ms, 2 ms blocks)
@settings(max_examples=10, deadline=None)
def test_lithos_starts_a_borrowers_stolen_blocks_after_one_atom_of_the_owner(
    block_us: int, gap_us: int
):
    # A's kernel runs on its 32 TPCs and, stolen, on B's 22 idle ones: two
    # waves, 400 us, alone.  B's kernel comes back to its TPCs: its first
    # atom goes before A's stolen blocks that have not started, and they go
    # before the rest of B's kernel.  An atom of B's is 250-500 us of work,
    # or one block where a block is longer.
    latency_ns = borrowers_latency_ns(block_us, gap_us * 1000)
    assert latency_ns is not None and latency_ns <= 400_000 + max(block_us * 1000, 500_000)
