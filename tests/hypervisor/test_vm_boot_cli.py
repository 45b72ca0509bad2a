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
    assert "vm1          running       2    256    -" in out
    assert "vm2          running       2    256    -" in out
    assert "$ vm console vm2 run echo hi\nhi\n" in out


def test_malv_boot_refuses_a_negative_number_of_vms(capsys):
    assert cli.main(["boot", "--headless", "--vms", "-1"]) == 2
    assert "--vms must be 0 or more" in capsys.readouterr().err


def test_guests_go_down_with_their_host():
    host = Kernel(seed=0, name="host").boot()
    hv = Hypervisor(host)
    vm = hv.create("g").start()
    host.shell("poweroff")
    assert vm.kernel.halted and vm.state is VmState.HALTED
    assert vm.kernel.halt_reason.startswith("host halted: poweroff")
    hv.shutdown()
    host.machine.shutdown()
