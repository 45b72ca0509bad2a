"""Multi-Instance GPU: static partitions at GPC granularity (`drivers/vgpu/policies`).

An A100 offers seven compute slices; a slice is a GPC's worth of SMs (14 SMs,
7 TPCs), so a whole-GPU instance has 98 of the 108 SMs and the rest stay
dark.  Here a slice is ``n_tpcs // 7`` TPCs.  Each tenant gets a contiguous
instance of `slices` slices (from its `quota` share by largest remainder,
at least one each); its kernels run only there.  Memory bandwidth is not
partitioned: the engine has one memory system (a real 4g instance also gets
4 of the 8 memory slices).

Creating the instances on a running device needs them idle: launches
stop, the running atoms drain, then the GPU is unavailable for
`reconfigure_ns` before the new layout serves the held kernels.  Its
default, 1 s, is unsourced: NVIDIA's MIG user guide requires the GPU
instances to be idle to be destroyed and created but gives no duration,
and no measurement was found to cite (docs/policy-audit.md).  That is the cost of switching to MIG while the
device runs (an `insmod gpu_mig`, a `reload` with other slices, the booted
driver's streams changing), unless the policy in charge is MIG with the
same layout.
"""

from __future__ import annotations

import numpy as np

from drivers.vgpu.errors import InvalidArgument
from drivers.vgpu.lithos.tpcs import largest_remainder
from drivers.vgpu.sharing.compiled import (
    D_NOW,
    D_NSTREAMS,
    MAX_STREAMS,
    POLICY_TIMERS,
    ST_INFLIGHT,
    STATIC_FIELDS,
    Pol,
    compiled_fn,
    kernel_pending,
    named_state,
    new_state,
    policy_call_at,
    state_of,
    state_values,
    static_kernel_ready,
    static_launch,
)
from drivers.vgpu.sharing.policy import PRIO_NORMAL, SharingPolicy, microseconds, number_list

MIG_SLICES = 7


def mig_layout(slices: list[int], n_tpcs: int) -> list[int]:
    """Contiguous masks of `slices` GPC slices each, from TPC 0."""
    if sum(slices) > MIG_SLICES:
        raise InvalidArgument(f"mig: {sum(slices)} slices asked, the GPU has {MIG_SLICES}")
    if any(n < 1 for n in slices):
        raise InvalidArgument(f"mig: every instance needs at least one slice, got {slices}")
    per_slice = n_tpcs // MIG_SLICES
    if per_slice < 1:
        raise InvalidArgument(f"mig: a device of {n_tpcs} TPCs has no GPC slices")
    masks, first = [], 0
    for n in slices:
        width = n * per_slice
        masks.append(((1 << width) - 1) << first)
        first += width
    return masks


class Mig(SharingPolicy):
    name = "mig"
    summary = (
        "MIG: static GPC-aligned partitions (slices per tenant, comma-separated; empty: by quota)."
    )
    PARAMETERS = {
        "slices": number_list("slices", int),
        "reconfigure_us": microseconds("reconfigure_ns", minimum=0),
    }

    def __init__(self, slices: tuple[int, ...] | None = None, reconfigure_ns: int = 1_000_000_000):
        if reconfigure_ns < 0:
            raise ValueError(
                f"mig: the reconfiguration must take 0 or more, got {reconfigure_ns} ns"
            )
        self.slices = slices
        self.reconfigure_ns = reconfigure_ns

    def _layout(self) -> tuple[list[int], list[int]]:
        """The instances' slices and masks, from the parameters or the quotas."""
        sim = self.sim
        if len(sim.streams) > MIG_SLICES:
            raise InvalidArgument(
                f"mig: at most {MIG_SLICES} instances, got {len(sim.streams)} tenants"
            )
        slices = (
            list(self.slices)
            if self.slices is not None
            else largest_remainder([s.quota for s in sim.streams], MIG_SLICES)
        )
        if len(slices) != len(sim.streams):
            raise InvalidArgument(f"mig: {len(slices)} instances for {len(sim.streams)} tenants")
        return slices, mig_layout(slices, sim.n_tpcs)

    def _takes_over(self) -> bool:
        """Taking over a running device (a policy switch, or the driver's
        streams changing) creates the instances: unless the policy in charge
        already runs this very layout, the device drains and is down first."""
        old = self.sim.policy
        if self.sim.running and old is not self:
            return not (isinstance(old, Mig) and old.layout == self.layout)
        return False

    def compiled_setup(self, sim) -> Pol:
        """The instances' masks, and a drain first if taking over."""
        self.sim = sim
        self.layout, masks = self._layout()
        return new_state(
            STATE,
            0,
            masks=masks,
            priorities=[PRIO_NORMAL] * len(masks),
            reconfigure_ns=self.reconfigure_ns,
            take_over=int(self._takes_over()),
        )

    def compiled_report(self, pol: Pol) -> dict:
        st = state_values(pol, STATE)
        masks = st["masks"][: len(self.layout)]
        return {"slices": self.layout, "tpcs": [int(m).bit_count() for m in masks],
                "reconfigurations": int(st["reconfigurations"])}  # fmt: skip


# The named state: the static policy's (each stream's mask and priority),
# then MIG's own.
STATE = named_state(
    **STATIC_FIELDS,
    reconfigure_ns=np.int64,
    phase=np.int64,  # SERVING, DRAINING or DOWN
    reconfigurations=np.int64,
    take_over=np.int64,  # 1: setup drains the device first
    n_held=np.int64,
    held=(np.int64, MAX_STREAMS),  # the streams whose kernels wait for the new layout
)
state = state_of(STATE)
SERVING, DRAINING, DOWN = range(3)
MIG_RESUME = POLICY_TIMERS


@compiled_fn
def compiled_setup(d, p):
    st = state(p)
    if st["take_over"]:
        st["phase"] = DRAINING
        _check_drained(d, p)


@compiled_fn
def compiled_kernel_ready(d, p, s):
    st = state(p)
    if st["phase"] == SERVING:
        static_kernel_ready(d, p, s)
    else:
        st["held"][st["n_held"]] = s
        st["n_held"] += 1


@compiled_fn
def compiled_atom_done(d, p, s, atom, kernel_done):
    if state(p)["phase"] == DRAINING:
        _check_drained(d, p)


@compiled_fn
def _check_drained(d, p):
    for s in range(d.sc[D_NSTREAMS]):
        if d.st[ST_INFLIGHT, s] != 0:
            return
    st = state(p)
    st["phase"] = DOWN
    policy_call_at(d, d.sc[D_NOW] + st["reconfigure_ns"], MIG_RESUME, 0)


@compiled_fn
def compiled_timer(d, p, kind, arg):
    if kind == MIG_RESUME:
        st = state(p)
        st["phase"] = SERVING
        st["reconfigurations"] += 1
        held = st["n_held"]
        st["n_held"] = 0
        for k in range(held):
            s = st["held"][k]
            if kernel_pending(d, s):
                static_launch(d, p, s, -1)
