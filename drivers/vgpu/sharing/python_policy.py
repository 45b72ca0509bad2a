"""A researcher's Python policy in the one loop (`drivers/vgpu/sharing`).

A `SharingPolicy` written in plain Python, without compiled callbacks (a
module hot-loaded with insmod, a test's own), runs in the same loop as the
shipped ones, interpreted: the loop's dispatch (dispatch.py) calls the
functions below for policy id 0, and they call the policy's methods with
`Stream` views of the loop's tables (sim.py).  It is slower than a compiled
policy, but there is one loop.  In the compiled loop these calls cannot
happen (a run with a Python policy in charge is interpreted); there they
compile to an error.
"""

from __future__ import annotations

from typing import Any

from numba.extending import overload

from drivers.vgpu.sharing.compiled import P_ID

#: In a Python policy's `Pol.i`: the handle of its run in `RUNS`.
P_HANDLE = P_ID + 1
#: The Python policies in charge of a run: handle -> (its simulation, the policy).
RUNS: dict[int, tuple[Any, Any]] = {}


def _policy_and_stream(p, s):
    sim, policy = RUNS[int(p.i[P_HANDLE])]
    return policy, sim.streams[int(s)]


def kernel_ready(d, p, s):
    policy, stream = _policy_and_stream(p, s)
    policy.kernel_ready(stream)


def atom_done(d, p, s, atom, kernel_done):
    policy, stream = _policy_and_stream(p, s)
    policy.atom_done(stream, int(atom), bool(kernel_done))


def stream_idle(d, p, s):
    policy, stream = _policy_and_stream(p, s)
    policy.stream_idle(stream)


def timer(d, p, kind, arg):
    """A Python policy's timers are Python timers (`Simulation.call_at`): none come here."""


def setup(d, p):
    """`SharingPolicy.attach` ran before the policy took over (`LoopRun.switch`)."""


def detach(d, p):
    RUNS[int(p.i[P_HANDLE])][1].detach()


def _not_compiled(*args):
    def impl(*args):
        raise RuntimeError("a Python policy runs only in the interpreted loop")

    return impl


for _hook in (kernel_ready, atom_done, stream_idle, timer, setup, detach):
    overload(_hook, jit_options={"_nrt": False})(_not_compiled)
