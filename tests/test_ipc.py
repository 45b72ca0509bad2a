"""seL4-style IPC: endpoints, Call/Reply, notifications, and failures."""

from __future__ import annotations

from kernel import Kernel, Message, Rights
from kernel.errors import CapabilityError, InvalidArgument, PeerDied, WouldBlock
from kernel.traps import (
    BindNotification,
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
    NewReply,
    Poll,
    Recv,
    Reply,
    ReplyRecv,
    Send,
    Signal,
    Spawn,
    Wait,
)


def run(k: Kernel, *programs):
    pids = [k.spawn(p) for p in programs]
    k.run()
    return pids


def test_send_meets_recv_and_carries_the_badge(bare_kernel: Kernel):
    got = []

    def parent(proc):
        ep = yield NewEndpoint()
        badged = yield Mint(ep, Rights.WRITE, badge=42)
        yield Spawn(receiver, caps={"ep": ep})
        yield Send(badged, Message("hello", (1, 2)))

    def receiver(proc):
        r = yield Recv(proc.caps["ep"])
        got.append((r.msg.label, r.msg.payload, r.badge, r.reply))

    run(bare_kernel, parent)
    assert got == [("hello", (1, 2), 42, None)]


def test_call_gets_exactly_one_reply(bare_kernel: Kernel):
    answers, errors = [], []

    def client(proc):
        ep = yield NewEndpoint()
        yield Spawn(server, caps={"ep": ep})
        for i in range(3):
            r = yield Call(ep, Message("square", i))
            answers.append(r.msg.payload)

    def server(proc):
        ep = proc.caps["ep"]
        for _ in range(3):
            r = yield Recv(ep)
            yield Reply(r.reply, Message("result", r.msg.payload**2))
            try:
                yield Reply(r.reply, Message("again"))  # the reply cap was one-shot
            except CapabilityError:
                errors.append("one-shot")

    run(bare_kernel, client)
    assert answers == [0, 1, 4]
    assert errors == ["one-shot"] * 3


def test_replyrecv_with_a_reusable_reply_object(bare_kernel: Kernel):
    answers = []

    def client(proc):
        ep = yield NewEndpoint()
        yield Spawn(server, caps={"ep": ep})
        for i in range(5):
            answers.append((yield Call(ep, Message("inc", i))).msg.payload)

    def server(proc):
        ep = proc.caps["ep"]
        reply = yield NewReply()
        r = yield Recv(ep, reply)
        while r.msg.payload < 4:
            r = yield ReplyRecv(ep, reply, Message("r", r.msg.payload + 1))
        yield Reply(reply, Message("r", 5))
        try:
            yield Reply(reply, Message("twice"))  # each Call is answered once
        except CapabilityError:
            errors.append("answered")

    errors = []
    run(bare_kernel, client)
    assert answers == [1, 2, 3, 4, 5]
    assert errors == ["answered"]


def test_caller_gets_an_error_when_the_server_dies_holding_its_reply(bare_kernel: Kernel):
    errors = []

    def client(proc):
        ep = yield NewEndpoint()
        yield Spawn(server, caps={"ep": ep})
        try:
            yield Call(ep, Message("ping"))
        except PeerDied:
            errors.append("EPIPE")

    def server(proc):
        yield Recv(proc.caps["ep"])
        raise RuntimeError("server bug")

    run(bare_kernel, client)
    assert errors == ["EPIPE"]


def test_a_blocked_sender_gets_an_error_when_no_receiver_can_exist(bare_kernel: Kernel):
    errors = []

    def parent(proc):
        ep = yield NewEndpoint()
        send_only = yield Copy(ep, Rights.WRITE)
        child = yield Spawn(sender, caps={"ep": send_only})
        yield Compute(10)
        yield Delete(ep)  # the last cap that could receive
        del child

    def sender(proc):
        try:
            yield Send(proc.caps["ep"], Message("lost?"))
        except PeerDied:
            errors.append("returned")

    run(bare_kernel, parent)
    assert errors == ["returned"]


def test_nonblocking_send_and_recv(bare_kernel: Kernel):
    seen = []

    def prog(proc):
        ep = yield NewEndpoint()
        try:
            yield NBSend(ep, Message("x"))
        except WouldBlock:
            seen.append("would-block")
        seen.append((yield NBRecv(ep)))

    run(bare_kernel, prog)
    assert seen == ["would-block", None]


def test_notification_signal_wait_poll(bare_kernel: Kernel):
    seen = []

    def parent(proc):
        n = yield NewNotification()
        b1 = yield Mint(n, Rights.WRITE, badge=0b01)
        b2 = yield Mint(n, Rights.WRITE, badge=0b10)
        seen.append((yield Poll(n)))
        yield Signal(b1)
        yield Signal(b2)
        seen.append((yield Wait(n)))
        yield Spawn(signaller, caps={"n": b1})
        seen.append((yield Wait(n)))

    def signaller(proc):
        yield Compute(50)
        yield Signal(proc.caps["n"])

    run(bare_kernel, parent)
    assert seen == [0, 0b11, 0b01]


def test_bound_notification_wakes_recv(bare_kernel: Kernel):
    seen = []

    def server(proc):
        ep = yield NewEndpoint()
        n = yield NewNotification()
        yield BindNotification(n)
        yield Spawn(signaller, caps={"n": n})
        r = yield Recv(ep)
        seen.append((r.msg.label, r.badge))

    def signaller(proc):
        yield Compute(5)
        yield Signal(proc.caps["n"])

    run(bare_kernel, server)
    assert seen == [("notification", 1)]


def test_malformed_message_is_an_error_for_the_sender(bare_kernel: Kernel):
    seen = []

    def prog(proc):
        ep = yield NewEndpoint()
        try:
            yield Send(ep, "not a message")
        except InvalidArgument:
            seen.append("EINVAL")
        try:
            Message("x", [1, 2])  # mutable payloads are refused at construction
        except TypeError:
            seen.append("TypeError")

    run(bare_kernel, prog)
    assert seen == ["EINVAL", "TypeError"]


def test_caps_transfer_through_an_endpoint_with_grant(bare_kernel: Kernel):
    seen = []

    def parent(proc):
        ep = yield NewEndpoint()
        secret = yield NewEndpoint()
        yield Spawn(child, caps={"ep": ep})
        yield Send(ep, Message("take", caps=(secret,)))
        r = yield Recv(secret)
        seen.append(r.msg.label)

    def child(proc):
        r = yield Recv(proc.caps["ep"])
        (slot,) = r.caps
        yield Send(slot, Message("thanks"))

    run(bare_kernel, parent)
    assert seen == ["thanks"]


def test_killing_a_blocked_task_leaves_its_endpoint_usable(bare_kernel: Kernel):
    seen = []

    def parent(proc):
        ep = yield NewEndpoint()
        victim = yield Spawn(waiter, caps={"ep": ep})
        yield Compute(5)
        yield Kill(victim)
        yield Spawn(waiter, caps={"ep": ep}, name="second")
        yield Compute(5)
        yield Send(ep, Message("for the second"))

    def waiter(proc):
        r = yield Recv(proc.caps["ep"])
        seen.append((proc.name, r.msg.label))

    run(bare_kernel, parent)
    assert seen == [("second", "for the second")]
