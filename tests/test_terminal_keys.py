"""The interactive terminal keeps every key: `malv boot` driven through a pty.

A person types faster than the terminal switches between its line editor (at
the prompt) and its key reader (while a program runs).  These tests type ten
lines at once right after a command, with no gap, and check that all ten ran,
in order; a bracketed paste; and the keys of `vm console`.  They wait for what
the machine prints, never for a length of time, so a slow host only makes them
slower.

Each typed line is `run echo kNN'x'z`: the shell unquotes it, so the output
`kNNxz` appears only if the line really ran (the typed text, shown when it
runs, has the quotes).
"""

from __future__ import annotations

import fcntl
import os
import re
import select
import struct
import subprocess
import sys
import termios
import time

import pytest

ANSI = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07]*\x07|[()][0-9A-B]|.)")
ENTER = "\r"  # what a terminal sends for Enter
CTRL_C, CTRL_D, CTRL_P, CTRL_ESCAPE = "\x03", "\x04", "\x10", "\x1d"
TIMEOUT_S = 120  # overall, per wait: generous, for a slow or busy host


class Terminal:
    """A pseudo-terminal with `malv boot` on its other end.  It does not
    answer cursor position requests, so prompt_toolkit is told not to ask."""

    def __init__(self, *args: str) -> None:
        self.fd, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        env = dict(os.environ, TERM="xterm", PROMPT_TOOLKIT_NO_CPR="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "import sys; from image.cli import main; sys.exit(main())",
             "boot", *args],
            stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        )  # fmt: skip
        os.close(slave)
        self.raw = ""  # everything the terminal showed
        self.seen = 0  # how much of `text` earlier waits consumed

    def type(self, keys: str) -> None:
        os.write(self.fd, keys.encode())

    @property
    def text(self) -> str:
        """What was shown, without screen control, one line per line."""
        text = ANSI.sub("", self.raw).replace("\b", "")
        return text.replace("\r\n", "\n").replace("\r", "\n")

    def _read(self, timeout_s: float) -> None:
        ready, _, _ = select.select([self.fd], [], [], timeout_s)
        if not ready:
            return
        try:
            chunk = os.read(self.fd, 65536).decode(errors="replace")
        except OSError:  # the child closed the terminal
            chunk = ""
        if not chunk:
            raise AssertionError(f"malv exited ({self.proc.poll()}); it showed:\n{self.text}")
        self.raw += chunk

    def wait_for(self, pattern: str) -> re.Match[str]:
        """Read until `pattern` shows after what earlier waits found."""
        deadline = time.monotonic() + TIMEOUT_S
        regex = re.compile(pattern, re.M)
        while True:
            found = regex.search(self.text, self.seen)
            if found:
                self.seen = found.end()
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"no {pattern!r} in:\n{self.text[self.seen :]}")
            self._read(0.2)

    def prompt(self, name: str = "") -> None:
        self.wait_for(rf"^{re.escape(name)}\$")  # prompt_toolkit draws the space as a move

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)
        os.close(self.fd)


@pytest.fixture
def terminal():
    """`malv boot` in a terminal, at its first prompt (no GPU: it boots faster)."""
    term = Terminal("--gpu", "none")
    term.prompt()
    yield term
    term.close()


@pytest.fixture
def host_terminal():
    """`malv boot --vms 1` in a terminal, at its first prompt, vm1 booted."""
    term = Terminal("--gpu", "none", "--vms", "1")
    term.prompt()
    term.type("vm list" + ENTER)
    term.wait_for(r"^vm1\s+running")
    term.prompt()
    yield term
    term.close()


def lines_for(tag: str, n: int = 10) -> list[str]:
    return [f"run echo {tag}{i:02}'x'z" for i in range(n)]


def lines_kept(term: Terminal, tag: str, n: int = 10) -> list[int]:
    """Which of `lines_for(tag)` ran, in the order their output shows; waits
    until the last one has run."""
    term.wait_for(rf"^{tag}{n - 1:02}xz$")
    return [int(i) for i in re.findall(rf"^{tag}(\d\d)xz$", term.text, re.M)]


@pytest.mark.parametrize("command", ["run spin 300", "ps", "clear"])
def test_lines_typed_right_after_a_command_all_run_in_order(terminal: Terminal, command: str):
    terminal.type(command + ENTER)
    terminal.wait_for(rf"{re.escape(command)}\n")  # the line editor took the Enter
    for line in lines_for("k"):  # no gap: as fast as the pty takes them
        terminal.type(line + ENTER)
    assert lines_kept(terminal, "k") == list(range(10))


def test_lines_typed_while_a_program_runs_run_after_it(terminal: Terminal):
    terminal.type("run spin 1000" + ENTER)
    terminal.wait_for(r"run spin 1000\n")
    terminal.type("".join(line + ENTER for line in lines_for("w")))
    assert lines_kept(terminal, "w") == list(range(10))


def test_a_multiline_paste_runs_each_line(terminal: Terminal):
    """Bracketed paste: the terminal wraps what is pasted in ESC[200~ .. ESC[201~."""
    pasted = ENTER.join(lines_for("p", 4)[:3]) + ENTER + "run echo p03'x"
    terminal.type("\x1b[200~" + pasted + "\x1b[201~")
    terminal.type("'z" + ENTER)  # the pasted last line, finished by hand
    assert lines_kept(terminal, "p", 4) == [0, 1, 2, 3]


def test_a_paste_while_a_program_runs_runs_after_it(terminal: Terminal):
    terminal.type("run spin 500" + ENTER)
    terminal.type("\x1b[200~" + "".join(line + ENTER for line in lines_for("q", 5)) + "\x1b[201~")
    assert lines_kept(terminal, "q", 5) == list(range(5))


# -- vm console ------------------------------------------------------------------------------


def test_vm_console_says_how_to_leave_and_ctrl_escape_leaves(host_terminal: Terminal):
    term = host_terminal
    term.type("vm console vm1" + ENTER)
    term.wait_for(r"Ctrl-\]")
    term.prompt("vm1")
    term.type(CTRL_ESCAPE + "run echo h'x'z" + ENTER)  # the line right after it is the host's
    term.wait_for(r"back on the host")
    term.wait_for(r"^hxz$")
    term.prompt()
    term.type("vm console vm1" + ENTER)
    term.prompt("vm1")
    term.type(CTRL_D)  # at the guest's prompt: leaves the console, not the host
    term.wait_for(r"back on the host")
    term.prompt()
    term.type("run echo i'x'z" + ENTER)
    term.wait_for(r"^ixz$")


def test_ctrl_c_and_ctrl_p_in_vm_console_reach_the_guest(host_terminal: Terminal):
    term = host_terminal
    term.type("vm console vm1" + ENTER)
    term.prompt("vm1")
    term.type("run spin 600000" + ENTER)  # ten minutes: only Ctrl-C ends it in time
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:  # Ctrl-P lists the guest's tasks, spin among them
        term.type(CTRL_P)
        if term.wait_for(r"^\s+\d+ \w+\s+[\d.]+  (spin|sh)$")[1] == "spin":
            break
    else:
        raise AssertionError("Ctrl-P never listed the guest's spin")
    term.type(CTRL_C)
    term.wait_for(r"^\^C$")
    term.prompt("vm1")
    term.type("run echo g'x'z" + ENTER)
    term.wait_for(r"^gxz$")
    term.prompt("vm1")
    term.type(CTRL_ESCAPE)
    term.prompt()


def test_ctrl_escape_leaves_a_busy_guest(host_terminal: Terminal):
    term = host_terminal
    term.type("vm console vm1" + ENTER)
    term.prompt("vm1")
    term.type("run spin 600000" + ENTER)
    term.type(CTRL_ESCAPE)  # at once: the line before it went to the guest, which spins
    term.wait_for(r"back on the host")
    term.prompt()
    term.type("ps" + ENTER)
    # The whole list: its rows up to the next prompt (they may come in pieces).
    host_tasks = term.wait_for(r"^\s+PID\s+PPID.*\n((\s+\d+ .*\n)+)\$")[1]
    assert "sh" in host_tasks and "spin" not in host_tasks
    term.type("run echo h'x'z" + ENTER)
    term.wait_for(r"^hxz$")


# -- the same, headless: the tty's line discipline and the console's routing ------------------


@pytest.fixture
def host():
    """A booted host with a hypervisor and a running guest `g`, attached to
    by `vm console g` (at g's prompt)."""
    from kernel import Kernel
    from kernel.hypervisor import Hypervisor

    k = Kernel(seed=0, name="host", gpu=None).boot()
    k.hv = Hypervisor(k)
    k.hv.create("g").start()
    k.tty.feed("vm console g")
    assert k.run_until_prompt() and k.tty.waiting_prompt == "g$ "
    yield k
    k.hv.shutdown()
    k.machine.shutdown()


def shown(k) -> str:
    return "".join(k.tty.transcript)


def test_escape_sequences_typed_ahead_are_dropped_whole(malv_kernel):
    tty = malv_kernel.tty
    malv_kernel.tty.feed("run sleep 100")
    malv_kernel.run(until=malv_kernel.loop.now_ns + 10_000_000)
    # an arrow key, a late cursor report split across two reads, a paste's brackets
    for keys in (
        "run echo a\x1b[Ab",
        "\x1b[12;",
        "40Rc\r\n",
        "\x1b[200~run echo d\r\x1b[201~",
        "e",
    ):
        tty.type_key(keys)
    assert malv_kernel.run_until_prompt()
    assert shown(malv_kernel).endswith("$ run echo abc\nabc\n$ run echo d\nd\n")
    assert tty.claim_prompt() == ("$ ", "e")


def test_a_fed_block_of_lines_runs_each(malv_kernel):
    assert malv_kernel.shell("run echo one\r\nrun echo two\rrun echo three") == "one\ntwo\nthree\n"


def test_the_line_editor_gets_no_prompt_a_typed_line_answers(malv_kernel):
    tty = malv_kernel.tty
    assert malv_kernel.run_until_prompt()
    tty.type_key("run echo typed\n")  # the IRQ is raised, not yet served
    assert tty.claim_prompt() is None
    malv_kernel.run(until=malv_kernel.loop.now_ns + 10_000_000)
    assert malv_kernel.run_until_prompt() and shown(malv_kernel).endswith("typed\n")
    assert tty.claim_prompt() == ("$ ", "") and tty.claim_prompt() == ("$ ", "")


def test_ctrl_c_and_ctrl_p_at_an_attached_console_reach_the_guest(host):
    host.tty.feed("run spin 600000")
    host.machine.run(until=host.machine.now_ns + 50_000_000)
    host.tty.procdump()
    assert re.search(r"^\s+\d+ \w+\s+[\d.]+  spin$", shown(host), re.M)  # the guest's tasks
    host.tty.interrupt()
    assert host.run_until_prompt(1_000_000_000) and host.tty.waiting_prompt == "g$ "
    assert shown(host).endswith("^C\n")
    host.tty.feed("exit")
    assert host.run_until_prompt() and host.tty.waiting_prompt == "$ "
    host.tty.procdump()  # detached: the host's own tasks again
    assert not re.search(r"^\s+\d+ \w+\s+[\d.]+  spin$", shown(host).rpartition("PID")[2], re.M)


def test_ctrl_escape_leaves_a_busy_guest_and_what_was_typed_before_goes_to_it(host):
    host.tty.feed("run spin 600000")
    host.machine.run(until=host.machine.now_ns + 50_000_000)
    host.tty.type_key("run echo after-spin\n")  # typed before Ctrl-]: the guest's
    host.tty.escape()
    host.tty.type_key("run echo on-the-host\n")  # typed after: the host's
    assert host.run_until_prompt(1_000_000_000) and host.tty.waiting_prompt == "$ "
    assert "vm: back on the host from g\n" in shown(host)
    assert shown(host).endswith("on-the-host\n")
    assert "after-spin" not in shown(host).partition("back on the host")[2]
    assert host.tty.attached is None
    guest = host.hv.get("g")
    host.tty.feed("vm console g")  # back, and Ctrl-C ends the spin: the line typed ahead runs
    assert host.run_until_prompt(1_000_000_000) and host.tty.waiting_prompt == "g$ "
    host.tty.feed("run echo next")
    host.machine.run(until=host.machine.now_ns + 50_000_000)
    host.tty.interrupt()
    assert host.run_until_prompt(1_000_000_000) and host.tty.waiting_prompt == "g$ "
    assert guest.console_output.endswith(
        "^C\n$ run echo after-spin\nafter-spin\n$ run echo next\nnext\n"
    )
    assert shown(host).endswith("^C\nafter-spin\nnext\n")


def test_ctrl_escape_on_the_host_alone_does_nothing(malv_kernel):
    assert malv_kernel.run_until_prompt()
    malv_kernel.tty.escape()
    assert malv_kernel.shell("run echo still here") == "still here\n"


def test_keys_routed_to_a_guest_are_in_its_snapshot(host, tmp_path):
    """Ctrl-C and the lines Ctrl-] hands over reach the guest as its own
    input, journaled: its snapshot replays them to the same guest."""
    from kernel.hypervisor import snapshot as snapshots

    host.tty.feed("run spin 600000")
    host.machine.run(until=host.machine.now_ns + 20_000_000)
    host.tty.interrupt()
    assert host.run_until_prompt(1_000_000_000) and host.tty.waiting_prompt == "g$ "
    host.tty.type_key("run echo handed-over\nrun ec")  # a whole line and part of one, then
    host.tty.escape()  # Ctrl-] before the console took them: they are the guest's
    host.machine.run(until=host.machine.now_ns + 10_000_000)
    assert host.run_until_prompt(1_000_000_000) and host.tty.waiting_prompt == "$ "
    vm = host.hv.get("g")

    def state() -> tuple[str, str, str]:
        hashed = snapshots.state_hash(vm.kernel, vm.window, vm._console)
        return vm.console_output, vm.kernel.tty.typed, hashed

    info = vm.snapshot(str(tmp_path / "g.snap"))
    left = state()
    assert left[0].endswith("$ run spin 600000\n^C\n$ run echo handed-over\nhanded-over\n")
    assert left[1] == "run ec"
    host.hv.destroy("g")
    vm = host.hv.restore(info.path)
    assert state() == left
