"""The sharing simulator: tenants' request streams over one virtual GPU (`drivers/vgpu/sharing`).

A *tenant* is an application on the GPU with one CUDA-like stream: a model
whose kernels run in order, one request (an inference, or a training
iteration) after another.  Tenants come in three kinds:

* ``open``: a latency-critical service; requests arrive at given instants
  (Poisson or a trace) and queue while an earlier one runs;
* ``closed``: a job that issues its next request when the last one is done;
* ``be``: a best-effort closed-loop job, whose throughput is what counts.

`Simulation` drives the `Engine` for a `SharingPolicy`.  The engine has no
stream ordering: the simulator makes a stream's next kernel *ready* when the
previous one completes, and the policy decides when, where (TPC mask) and at
which priority its blocks are launched, whole or cut into atoms.  Policies
may hold kernels back and set timers.  The loop is the usual one::

    events = gpu.advance(next timer or arrival)
    completions -> policy.atom_done; a finished kernel makes the next ready
    no completions -> run the timers due now

The device serves equal priorities first launched, first served.  A real
stream is fed by a host thread that enqueues kernels ahead of the GPU,
`HOST_LAUNCH_NS` apart, and the hardware queues see them in that order; so
a policy that passes launches through gives each kernel its host enqueue
time as its dispatch order (`Stream.host_order`).  The GPU never sees a
kernel before its host launched it, so a run of kernels shorter than a
launch is host-bound, and a policy sees the stream between kernels
(`Stream.has_kernel` false) while the next launch is on its way.  How far the host runs
ahead is the tenant's `run_ahead`: 0 for a service or job that waits for
each request's result (it enqueues a request's kernels when the request
starts), or a number of kernels for a job that never waits, as a training
loop or batch job does, held back only by CUDA's queue of pending launches
(`LAUNCH_QUEUE_DEPTH`).  Policies that intercept launches and release them
later (TGS, REEF, Orion, LithOS) launch in their own order: the instant
they release.

A request's latency runs from its arrival (open) or issue (closed, be) to
the completion of its last kernel.  Requests that arrived in the measured
window but are not done at its end count with the latency they have so far:
an overloaded policy cannot hide its queue by leaving it unfinished.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from typing import Any, cast

import attrs
import numpy as np

from drivers.vgpu.engine import Engine
from drivers.vgpu.errors import InvalidArgument
from drivers.vgpu.presets import GpuSpec, get_preset
from drivers.vgpu.sharing.compiled import (
    AT_LAUNCH_NS,
    AT_STOLEN,
    D_NOW,
    ST_HAS_KERNEL,
)
from drivers.vgpu.sharing.epoch_run import LoopRun, TraceAtom
from drivers.vgpu.sharing.policy import SharingPolicy
from drivers.vgpu.sharing.stream import LoopStream, kernel_profile, kernel_sms
from drivers.vgpu.traces import Workload
from drivers.vgpu.work import KernelDesc

TENANT_KINDS = ("open", "closed", "be")
#: Host time to enqueue one kernel launch (PyTorch eager mode: a few us).
HOST_LAUNCH_NS = 5_000
#: Launches CUDA lets a host thread have pending before a launch blocks.
LAUNCH_QUEUE_DEPTH = 1024


def _check_kind(instance, attribute, value) -> None:
    if value not in TENANT_KINDS:
        raise InvalidArgument(
            f"tenant kind must be one of {', '.join(TENANT_KINDS)}, got {value!r}"
        )


def _check_quota(instance, attribute, value) -> None:
    if not 0.0 <= value <= 1.0:
        raise InvalidArgument(f"tenant quota must be a share within [0, 1], got {value!r}")


@attrs.frozen
class Tenant:
    """An application sharing the GPU."""

    name: str
    workload: Workload
    kind: str = attrs.field(validator=_check_kind)
    #: Open loop: request arrival instants, ascending, in ns.
    arrivals_ns: tuple[int, ...] = ()
    #: Share of the device's TPCs: MIG slices, the MPS thread percentage,
    #: the LithOS TPC quota.
    quota: float = attrs.field(default=0.0, validator=_check_quota)
    #: Latency objective of one request, in ns (None: none).
    slo_ns: int | None = None
    #: Kernels the host may enqueue ahead of the GPU across requests; 0: the
    #: host waits for every request's result before starting the next.
    run_ahead: int = attrs.field(default=0, validator=attrs.validators.ge(0))

    @property
    def hp(self) -> bool:
        """High priority: every tenant but the best-effort ones."""
        return self.kind != "be"


class Stream(LoopStream):
    """A tenant's stream: its workload, its counters, and, while the run
    goes, what a policy sees of it (the `Stream` protocol of
    `drivers/vgpu/sharing/policy.py`), read from the loop's tables."""

    def __init__(self, index: int, tenant: Tenant, ctx: int, spec: GpuSpec) -> None:
        self.index = index  # place in the simulation's `streams`
        self.name = tenant.name
        self.ctx = ctx
        self.tenant = tenant
        #: High priority (latency-critical) rather than best effort.
        self.hp = tenant.hp
        #: Share of the device's TPCs: MIG slices, the MPS thread percentage,
        #: the LithOS TPC quota (0: none set).
        self.quota = tenant.quota
        self.kernels = tenant.workload.kernels
        self.n_kernels = len(self.kernels)
        #: Its kernels' slots in a policy's per-(stream, kernel) tables: one a position.
        self.kernel_slots = self.n_kernels
        n = spec.n_tpcs
        self.iso_ns = [k.isolated_duration_ns(n) for k in self.kernels]
        self.sms = [kernel_sms(k, spec) for k in self.kernels]
        self.profiles = [kernel_profile(k) for k in self.kernels]
        #: Isolated time of one whole request on the full GPU.
        self.request_iso_ns = sum(self.iso_ns)
        self.run_ahead = tenant.run_ahead
        self.loop: LoopRun | None = None  # the run's tables, once it starts
        # Counters over the measured window, written back at the end of the run.
        self.latencies_ns: list[int] = []
        self.completed = 0
        self.kernels_done = 0
        self.busy_tpc_ns = 0.0
        self.alloc_tpc_ns = 0
        self.request_ns = 0  # arrival (open) or issue time of the current request
        self.pending: deque[int] = deque()  # arrival times of queued requests
        self.next_arrival = 0  # index into tenant.arrivals_ns

    # -- the `Stream` protocol (the rest is `LoopStream`'s) ---------------------

    @property
    def desc(self) -> KernelDesc | None:
        """The current kernel, None while it is not on the device."""
        return self.kernels[self.pos] if self._row(ST_HAS_KERNEL) else None

    @property
    def kernel_iso_ns(self) -> int:
        return self.iso_ns[self.pos]

    @property
    def kernel_sms(self) -> int:
        return self.sms[self.pos]

    @property
    def kernel_profile(self) -> int:
        return self.profiles[self.pos]

    @property
    def kernel_key(self) -> Hashable:
        return (self.index, self.pos)


@attrs.frozen
class StreamResult:
    name: str
    kind: str
    latencies_ns: tuple[int, ...]
    completed: int
    kernels: int
    busy_tpc_s: float
    alloc_tpc_s: float
    slo_ns: int | None
    request_iso_ns: int
    #: Requests that arrived in the window and were not done at its end (the
    #: backlog a queue that does not drain leaves behind).
    unfinished: int = 0


@attrs.frozen
class RunResult:
    """What one simulated run measured, over the window [warmup, end)."""

    policy: str
    window_ns: int
    energy_j: float
    wall_s: float
    streams: tuple[StreamResult, ...]
    #: Policy-specific figures (predictor mispredictions, clock changes, ...).
    extra: dict[str, Any]
    atoms: tuple[TraceAtom, ...]
    clocks: tuple[tuple[int, int], ...]  # (time, MHz) requests in effect
    #: TPC allocation samples: (time, TPCs per stream).
    allocation: tuple[tuple[int, tuple[int, ...]], ...]

    @property
    def sim_to_wall(self) -> float:
        return self.window_ns / 1e9 / self.wall_s if self.wall_s > 0 else float("inf")


class Simulation:
    """Tenants on one virtual GPU under a sharing policy, in virtual time.

    It runs in the one loop (epoch.py, through `LoopRun`), compiled or
    interpreted; to a policy written in Python it is the `Device` it is in
    charge of (`drivers/vgpu/sharing/policy.py`)."""

    def __init__(
        self,
        tenants: Sequence[Tenant],
        policy: SharingPolicy | None,
        *,
        spec: GpuSpec | str = "a100",
        duration_ns: int,
        warmup_ns: int = 0,
        trace_window_ns: tuple[int, int] | None = None,
        sample_ns: int | None = None,
        record_blocks: bool = False,
        compiled: bool = True,
        engine_mode: str = "block",
    ) -> None:
        """`compiled`: run the loop compiled (else interpreted, step by step;
        the results are the same).  A researcher's Python policy, and a
        device wider than 63 TPCs, run interpreted.
        `engine_mode`: "block" (block-exact) or "wave" (see engine.py).
        `record_blocks` keeps the engine's block log (for tests);
        `trace_window_ns`: record the atoms launched within it (for a trace);
        `sample_ns`: sample each tenant's TPCs in use this often (within the
        trace window, if there is one).  `policy` may be None until `run`, for
        `follow_advisors` to choose."""
        if not tenants:
            raise InvalidArgument("a simulation needs at least one tenant")
        names = [t.name for t in tenants]
        if len(set(names)) != len(names):
            raise InvalidArgument(f"tenant names must be distinct, got {names}")
        if not 0 <= warmup_ns < duration_ns:
            raise InvalidArgument(
                f"warm-up {warmup_ns} ns must be within the duration {duration_ns} ns"
            )
        self.spec = spec if isinstance(spec, GpuSpec) else get_preset(spec)
        self.gpu = Engine(
            self.spec, dispatch_order="launch", record_blocks=record_blocks, mode=engine_mode
        )
        self.n_tpcs = self.spec.n_tpcs
        self.full_mask = self.spec.all_tpcs_mask
        #: The policy in charge: None only until a run or `follow_advisors` sets one.
        self.policy = cast(SharingPolicy, policy)
        self.streams = [
            Stream(i, t, self.gpu.create_context(), self.spec) for i, t in enumerate(tenants)
        ]
        self.duration_ns = duration_ns
        self.warmup_ns = warmup_ns
        self.trace_window_ns = trace_window_ns
        self.sample_ns = sample_ns
        self._energy_at_warmup = 0.0
        self.allocation: list[tuple[int, tuple[int, ...]]] = []
        self.use_compiled = compiled
        self.running = False
        #: The run's tables, from its start.
        self.loop: LoopRun | None = None
        self._early: list[tuple[int, Callable, tuple, Any]] = []  # timers set before the run
        #: Clock requests before the run: (effective time, MHz).
        self.early_clocks: list[tuple[int, int]] = []

    @property
    def now_ns(self) -> int:
        """Virtual time."""
        return 0 if self.loop is None else int(self.loop.dev.sc[D_NOW])

    @property
    def compiled(self) -> LoopRun | None:
        """The run, if its loop runs compiled now (None: interpreted, or not started)."""
        return self.loop if self.loop is not None and not self.loop.interpreted else None

    # -- the run -------------------------------------------------------------

    def run(self) -> RunResult:
        if self.policy is None:
            raise InvalidArgument("a simulation needs a policy to run")
        wall0 = time.perf_counter()
        self.running = True
        loop = LoopRun(self, self.policy)  # it becomes `self.loop`
        try:
            for t_ns, fn, args, owner in self._early:
                loop.call_at(t_ns, fn, args, owner)
            self._early.clear()
            loop.start()
            if self.warmup_ns > 0:
                self.call_at(self.warmup_ns, self._mark_warmup)
            if self.sample_ns:
                window = self.trace_window_ns
                self.call_at(window[0] if window else 0, self._sample)
            loop.advance(self.duration_ns)
            self.running = False
            loop.write_back_counters()
            return self._result(time.perf_counter() - wall0)
        finally:
            loop.finish()

    # -- the `Device` a Python policy is in charge of ---------------------------

    def call_at(self, t_ns: int, fn: Callable, *args: Any, owner: Any = None) -> None:
        """Run ``fn(*args)`` at virtual time `t_ns` (not before now).

        Timers whose `owner` is a policy no longer in charge are dropped."""
        if self.loop is None:
            self._early.append((t_ns, fn, args, owner))
        else:
            self.loop.call_at(t_ns, fn, args, owner)

    def launch(
        self,
        s: Stream,
        blocks: int,
        mask: int,
        priority: int,
        *,
        stolen: bool = False,
        order: int | None = None,
    ) -> int:
        """Launch the next `blocks` blocks of `s`'s current kernel on `mask`; return the atom id.

        `order` is the atom's place among equal priorities (default: now).
        A context's work queue is first in, first out."""
        assert self.loop is not None, "launch while the simulation runs"
        return self.loop.launch(s.index, blocks, mask, priority, stolen, order)

    @property
    def atom_launch_ns(self) -> Any:
        """Per atom id: when it was launched."""
        assert self.loop is not None
        return self.loop.dev.atoms[AT_LAUNCH_NS]

    @property
    def atom_stolen(self) -> Any:
        """Per atom id: whether it ran on stolen TPCs."""
        assert self.loop is not None
        return self.loop.dev.atoms[AT_STOLEN]

    @property
    def atom_owner(self) -> list[Stream]:
        """Per atom id launched so far: its stream."""
        return [self.streams[row[0]] for row in self.atom_log()]

    def set_policy(self, policy: SharingPolicy) -> None:
        """Switch policies while running: held kernels are offered to the new one.

        If the new policy's setup raises, the old one stays in charge."""
        assert self.loop is not None, "set_policy while the simulation runs"
        self.loop.switch(policy)
        self.policy = policy

    def set_clock(self, clock_mhz: int) -> int:
        """Request a clock; returns when it takes effect."""
        if self.loop is None:  # before the run: the engine takes it, the run logs it
            effective = self.gpu.set_clock(clock_mhz)
            self.early_clocks.append((effective, clock_mhz))
            return effective
        return self.loop.set_clock(clock_mhz)

    def atom_log(self) -> list[tuple[int, ...]]:
        """Every atom launched: stream, launch, done (-1: not yet), first
        block, end block, mask, priority and dispatch order (for tests)."""
        return [] if self.loop is None else self.loop.atom_log()

    def _mark_warmup(self) -> None:
        self._energy_at_warmup = self.gpu.energy_j

    def _sample(self) -> None:
        assert self.loop is not None
        counts = [int(m).bit_count() for m in self.loop.inflight_masks()]
        now = self.now_ns
        self.allocation.append((now, tuple(counts)))
        window = self.trace_window_ns
        sample_ns = self.sample_ns
        assert sample_ns  # sampling runs only with a sample period
        if window is None or now + sample_ns < window[1]:
            self.call_at(now + sample_ns, self._sample)

    # -- results -------------------------------------------------------------

    def _result(self, wall_s: float) -> RunResult:
        assert self.loop is not None
        end = self.duration_ns
        streams = []
        for s in self.streams:
            latencies = list(s.latencies_ns)
            # Requests still waiting or running at the end count with the
            # latency they have so far (see the module docstring).
            unfinished = list(s.pending)
            if s.active and s.tenant.kind == "open":
                unfinished.append(s.request_ns)
            backlog = [end - t for t in unfinished if t >= self.warmup_ns]
            latencies += backlog
            streams.append(
                StreamResult(
                    name=s.name,
                    kind=s.tenant.kind,
                    latencies_ns=tuple(latencies),
                    completed=s.completed,
                    kernels=s.kernels_done,
                    busy_tpc_s=s.busy_tpc_ns / 1e9,
                    alloc_tpc_s=s.alloc_tpc_ns / 1e9,
                    slo_ns=s.tenant.slo_ns,
                    request_iso_ns=s.request_iso_ns,
                    unfinished=len(backlog),
                )
            )
        return RunResult(
            policy=self.policy.label,
            window_ns=end - self.warmup_ns,
            energy_j=self.gpu.energy_j - self._energy_at_warmup,
            wall_s=wall_s,
            streams=tuple(streams),
            extra=self.loop.report(),
            atoms=self.loop.trace_atoms(),
            clocks=tuple(self.loop.clock_log()),
            allocation=tuple(self.allocation),
        )


def percentile_ns(latencies: Sequence[int], q: float) -> float:
    """The q-th percentile (0-100) of `latencies`, NaN when there are none."""
    if not latencies:
        return float("nan")
    return float(np.percentile(np.asarray(latencies, dtype=np.float64), q))
