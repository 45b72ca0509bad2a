"""Lab ipc, reference solution: a bank server that knows its clients by their badges.

The bank makes one endpoint and mints a write-only cap to it for each
client, badged 1 and 2, so that every message tells which client sent it
(seL4's badges; the clients cannot forge them).  It serves Calls with
ReplyRecv, one trap per request.  A client that closes its account loses
its cap: the bank revokes it *before* it replies, so the client cannot call
in between.  Once both have closed, the bank exits.
"""

from kernel import Message
from kernel.caps import Rights
from kernel.traps import Mint, NewEndpoint, NewReply, Recv, Reply, ReplyRecv, Revoke, Spawn


def bank(proc):
    """The bank: `proc.argv` names its two clients."""
    ep = yield NewEndpoint()
    minted = {}  # badge -> the slot of the cap minted for that client
    balances = {}  # badge -> balance
    for badge, client in enumerate(proc.argv[:2], start=1):
        minted[badge] = yield Mint(ep, Rights.WRITE, badge)
        balances[badge] = 0
        yield Spawn(client, caps={"bank": minted[badge]})
    reply = yield NewReply()
    request = yield Recv(ep, reply)
    while True:
        badge, msg = request.badge, request.msg
        if badge not in balances:
            answer = Message("error", "unknown client")
        elif msg.label == "close":
            yield Revoke(minted.pop(badge))
            answer = Message("closed", balances.pop(badge))
        else:
            answer = serve(balances, badge, msg)
        if not balances:
            yield Reply(reply, answer)
            return
        request = yield ReplyRecv(ep, reply, answer)


def serve(balances, badge, msg):
    """The answer to a deposit or a balance request of client `badge`."""
    if msg.label == "balance":
        return Message("ok", balances[badge])
    amount = msg.payload
    if msg.label == "deposit" and type(amount) is int and amount > 0:
        balances[badge] += amount
        return Message("ok", balances[badge])
    return Message("error", f"cannot {msg.label} {amount!r}")
