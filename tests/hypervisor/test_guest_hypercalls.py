"""A guest's tasks call their hypervisor: the Hypercall trap, the policy
hypercall behind a guest's insmod, and the balloon."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kernel import Kernel
from kernel.config import KernelConfig
from kernel.hypervisor.hypercall import Hc, Status
from kernel.traps import Hypercall


def caller(calls, answers):
    """A guest program that makes `calls` and keeps what each returned."""

    def program(proc):
        for number, args in calls:
            answers.append((yield Hypercall(number, args)))

    return program


def test_a_guest_task_asks_its_hypervisor_who_it_is(host):
    vm = host.hv.create("web", KernelConfig(seed=3, gpu=None, frames=128)).start()
    answers: list = []
    vm.kernel.spawn(caller([(Hc.VM_INFO, ())], answers))
    host.machine.run(until=host.machine.now_ns + 1_000_000)
    status, info = answers[0]
    assert status == Status.OK and info["name"] == "web" and info["pages"] == 128
    assert "vm web: 128 pages, 0 given back" in vm.shell("run vminfo")


def test_a_kernel_that_is_not_a_guest_has_no_hypervisor_to_call():
    k = Kernel(seed=0, gpu=None).boot()
    try:
        assert "ENOSYS: this kernel is not a guest" in k.shell("run vminfo")
    finally:
        k.shutdown()


def test_a_guest_s_insmod_asks_its_host_and_loads_only_what_it_allows(host):
    vm = host.hv.create("g", allowed_modules=("lru",)).start()
    assert "lru attached" in vm.shell("insmod lru")
    out = vm.shell("insmod mlfq")
    assert "the host does not allow 'mlfq' (allowed: lru)" in out
    hcs = [e for e in vm.journal.entries if e.kind == "hc"]
    assert [(e.data[0], e.data[1][0], e.data[2][0]) for e in hcs] == [
        (Hc.POLICY_CHOOSE, "lru", Status.OK),
        (Hc.POLICY_CHOOSE, "mlfq", Status.EPERM),
    ]
    assert "memory" not in host.mlaas.attached


def test_the_balloon_gives_frames_back_and_takes_them_again(host):
    vm = host.hv.create("g", KernelConfig(seed=4, gpu=None, frames=64)).start()
    free = len(vm.kernel.mm.free_frames)
    assert "the guest holds 44 pages" in vm.shell("run balloon 20")
    assert vm.balloon.given_pages == 20 and len(vm.kernel.mm.free_frames) == free - 20
    assert "balloon_kib" in vm.kernel.mm.info() and vm.kernel.mm.info()["balloon_kib"] == 80
    # a guest under memory pressure still works: its pages go to swap
    assert "0 corrupt" in vm.shell("run memhog 60")
    assert "the guest holds 64 pages" in vm.shell("run balloon -20")
    assert vm.balloon.given_pages == 0 and not vm.kernel.mm.ballooned
    assert "cannot take 5 pages" in vm.shell("run balloon -5")
    assert "only 60 more frames" in vm.shell("run balloon 100")
    assert vm.balloon.given_pages == 0 and not vm.kernel.mm.ballooned  # nothing half done


hypercall_args = st.one_of(
    st.integers(-(1 << 70), 1 << 70), st.text(max_size=80), st.booleans(), st.none(),
    st.floats(allow_nan=True), st.binary(max_size=16),
)  # fmt: skip


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    calls=st.lists(
        st.tuples(st.integers(-2, 8), st.lists(hypercall_args, max_size=4).map(tuple)),
        min_size=1,
        max_size=12,
    )
)
def test_hostile_hypercalls_from_two_guests_get_statuses_and_the_host_goes_on(host, calls):
    guests = [host.hv.vms.get(n) or host.hv.create(n).start() for n in ("x", "y")]
    answers: list[list] = [[], []]
    for vm, got in zip(guests, answers, strict=True):
        vm.kernel.spawn(caller(calls, got))
    host.machine.run(until=host.machine.now_ns + 2_000_000)
    for got in answers:
        assert len(got) == len(calls)
        assert all(type(status) is int and status in set(Status) for status, _ in got)
    assert not host.halted and all(not vm.kernel.halted for vm in guests)
    assert "done" in guests[0].shell("run echo done")
