"""Guest VMs: kernels on the host's machine, created, started, paused,
resumed and destroyed; a guest that crashes takes nobody with it."""

from __future__ import annotations

import pytest
from scheduled_guests import busy

from kernel import KernelConfig
from kernel.config import BootPlan
from kernel.hypervisor import VmError, VmState
from kernel.memory import PAGE_SIZE
from kernel.mlaas import ModuleError
from kernel.programs import ProgramTable
from kernel.traps import Compute, MemMap, MemWrite


def test_a_guest_is_a_kernel_of_its_own_on_the_host_s_machine(host):
    vm = host.hv.create("web", KernelConfig(cpus=3, frames=256, gpu=None))
    assert vm.state is VmState.CREATED and vm.kernel.machine is host.machine
    assert vm.kernel.name == "web" and len(vm.kernel.cpus) == 3
    assert vm.kernel.tasks is not host.tasks and vm.kernel.mm is not host.mm
    assert vm.kernel.mlaas is not host.mlaas and vm.kernel.mlaas.host_choice is not None
    vm.start()
    assert vm.state is VmState.RUNNING
    assert vm.shell("run echo hello") == "hello\n"
    assert "$ run echo hello\nhello\n" in vm.console_output
    assert "hello" not in "".join(host.tty.transcript)  # the console is the guest's own


def test_a_guest_s_log_lines_carry_its_name(host):
    vm = host.hv.create("db").start()
    assert all(r["kernel"] == "db" for r in vm.kernel.log.records())
    assert all("] db/" in line for line in vm.kernel.log.lines())
    assert host.log.find("vm created")[0]["vm"] == "db"


def test_list_gives_name_state_vcpus_weight_cap_and_cpu_time(host):
    host.hv.create("a", weight=512).start()
    host.hv.create("b", KernelConfig(cpus=1, gpu=None), cap=25)
    rows = host.hv.list()
    assert [(r.name, r.state, r.vcpus, r.weight, r.cap) for r in rows] == [
        ("a", "running", 2, 512, 0),
        ("b", "created", 1, 256, 25),
    ]
    assert rows[0].cpu_ns > 0 and rows[1].cpu_ns == 0


def test_a_paused_guest_gets_no_cpu_while_time_goes_on_for_the_others(host):
    a, b = host.hv.create("a").start(), host.hv.create("b").start()
    done_a: list[int] = []
    done_b: list[int] = []
    a.kernel.spawn(busy(50, done_a), name="busy")
    b.kernel.spawn(busy(50, done_b), name="busy")
    a.pause()
    host.machine.run(until=host.machine.now_ns + 200_000_000)
    assert done_b and not done_a and a.state is VmState.PAUSED
    used = a.domain.used_ns
    host.machine.run(until=host.machine.now_ns + 200_000_000)
    assert a.domain.used_ns - used <= 10_000_000  # at most the grant it held (one slice)
    a.resume()
    host.machine.run(until=host.machine.now_ns + 200_000_000)
    assert done_a and a.state is VmState.RUNNING


def test_destroy_releases_the_guest_s_tasks_memory_and_modules(host):
    vm = host.hv.create("tmp", allowed_modules=("rr",)).start()
    vm.kernel.mlaas.choose("rr")
    vm.kernel.spawn(_holds_memory, name="holder")
    host.machine.run(until=host.machine.now_ns + 50_000_000)
    assert len(vm.kernel.mm.free_frames) < vm.kernel.mm.nframes
    guest = vm.kernel
    host.hv.destroy("tmp")
    assert vm.state is VmState.DESTROYED and guest.halted
    assert not guest.tasks and len(guest.mm.free_frames) == guest.mm.nframes
    assert [r.state for r in guest.mlaas.modules.values()] == ["removed"]
    assert not guest.mlaas.attached
    assert guest not in host.machine.kernels and guest not in host.hv.scheduler.domains
    assert "tmp" not in host.hv.vms
    assert host.shell("run echo host lives") == "host lives\n"
    host.hv.create("tmp").start()  # the name is free again


def test_lifecycle_steps_in_the_wrong_state_are_refused(host):
    vm = host.hv.create("x")
    with pytest.raises(VmError, match="cannot pause vm 'x': it is created"):
        vm.pause()
    vm.start()
    with pytest.raises(VmError, match="cannot start vm 'x': it is running"):
        vm.start()
    with pytest.raises(VmError, match="cannot resume vm 'x': it is running"):
        vm.resume()
    with pytest.raises(VmError, match="there is already a vm named 'x'"):
        host.hv.create("x")
    with pytest.raises(VmError, match="no vm named 'y'"):
        host.hv.get("y")
    with pytest.raises(VmError, match="cap must be"):
        host.hv.create("z", cap=1_000)


def _holds_memory(proc):
    base = yield MemMap(16)
    for i in range(16):
        yield MemWrite(base + i * PAGE_SIZE, b"x")
    yield Compute(10_000_000)


def _raising_init(proc):
    yield Compute(10)
    raise RuntimeError("guest init fails")


def test_a_guest_whose_init_dies_is_crashed_and_the_others_finish_their_work(host):
    programs = ProgramTable()
    programs.register("bad-init", _raising_init)
    for name in ("console", "init", "sh"):
        programs.register(name, host.programs.lookup(name))
    bad_config = KernelConfig(gpu=None, plan=BootPlan.standard(gpu=None, init="bad-init"))
    bad = host.hv.create("bad", bad_config, programs=programs)
    good = [host.hv.create(f"good{i}").start() for i in range(2)]
    finished: list[list[int]] = [[], []]
    for vm, done in zip(good, finished, strict=True):
        for _ in range(2):
            vm.kernel.spawn(busy(100, done), name="work")
    bad.start()
    host.machine.run(until=host.machine.now_ns + 1_000_000_000)
    assert bad.state is VmState.CRASHED and "init exited" in bad.crash_reason
    assert [len(done) for done in finished] == [2, 2]
    assert [vm.state for vm in good] == [VmState.RUNNING, VmState.RUNNING]
    assert not host.halted and host.shell("run echo host lives") == "host lives\n"
    assert host.log.find("vm crashed")[0]["vm"] == "bad"
    assert [r.state for r in host.hv.list()] == ["crashed", "running", "running"]


def test_a_guest_that_panics_is_crashed(host):
    vm = host.hv.create("p").start()
    vm.kernel.halt("panic: test")
    assert vm.state is VmState.CRASHED and not host.halted


def test_a_guest_that_powers_off_is_halted_not_crashed(host):
    vm = host.hv.create("off").start()
    vm.shell("poweroff")
    assert vm.state is VmState.HALTED


def test_a_guest_s_module_choice_affects_only_that_guest(host):
    a = host.hv.create("a", allowed_modules=("rr", "lru")).start()
    b = host.hv.create("b").start()
    a.kernel.mlaas.choose("rr")
    assert a.kernel.sched.advisor.name == "rr"
    assert b.kernel.sched.advisor is None and host.sched.advisor is None
    assert "rr" in a.kernel.mlaas.modules and not b.kernel.mlaas.modules
    assert "rr" not in host.mlaas.modules
    assert a.shell("run echo still") == "still\n" and b.shell("lsmod").count("\n") == 1
    assert host.hv.list()[0].allowed_modules == ("rr", "lru")
    with pytest.raises(ModuleError, match="the host does not allow 'rr' \\(allowed: none\\)"):
        b.kernel.mlaas.choose("rr")  # allowed to a, not to b
    with pytest.raises(VmError, match="allowed_modules: no module named 'nosuch'"):
        host.hv.create("c", allowed_modules=("nosuch",))


def test_a_host_can_require_a_guest_s_modules_to_run_isolated(host):
    vm = host.hv.create("iso", allowed_modules=("rr",), isolated_modules=True).start()
    rec = vm.kernel.mlaas.choose("rr")
    assert rec.mode == "isolated"


def test_a_paused_guest_s_sched_advisor_is_not_taken_for_starving_its_tasks(host):
    vm = host.hv.create("g", allowed_modules=("rr",)).start()
    vm.kernel.mlaas.watchdog.timeout_ns = 50_000_000
    assert "rr attached" in vm.shell("insmod rr")
    for _ in range(3):  # three busy tasks on two vCPUs: one always waits its turn
        vm.shell("run spin 100 &")
    vm.pause()
    host.machine.run(until=host.machine.now_ns + 400_000_000)  # 8 timeouts of steal time
    assert vm.kernel.sched.runnable()
    vm.resume()
    host.machine.run(until=host.machine.now_ns + 300_000_000)
    rec = vm.kernel.mlaas.modules["rr"]
    assert rec.state == "live", rec.exit_report
    assert vm.console_output.count("spin: done") == 3
    assert vm.kernel.online_ns() < host.machine.now_ns - 400_000_000
