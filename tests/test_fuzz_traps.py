"""Fuzzing the trap interface: random trap sequences from several tasks.

Properties: the kernel never crashes, and every message sent is received
(its sender's trap returned, or a receiver saw it — a receiver may be killed
between the two), returned as an error to its sender, still waiting in an
endpoint with its sender blocked, or withdrawn because its sender was killed
while sending.  Nothing disappears.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kernel import Kernel, Message
from kernel.errors import SyscallError
from kernel.task import State
from kernel.traps import (
    Call,
    Compute,
    Copy,
    Delete,
    Kill,
    Mint,
    NBRecv,
    NBSend,
    NewEndpoint,
    NewNotification,
    Poll,
    Recv,
    Reply,
    Revoke,
    Send,
    Signal,
    Sleep,
    Spawn,
    Yield,
)

OPS = ["send", "nbsend", "call", "recv", "nbrecv", "reply", "compute", "sleep", "signal", "poll",
       "yield", "mint", "copy", "delete", "revoke", "kill", "garbage", "badslot", "exit"]  # fmt: skip

op = st.tuples(st.sampled_from(OPS), st.integers(0, 3))
programs = st.lists(st.lists(op, max_size=14), min_size=2, max_size=4)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs=programs, seed=st.integers(0, 3))
def test_random_trap_sequences_never_crash_the_kernel_and_lose_no_message(programs, seed):
    k = Kernel(seed=seed, cpus=2)
    sent: dict[int, int] = {}  # message id -> sender pid
    received: set[int] = set()
    errored: set[int] = set()
    delivered: set[int] = set()  # the sender's trap returned: a receiver took it
    in_flight: dict[int, int] = {}  # pid -> id of the message it is sending now
    pids: list[int] = []
    counter = iter(range(1, 1_000_000))

    def worker(script):
        def program(proc):
            eps = [proc.caps["ep0"], proc.caps["ep1"]]
            ntfn = proc.caps["ntfn"]
            last_reply = None
            extra: list[int] = []
            for name, arg in script:
                ep = eps[arg % 2]
                try:
                    if name in ("send", "nbsend", "call"):
                        mid = next(counter)
                        sent[mid] = proc.pid
                        in_flight[proc.pid] = mid
                        trap = {"send": Send, "nbsend": NBSend, "call": Call}[name]
                        try:
                            r = yield trap(ep, Message("m", mid))
                            delivered.add(mid)  # the rendezvous happened
                        except SyscallError:
                            if mid not in received:  # else the Call's *reply* failed
                                errored.add(mid)
                            raise
                        finally:
                            in_flight.pop(proc.pid, None)
                        del r
                    elif name in ("recv", "nbrecv"):
                        r = yield (Recv(ep) if name == "recv" else NBRecv(ep))
                        if r is not None and r.msg.label == "m":
                            received.add(r.msg.payload)
                            last_reply = r.reply
                    elif name == "reply" and last_reply is not None:
                        yield Reply(last_reply, Message("r"))
                        last_reply = None
                    elif name == "compute":
                        yield Compute(arg * 10)
                    elif name == "sleep":
                        yield Sleep(arg * 10)
                    elif name == "signal":
                        yield Signal(ntfn)
                    elif name == "poll":
                        yield Poll(ntfn)
                    elif name == "yield":
                        yield Yield()
                    elif name == "mint":
                        extra.append((yield Mint(ep, 2, badge=arg)))
                    elif name == "copy":
                        extra.append((yield Copy(ep)))
                    elif name == "delete" and extra:
                        yield Delete(extra.pop())
                    elif name == "revoke":
                        yield Revoke(ep)
                    elif name == "kill" and len(pids) > arg:
                        yield Kill(pids[arg])
                    elif name == "garbage":
                        yield [object(), 42, "trap", Message("x")][arg]
                    elif name == "badslot":
                        yield Send(1000 + arg, Message("x"))
                    elif name == "exit":
                        return arg
                except SyscallError:
                    continue
            return 0

        return program

    def parent(proc):
        ep0 = yield NewEndpoint()
        ep1 = yield NewEndpoint()
        ntfn = yield NewNotification()
        for script in programs:
            pids.append((yield Spawn(worker(script), caps={"ep0": ep0, "ep1": ep1, "ntfn": ntfn})))
        yield Sleep(1_000_000)  # keep the original caps alive while the workers run

    k.spawn(parent)
    k.run(until=5_000_000_000)

    assert not k.halted
    assert received.isdisjoint(errored) and delivered.isdisjoint(errored)
    blocked_in_send = {
        pid: mid
        for pid, mid in in_flight.items()
        if pid in k.tasks and k.tasks[pid].state is State.SEND
    }
    for mid, pid in sent.items():
        if mid in received or mid in errored or mid in delivered:
            continue
        if blocked_in_send.get(pid) == mid:
            continue  # still waiting in an endpoint: not lost
        # Otherwise its sender must have been killed while sending.
        assert pid not in k.tasks, f"message {mid} from live pid {pid} vanished"
        assert any(r["pid"] == pid for r in k.log.find("killed")), f"message {mid} vanished"
    k.shutdown()
