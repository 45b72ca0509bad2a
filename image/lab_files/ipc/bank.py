"""Lab ipc: a bank server that knows its clients by their badges.

Edit this file.  `malv lab grade ipc` spawns `bank` with the names of two
client programs as its arguments and checks what the clients are answered.
See README-ipc.md for the protocol and hints.
"""

from kernel import Message  # noqa: F401  (you will need these)
from kernel.caps import Rights  # noqa: F401
from kernel.traps import Mint, NewEndpoint, NewReply, Recv, Reply, ReplyRecv, Revoke, Spawn  # noqa: F401


def bank(proc):
    """The bank: `proc.argv` names its two clients."""
    raise NotImplementedError("lab ipc: write the bank")
    yield  # a program is a generator function: this makes bank one
