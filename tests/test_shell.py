"""The shell and console, through the Python API and the pytest fixtures."""

from __future__ import annotations

import re

import pytest

from kernel import Kernel, KernelHalted, boot


def test_boot_reaches_the_prompt_with_banner_and_boot_log(malv_kernel: Kernel):
    transcript = "".join(malv_kernel.tty.transcript)
    assert transcript.startswith("malvos ")
    assert "kernel: booting" in transcript
    assert malv_kernel.tty.waiting_prompt == "$ "


def test_ps_lists_init_console_and_the_shell(malv_kernel: Kernel):
    out = malv_kernel.shell("ps")
    assert re.search(r"^\s+1\s+0\s+\w+\s+[\d.]+\s+\d+\s+console$", out, re.M)
    assert re.search(r"^\s+2\s+0\s+\w+\s+.*vgpu$", out, re.M)
    assert re.search(r"^\s+3\s+0\s+child\s+.*init$", out, re.M)
    assert re.search(r"^\s+4\s+3\s+running\s+.*sh$", out, re.M)


def test_free_and_uptime_and_dmesg(malv_kernel: Kernel):
    assert re.search(r"Mem:\s+8192\s+\d+\s+\d+", malv_kernel.shell("free"))
    assert re.match(r"up \d+\.\d{6} s, 4 tasks", malv_kernel.shell("uptime"))
    assert "task: spawned" in malv_kernel.shell("dmesg")


def test_unknown_commands_and_bad_arguments_get_one_clear_line(malv_kernel: Kernel):
    assert malv_kernel.shell("frobnicate") == "sh: frobnicate: command not found (try 'help')\n"
    assert malv_kernel.shell("kill abc") == "kill: pid must be an integer, got 'abc'\n"
    assert malv_kernel.shell("kill 4242") == "kill: ESRCH: no task with pid 4242\n"
    assert malv_kernel.shell("run") == "run: usage: run PROG [ARGS] [&]\n"
    assert malv_kernel.shell("run nosuch") == "run: EINVAL: no program named 'nosuch'\n"
    assert malv_kernel.shell('echo "unclosed') == "sh: No closing quotation\n"


def test_help_lists_every_command(malv_kernel: Kernel):
    out = malv_kernel.shell("help")
    for name in ("help", "ps", "dmesg", "free", "uptime", "kill", "run", "jobs", "poweroff", "gpu"):
        assert re.search(rf"^  {name}\b", out, re.M), name


def test_run_in_foreground_and_background_with_jobs(malv_kernel: Kernel):
    assert malv_kernel.shell("run echo hello there") == "hello there\n"
    started = malv_kernel.shell("run spin 50 &")
    job = re.match(r"\[1\] (\d+)\n", started)
    assert job
    assert re.search(rf"\[1\]\s+{job.group(1)} running\s+spin 50", malv_kernel.shell("jobs"))
    malv_kernel.run(until=malv_kernel.loop.now_ns + 100_000_000)
    assert "done (0)" in malv_kernel.shell("jobs")


def test_kill_ends_a_background_job(malv_kernel: Kernel):
    pid = int(re.match(r"\[1\] (\d+)", malv_kernel.shell("run spin &")).group(1))
    assert malv_kernel.shell(f"kill {pid}") == f"killed {pid}\n"
    assert re.search(r"done \(-9\)", malv_kernel.shell("jobs"))


def test_ctrl_c_interrupts_the_foreground_program_not_the_kernel(malv_kernel: Kernel):
    k = malv_kernel
    k.tty.feed("run spin")  # forever
    k.run(until=k.loop.now_ns + 20_000_000)
    assert any(name == "spin" for *_, name in k.proclist())
    k.tty.interrupt()
    assert k.run_until_prompt()
    assert "^C" in "".join(k.tty.transcript)
    assert not any(name == "spin" for *_, name in k.proclist())
    assert k.shell("run echo still here") == "still here\n"


def test_ctrl_p_prints_the_process_list(malv_kernel: Kernel):
    malv_kernel.tty.procdump()
    dump = malv_kernel.tty.transcript[-1]
    assert "PID" in dump and "init" in dump and "sh" in dump


def test_init_restarts_the_shell_if_it_is_killed(malv_kernel: Kernel):
    k = malv_kernel
    k.shell("kill 4")
    assert k.run_until_prompt()
    names = {name: pid for pid, *_, name in k.proclist()}
    assert "sh" in names and names["sh"] != 4
    assert k.shell("run echo back") == "back\n"


def test_poweroff_halts_the_kernel(malv_kernel: Kernel):
    assert malv_kernel.shell("poweroff") == "powering off\n"
    assert malv_kernel.halted and malv_kernel.halt_reason.startswith("poweroff")
    with pytest.raises(KernelHalted):
        malv_kernel.shell("ps")


def test_memhog_beyond_physical_memory_through_the_shell(malv_boot):
    k = malv_boot(frames=64)
    assert k.shell("run memhog 200") == "memhog: 200 pages written and read back, 0 corrupt\n"
    assert re.search(r"swapped out [1-9]", k.shell("free"))


def test_context_manager_shuts_down():
    with boot(seed=5) as k:
        assert "hi" in k.shell("run echo hi")
    assert k.halted
