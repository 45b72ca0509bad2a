"""Grader of lab ipc: the student's bank, driven by two scripted clients.

Each test boots a headless one-CPU kernel whose program table has two
clients, `alice` and `bob`, each running a script of requests (Calls on the
cap the bank gave it, a receive, a pause) and writing down every answer or
error.  The student's `bank` is spawned with the clients' names as its
arguments; it runs in a sandboxed process of its own, and this kernel
carries out its traps (`image.labs.sandboxed_program`).  The kernel runs
until nothing is left to do, in virtual time.
"""

from __future__ import annotations

import attrs
import pytest

from image.labs import program_loads, sandboxed_program
from kernel import Kernel, KernelConfig, Message
from kernel.errors import SyscallError
from kernel.programs import ProgramTable
from kernel.traps import Call, NBRecv, Sleep

#: Virtual time a scenario may take: a few Calls take microseconds, so only a
#: bank that computes or sleeps forever reaches it.
SCENARIO_NS = 10_000_000_000


@attrs.frozen
class Outcome:
    answers: dict[str, list[tuple]]  # client -> ("ok", 5), ("error", ...) or ("errno", "ECAP")
    bank_status: int | None  # the bank's exit status; None: still running
    killed: list[str]  # dmesg lines of tasks killed


def student_code_loads(lab_file):
    """Checked once, before any test: the bank loads in its sandbox."""
    return program_loads(lab_file, "bank")


def client(script, answers):
    """A program that runs `script`: ("call", label, payload), ("recv",) or ("sleep", us)."""

    def run(proc):
        cap = proc.caps["bank"]
        for step in script:
            try:
                if step[0] == "sleep":
                    yield Sleep(step[1])
                elif step[0] == "recv":
                    yield NBRecv(cap)
                    answers.append(("received",))
                else:
                    r = yield Call(cap, Message(step[1], step[2]))
                    answers.append((r.msg.label, r.msg.payload))
            except SyscallError as exc:
                answers.append(("errno", exc.errno))

    return run


def run_bank(lab_file, alice, bob) -> Outcome:
    answers = {"alice": [], "bob": []}
    programs = ProgramTable()
    programs.register("alice", client(alice, answers["alice"]))
    programs.register("bob", client(bob, answers["bob"]))
    k = Kernel(KernelConfig(cpus=1, gpu=None), programs=programs).boot()
    try:
        pid = k.spawn(sandboxed_program(lab_file, "bank"), ("alice", "bob"), name="bank")
        k.run(until=k.loop.now_ns + SCENARIO_NS)
        killed = [line[line.index("killed") :] for line in k.log.lines() if "killed " in line]
        status = k.exit_codes.get(pid)
        return Outcome(answers, status, killed)
    finally:
        k.shutdown()


def check(outcome: Outcome, who: str, expected: list[tuple]) -> None:
    got = outcome.answers[who]
    why = f"; {outcome.killed[0]}" if outcome.killed else ""
    assert got == expected, f"{who} was answered {got}, expected {expected}{why}"


def deposit(n):
    return ("call", "deposit", n)


BALANCE = ("call", "balance", None)
CLOSE = ("call", "close", None)


# -- the graded tests ------------------------------------------------------------------------


@pytest.mark.points(15)
def test_a_client_is_answered_each_call(lab_file):
    """a client gets an answer to each of its Calls"""
    outcome = run_bank(lab_file, [deposit(5), BALANCE, CLOSE], [CLOSE])
    check(outcome, "alice", [("ok", 5), ("ok", 5), ("closed", 5)])


@pytest.mark.points(20)
def test_each_client_has_its_own_account_found_by_its_badge(lab_file):
    """each client has its own account, found by its badge"""
    outcome = run_bank(
        lab_file,
        [deposit(5), deposit(7), BALANCE, CLOSE],
        [deposit(100), BALANCE, CLOSE],
    )
    check(outcome, "alice", [("ok", 5), ("ok", 12), ("ok", 12), ("closed", 12)])
    check(outcome, "bob", [("ok", 100), ("ok", 100), ("closed", 100)])


@pytest.mark.points(10)
def test_a_client_cannot_receive_on_the_bank_endpoint(lab_file):
    """a client's cap only sends: it cannot receive the bank's messages"""
    outcome = run_bank(lab_file, [CLOSE], [("recv",), CLOSE])
    check(outcome, "bob", [("errno", "ECAP"), ("closed", 0)])


@pytest.mark.points(25)
def test_a_closed_client_cannot_call_again_and_the_other_is_served(lab_file):
    """a client that closed cannot call again; the other is still served"""
    outcome = run_bank(
        lab_file,
        [("sleep", 1000), deposit(2), CLOSE],
        [deposit(3), CLOSE, deposit(1)],
    )
    check(outcome, "bob", [("ok", 3), ("closed", 3), ("errno", "ECAP")])
    check(outcome, "alice", [("ok", 2), ("closed", 2)])


@pytest.mark.points(15)
def test_a_bad_request_gets_an_error_and_the_bank_serves_on(lab_file):
    """a bad request is answered with an error, and the bank serves on"""
    outcome = run_bank(lab_file, [("call", "withdraw", 3), deposit(-4), deposit(4), CLOSE], [CLOSE])
    labels = [answer[0] for answer in outcome.answers["alice"]]
    check(outcome, "alice", [*outcome.answers["alice"][:2], ("ok", 4), ("closed", 4)])
    assert labels[:2] == ["error", "error"], f"alice was answered {labels[:2]}, not two errors"


@pytest.mark.points(15)
def test_the_bank_exits_cleanly_once_both_clients_closed(lab_file):
    """the bank exits with status 0 once both clients closed, and nothing is killed"""
    outcome = run_bank(lab_file, [CLOSE], [deposit(1), CLOSE])
    assert not outcome.killed, outcome.killed[0]
    assert outcome.bank_status == 0, f"the bank's exit status is {outcome.bank_status}, not 0"
