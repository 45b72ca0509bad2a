"""`malv boot --vms N` boots a host with N guests started; they go down with it."""

from __future__ import annotations

import image.cli as cli
from kernel import Kernel
from kernel.hypervisor import Hypervisor, VmState


def test_malv_boot_vms_starts_guests_the_host_shell_can_reach(capsys):
    rc = cli.main(
        ["boot", "--headless", "--vms", "2", "--run", "vm list; vm console vm2 run echo hi"]
    )
    out = capsys.readouterr().out
    assert rc == 0
    assert "vm1          running       2    256    -  50%" in out
    assert "vm2          running       2    256    -  50%" in out
    assert "$ vm console vm2 run echo hi\nhi\n" in out


def test_a_guest_of_malv_boot_runs_gpu_burn_and_comes_back_from_a_snapshot(capsys, tmp_path):
    snap = tmp_path / "vm1.snap"
    script = (
        f"vm console vm1 run gpu-burn 1 64; vm console vm1 run echo before; "
        f"vm snapshot vm1 {snap}; vm destroy vm1; vm list; vm restore {snap}; "
        f"vm console vm1 run echo after; gpu"
    )
    assert cli.main(["boot", "--headless", "--vms", "2", "--run", script]) == 0
    out = capsys.readouterr().out
    assert "gpu-burn: 252 kernels in 1.008 s" in out  # through its share of the host vGPU
    assert "vm: vm1: stopped" in out and "vm: vm1: restored from" in out
    assert "$ vm console vm1 run echo after\nafter\n" in out
    assert "   1  vm1 " in out and "   2  vm2 " in out  # one row per VM on the host's gpu


def test_malv_boot_refuses_a_negative_number_of_vms(capsys):
    assert cli.main(["boot", "--headless", "--vms", "-1"]) == 2
    assert "argument --vms: must be 0 or more" in capsys.readouterr().err


def test_guests_go_down_with_their_host():
    host = Kernel(seed=0, name="host").boot()
    hv = Hypervisor(host)
    vm = hv.create("g").start()
    host.shell("poweroff")
    assert vm.kernel.halted and vm.state is VmState.HALTED
    assert vm.kernel.halt_reason.startswith("host halted: poweroff")
    hv.shutdown()
    host.machine.shutdown()
