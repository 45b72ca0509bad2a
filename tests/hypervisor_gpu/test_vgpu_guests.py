"""A guest's GPU: the front end, the virtqueue, the host's back end and the shares."""

from __future__ import annotations

import re

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.vgpu import wire
from drivers.vgpu.server import LAUNCH_WIRE, LaunchSpec
from kernel.hypervisor.port import QUIESCE
from kernel.hypervisor.virtqueue import STATUS_OK
from tests.hypervisor_gpu.gpu_guests import (
    SMALL,
    RawQueue,
    ask,
    gpu_work,
    hv_host,
    naming,
    raw_guest,
    run_until,
    spawn_gpu,
)


def test_gpu_burn_runs_unchanged_in_a_guest(host):
    vm = host.hv.create("vm1", gpu_share=50).start()
    out = vm.shell("run gpu-burn 1 64")
    assert re.search(r"gpu-burn: (\d+) kernels in 1\.\d{3} s", out), out
    host_view = host.shell("gpu")
    assert re.search(r"\d+  vm1 .* 50%", host_view), host_view


def test_two_guests_share_the_gpu_and_the_host_shows_one_row_per_vm(host):
    vms = [host.hv.create(f"vm{i}", gpu_share=share).start() for i, share in ((1, 60), (2, 40))]
    results: list[list[dict]] = [[], []]
    for vm, out in zip(vms, results, strict=True):
        spawn_gpu(vm, gpu_work(out, kernels=4))
    run_until(host.machine, lambda: all(results))
    # Both ran at once: each started before the other finished.
    (a,), (b,) = results
    assert a["start"] < b["done"] and b["start"] < a["done"]
    view = host.shell("gpu")
    rows = [line for line in view.splitlines() if re.search(r"\bvm\d\b", line)]
    assert len(rows) == 2, view
    assert "vm1" in rows[0] and "60%" in rows[0] and "vm2" in rows[1] and "40%" in rows[1]
    assert all(re.search(r"\s4\s", row) for row in rows), view  # 4 kernels done each


def test_a_guests_gpu_view_shows_only_its_own_share(host):
    vm1 = host.hv.create("vm1", gpu_share=75).start()
    vm2 = host.hv.create("vm2", gpu_share=25).start()
    spawn_gpu(vm1, gpu_work([], kernels=2))
    view = vm2.shell("gpu")
    assert "vGPU share 25%" in view and "14 TPCs" in view, view  # 25% of 54
    assert "vm1" not in view and "kernel" not in view and "75%" not in view, view
    assert "no contexts" in view


def test_a_guest_cannot_name_another_guests_buffers_or_kernels(host):
    vm1 = host.hv.create("vm1", gpu_share=50).start()
    vm2 = host.hv.create("vm2", gpu_share=50).start()
    mine: list[dict] = []
    spawn_gpu(vm1, gpu_work(mine, kernels=2))
    run_until(host.machine, lambda: bool(mine))
    theirs = mine[0]
    answers: list[str] = []
    requests = [
        ("free", theirs["handle"]),
        ("sync", theirs["kernels"][0]),
        ("free", 2**40),
        ("sync", -1),
        ("launch", SMALL),
    ]
    spawn_gpu(vm2, naming(answers, requests))
    run_until(host.machine, lambda: len(answers) == len(requests))
    assert answers[0].startswith("error") and "not this context's" in answers[0]
    assert answers[1].startswith("error") and "not this context's" in answers[1]
    assert answers[2].startswith("error") and answers[3].startswith("error")
    assert answers[4] == "launched"  # and the guest's own work goes on


def test_a_guest_context_is_held_to_its_memory_quota(host):
    vm = host.hv.create("vm1", gpu_share=50).start()
    answers: list[str] = []

    def program(proc):
        from userland.gpulib import GpuRequestFailed, open_context

        ctx = yield from open_context(proc, quota_bytes=1 << 20)
        for size in (1 << 19, 1 << 20):
            try:
                answers.append(f"handle {(yield from ctx.alloc(size))}")
            except GpuRequestFailed as exc:
                answers.append(f"error: {exc}")

    spawn_gpu(vm, program)
    run_until(host.machine, lambda: len(answers) == 2)
    assert answers[0].startswith("handle") and "over the context's quota" in answers[1]


ANSWERS = ("error", "context", "stats", "handle", "ok", "launched", "done")


def _answer(data: bytes) -> list:
    assert data and data[0] == STATUS_OK, data
    return msgpack.unpackb(data[1:], raw=False)


def _header(version: int, op: int, flags: int, ctx: int, arg: int) -> bytes:
    return wire.REQUEST.pack(version, op, flags, ctx, arg)


#: Requests a hostile guest driver may publish: random bytes, headers with
#: any field, and launch records with any bytes or any field values.  (Not
#: quiet ones: the publisher waits for every answer's interrupt.)
requests = st.one_of(
    st.binary(max_size=160).filter(lambda data: len(data) < 4 or not data[2] & wire.QUIET),
    st.builds(
        _header, st.integers(0, 2), st.integers(0, 8), st.sampled_from([0, 1, 4, 5]),
        st.integers(0, 3), st.integers(-(2**63), 2**63 - 1),
    ),
    st.builds(
        lambda ctx, kernel, record: wire.encode_request("launch", ctx, kernel) + record,
        st.integers(0, 3), st.integers(-5, 2**31), st.binary(min_size=104, max_size=104),
    ),
    st.builds(
        lambda ctx, kernel, grid, block_us, stream, mask: wire.encode_request("launch", ctx, kernel)
        + LAUNCH_WIRE.pack(1, mask > 0, stream, grid, block_us, 0.0, 0, 2, 1, mask, b"k"),
        st.integers(0, 3), st.integers(1, 2**31 - 1), st.integers(0, 2**32 - 1), st.floats(),
        st.integers(0, 2**16 - 1), st.integers(0, 2**64 - 1),
    ),
)  # fmt: skip


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(a=st.lists(requests, min_size=1, max_size=6), b=st.lists(requests, min_size=1, max_size=6))
def test_malformed_requests_from_two_guests_get_error_answers_and_all_goes_on(host, a, b):
    guests = getattr(host, "raw_guests", None)
    if guests is None:
        guests = host.raw_guests = [RawQueue(raw_guest(host, f"raw{i}", 30)) for i in (1, 2)]
    for raw, payloads in zip(guests, (a, b), strict=True):
        raw.answers.clear()
        queue_cap = raw.vm.kernel.devices["gpuq"]
        raw.vm.kernel.spawn(raw.publisher(payloads), caps={"gpuq": queue_cap}, name="fuzz")
    run_until(host.machine, lambda: all(len(g.answers) == n for g, n in zip(guests, (len(a), len(b)), strict=True)))  # fmt: skip
    for raw in guests:
        for data in raw.answers:
            label = _answer(data)[0]  # an answer of the protocol, never a failed chain
            assert label in ANSWERS, label
    # The host and both back ends go on: a well-formed request is served.
    for raw in guests:
        raw.answers.clear()
        raw.vm.kernel.spawn(
            raw.publisher([wire.encode_request("create_context", 0)]),
            caps={"gpuq": raw.vm.kernel.devices["gpuq"]}, name="probe",
        )  # fmt: skip
    run_until(host.machine, lambda: all(g.answers for g in guests))
    assert all(_answer(g.answers[0])[0] == "context" for g in guests)
    assert not host.halted and all(not g.vm.kernel.halted for g in guests)


def _race(advisor: str | None, shares: tuple[int, int], kernels: int = 6) -> list[dict]:
    """Two guests with `shares` run the same GPU work at once; what each saw."""
    host = hv_host(advisor)
    try:
        vms = [host.hv.create(f"vm{i}", gpu_share=s).start() for i, s in enumerate(shares)]
        results: list[list[dict]] = [[] for _ in vms]
        for vm, out in zip(vms, results, strict=True):
            spawn_gpu(vm, gpu_work(out, kernels=kernels))
        run_until(host.machine, lambda: all(results))
        return [out[0] for out in results]
    finally:
        host.hv.shutdown()
        host.machine.shutdown()


def test_under_lithos_a_larger_share_finishes_the_same_work_sooner():
    big, small = _race("gpu_lithos", (75, 25))
    assert big["done"] - big["start"] < 0.8 * (small["done"] - small["start"])


@pytest.mark.parametrize("advisor", ["gpu_mig", "gpu_timeslice"])
def test_shares_order_the_guests_under_mig_slices_and_time_slices(advisor):
    big, small = _race(advisor, (75, 25))
    assert big["done"] - big["start"] < small["done"] - small["start"]


def test_a_restored_back_end_gets_its_context_id_and_buffers_back():
    first = hv_host()
    try:
        RawQueue(raw_guest(first, "other", 20))
        raw = RawQueue(raw_guest(first, "vm1", 30))
        (ctx,), (handle,), (kernel,), (done,) = (
            ask(first, raw, wire.encode_request(*request))[0][1:]
            for request in (
                ("create_context", 0),
                ("alloc", 1, 1 << 20),
                ("launch", 1, 1, SMALL),
                ("sync", 1, 1),
            )
        )
        state = raw.vm.queues[0].state
        assert raw.vm.queues[0].quiet and (ctx, handle, kernel) == (1, 1, 1)
    finally:
        first.hv.shutdown()
        first.machine.shutdown()
    second = hv_host()
    try:
        restored = RawQueue(raw_guest(second, "vm1", 30, state=state))
        RawQueue(raw_guest(second, "late", 20))
        view = second.shell("gpu")
        assert re.search(rf"\b{state['ctx']}  vm1 +1\.0 ", view), view
        # The guest's ids still name its own context, buffer and finished kernel.
        answers = ask(
            second, restored, wire.encode_request("sync", 1, 1), wire.encode_request("free", 1, 1)
        )
        assert answers == [["done", done], ["ok", None]]
    finally:
        second.hv.shutdown()
        second.machine.shutdown()


def test_quiesce_syncs_launched_kernels_until_the_queue_is_quiet(host):
    raw = RawQueue(raw_guest(host, "vm1", 50))
    ask(host, raw, wire.encode_request("create_context", 0))
    (answer,) = ask(host, raw, wire.encode_request("launch", 1, 1, SMALL))
    queue = raw.vm.queues[0]
    assert answer[0] == "launched" and not queue.quiet
    queue.signal(QUIESCE)
    run_until(host.machine, lambda: queue.quiet)
    assert queue.state["kernels"][1][2] is not None  # its completion time, kept


def test_a_guests_gpu_work_has_the_same_virtual_times_on_two_seeded_runs():
    assert _race("gpu_lithos", (60, 40), kernels=3) == _race("gpu_lithos", (60, 40), kernels=3)


def test_a_context_abandoned_by_a_killed_program_is_reclaimed_and_the_driver_goes_on(host):
    vm = host.hv.create("vm1", gpu_share=50).start()
    long = LaunchSpec("long", grid_blocks=864, block_us=500.0)
    pid = spawn_gpu(vm, gpu_work([], kernels=4, spec=long))
    host.machine.run(until=host.machine.now_ns + 1_000_000)  # parked on its sync
    vm.kernel.kill(vm.kernel.tasks[pid], "test", -9)
    assert re.search(r"\d+  vm1 +1\.0 ", host.shell("gpu"))  # its 1 MiB is still held
    results: list[dict] = []
    spawn_gpu(vm, gpu_work(results, kernels=1))
    run_until(host.machine, lambda: bool(results))
    host.machine.run(until=host.machine.now_ns + 50_000_000)
    assert re.search(r"\d+  vm1 +0\.0 ", host.shell("gpu")), host.shell("gpu")
    assert "context reclaimed" in vm.shell("dmesg")


def test_programs_run_one_after_another_reuse_one_host_stream_and_the_whole_share(host):
    host.shell("insmod gpu_lithos")
    vm = host.hv.create("vm1", gpu_share=50).start()
    for _ in range(3):
        done: list[dict] = []
        spawn_gpu(vm, gpu_work(done, kernels=1))
        run_until(host.machine, lambda: bool(done))  # noqa: B023 (run before the next)
    view = host.shell("gpu")
    assert "quota_tpcs=27 " in view, view  # one stream with all of 50% of 54 TPCs


def test_a_launch_the_host_refuses_is_reported_by_the_contexts_next_sync(host):
    vm = host.hv.create("vm1", gpu_share=50).start()
    answers: list[str] = []
    beyond = LaunchSpec("beyond", grid_blocks=1, block_us=1.0, mask=1 << 60)  # no TPC 60 on an a100

    def program(proc):
        from userland.gpulib import GpuRequestFailed, open_context

        ctx = yield from open_context(proc)
        answers.append(f"launched {(yield from ctx.launch(beyond))}")
        for _ in range(2):  # reported once, then the context goes on
            try:
                answers.append(f"done {(yield from ctx.sync())}")
            except GpuRequestFailed as exc:
                answers.append(f"error: {exc}")

    spawn_gpu(vm, program)
    run_until(host.machine, lambda: len(answers) == 3)
    assert answers[0] == "launched 1"
    assert answers[1].startswith("error: the launch of kernel 1 was refused"), answers
    assert answers[2].startswith("done"), answers


def test_launches_are_answered_at_once_and_published_quiet_in_batches(host):
    vm = host.hv.create("vm1", gpu_share=50).start()
    results: list[dict] = []
    tiny = LaunchSpec("tiny", grid_blocks=1, block_us=5.0)
    first = len(vm.journal.entries)
    for i in range(4):
        spawn_gpu(vm, gpu_work(results, kernels=8, spec=tiny), name=f"work{i}")
    run_until(host.machine, lambda: len(results) == 4)
    kinds = [entry.kind for entry in vm.journal.entries[first:]]
    requests = 4 * (8 + 4)  # each program: create, alloc, 8 launches, sync, destroy
    # Only the answers a caller waits for interrupt the guest: not the launches'.
    assert kinds.count("irq") <= 4 * 4
    # Requests that wait on the front end's endpoint together go with one kick.
    assert kinds.count("hc") < requests
    ids = sorted(k for r in results for k in r["kernels"])
    assert ids == list(range(1, 33))  # the front end's ids, each once


def test_a_launch_naming_an_old_kernel_id_is_refused(host):
    raw = RawQueue(raw_guest(host, "vm1", 50))
    ask(host, raw, wire.encode_request("create_context", 0))
    answers = ask(
        host, raw,
        wire.encode_request("launch", 1, 5, SMALL),
        wire.encode_request("launch", 1, 5, SMALL),
        wire.encode_request("launch", 1, 3, SMALL),
        wire.encode_request("launch", 1, None, SMALL),
    )  # fmt: skip
    assert answers[0] == ["launched", 5]
    assert all(a[0] == "error" and "new kernel id, 6 or above" in a[1] for a in answers[1:])
