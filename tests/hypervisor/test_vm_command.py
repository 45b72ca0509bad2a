"""The host shell's `vm` command reaches the hypervisor through the VmControl trap."""

from __future__ import annotations

import re

from kernel import boot


def test_vm_list_on_a_host_with_no_guests_prints_the_header(host):
    assert host.shell("vm list") == ("NAME         STATE     VCPUS WEIGHT  CAP  GPU    CPU(ms)\n")


def test_vm_create_start_console_pause_resume_stop(host):
    out = host.shell("vm create web cpus=1 weight=512 cap=50")
    assert out == "vm: created web (1 vCPUs, weight 512, cap 50)\n"
    assert host.shell("vm start web") == "vm: web: started\n"
    assert host.shell("vm console web run echo hi from the guest") == "hi from the guest\n"
    assert re.fullmatch(r"up \d+\.\d{6} s, 3 tasks\n", host.shell("vm console web uptime"))
    assert host.shell("vm pause web") == "vm: web: paused\n"
    assert re.search(r"^web +paused +1 +512 +50 +- +\d+\.\d{3}$", host.shell("vm list"), re.M)
    assert host.shell("vm resume web") == "vm: web: resumed\n"
    assert host.shell("vm console web run echo back") == "back\n"
    assert host.shell("vm stop web") == "vm: web: stopped\n"
    assert "web" not in host.shell("vm list") and "web" not in host.hv.vms


def test_vm_console_runs_in_the_guest_not_the_host(host):
    host.shell("vm create g; vm start g")
    host.shell("vm console g run echo only-in-g")
    assert "only-in-g" in host.hv.get("g").console_output
    assert "only-in-g" not in "".join(host.tty.transcript[:-2])  # (the host echoes the command)
    assert host.shell("vm console g ps").count("sh") == 1


def test_vm_command_errors_are_one_clear_line(host):
    assert host.shell("vm start nope") == "vm: EVM: no vm named 'nope' (vms: none)\n"
    assert host.shell("vm create 9lives").startswith("vm: EVM: a vm name is")
    assert host.shell("vm create a cpus=x") == "vm: EVM: cpus must be an integer, got 'x'\n"
    assert host.shell("vm create a colour=red").startswith("vm: EVM: settings are cpus=N")
    assert host.shell("vm create a cap=900").startswith("vm: EVM: cap must be")
    assert host.shell("vm create a cpus=99").startswith("vm: EVM: cpus must be between")
    assert host.shell("vm").startswith("vm: usage: vm list")
    host.shell("vm create a")
    assert host.shell("vm console a uptime") == "vm: EVM: cannot console vm 'a': it is created\n"
    assert host.shell("vm pause a") == "vm: EVM: cannot pause vm 'a': it is created\n"
    host.shell("vm start a; vm pause a")
    assert host.shell("vm console a uptime") == "vm: EVM: cannot console vm 'a': it is paused\n"


def test_vm_console_on_a_guest_that_crashes_answers_with_the_crash(host):
    host.shell("vm create c; vm start c")
    out = host.shell("vm console c kill 2")  # the guest's init
    assert out == "vm: EVM: vm 'c' crashed: panic: init exited with status -9\n", out
    assert host.shell("run echo host lives") == "host lives\n"
    assert host.shell("vm console c uptime") == "vm: EVM: cannot console vm 'c': it is crashed\n"


def test_a_kernel_without_a_hypervisor_says_it_hosts_no_vms():
    k = boot(seed=0)
    try:
        assert k.shell("vm list") == "vm: ENOSYS: this kernel hosts no VMs\n"
    finally:
        k.shutdown()


def test_vm_console_with_no_command_attaches_to_the_guest_until_exit(host):
    host.shell("vm create w")
    host.shell("vm start w")
    host.tty.feed("vm console w")
    host.tty.feed("run echo inside")
    host.tty.feed("exit")
    out = host.shell("run echo outside")
    assert "vm: attached to w's console" in out and "inside\n" in out
    assert "vm: back on the host from w" in out and out.endswith("outside\n")
    assert "no running vm named 'nope'" in host.shell("vm console nope")


def test_vm_destroy_is_stop(host):
    host.shell("vm create w")
    host.shell("vm start w")
    assert host.shell("vm destroy w") == "vm: w: stopped\n"
    assert "w" not in host.hv.vms
