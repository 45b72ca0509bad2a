"""The sharing-policy interface and what the policies share (`drivers/vgpu/policies`).

A policy is a small table of optional callbacks, in the spirit of the MLaaS
advisors: the simulator calls

* `kernel_ready(s)` when stream `s` has a kernel whose blocks are not all
  launched (a new kernel, or the rest of one after a policy switch);
* `atom_done(s, atom, kernel_done)` when one of its atoms completed;
* `stream_idle(s)` when an open-loop stream has no request left;

and the policy answers by launching atoms (`sim.launch`), holding kernels in
its own queues, and setting timers (`call_at`).  The default passes each
kernel through whole, on `mask(s)` at `priority(s)`, in the order the host
enqueued it: that is MPS.  Policies that hold kernels release them with
`launch_whole`, in the order of their release.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from drivers.vgpu.policies.device import PRIO_NORMAL

if TYPE_CHECKING:
    from drivers.vgpu.policies.device import DeviceStream as Stream
    from drivers.vgpu.policies.device import SharedDevice as Simulation


class SharingPolicy:
    """Base of the sharing policies: MPS-like whole-kernel launches unless overridden."""

    name: ClassVar[str] = ""
    sim: Simulation

    @property
    def label(self) -> str:
        """The name results are filed under (variants add a suffix)."""
        return self.name

    def attach(self, sim: Simulation) -> None:
        self.sim = sim
        self.setup()

    def setup(self) -> None:
        """Called once the simulation and its streams exist."""

    def detach(self) -> None:
        """The policy is switched out: held kernels go back to their streams."""

    def call_at(self, t_ns: int, fn, *args: Any) -> None:
        self.sim.call_at(t_ns, fn, *args, owner=self)

    # -- callbacks -----------------------------------------------------------

    def kernel_ready(self, s: Stream) -> None:
        self.launch_whole(s, s.host_order(self.sim.now_ns))

    def launch_whole(self, s: Stream, order: int | None = None) -> int:
        """Launch the rest of `s`'s current kernel as one atom."""
        return self.sim.launch(s, s.remaining, self.mask(s), self.priority(s), order=order)

    def atom_done(self, s: Stream, atom: int, kernel_done: bool) -> None:
        """An atom of `s` completed (its TPCs are free, not yet re-dispatched)."""

    def stream_idle(self, s: Stream) -> None:
        """Open-loop stream `s` finished its requests and has none queued."""

    def report(self) -> dict[str, Any]:
        """Policy-specific figures for the results."""
        return {}

    # -- defaults ------------------------------------------------------------

    def mask(self, s: Stream) -> int:
        return self.sim.full_mask

    def priority(self, s: Stream) -> int:
        return PRIO_NORMAL


def range_mask(first: int, count: int, n_tpcs: int) -> int:
    """`count` TPCs from `first` on, wrapping past the last TPC."""
    if count >= n_tpcs:
        return (1 << n_tpcs) - 1
    mask = 0
    for i in range(count):
        mask |= 1 << ((first + i) % n_tpcs)
    return mask
