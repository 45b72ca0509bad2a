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
from collections.abc import Sequence
from typing import Any

import attrs
import numpy as np

from drivers.vgpu.errors import InvalidArgument
from drivers.vgpu.policies.base import SharingPolicy
from drivers.vgpu.presets import GpuSpec
from drivers.vgpu.sharing.device import (
    DeviceStream,
    SharedDevice,
    TraceAtom,
    kernel_profile,
    kernel_sms,
)
from drivers.vgpu.sharing.epoch_run import CompiledRun, compilable
from drivers.vgpu.traces import Workload

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


class Stream(DeviceStream):
    """A tenant's stream at run time: its current request and kernel, and its counters."""

    def __init__(self, index: int, tenant: Tenant, ctx: int, spec: GpuSpec) -> None:
        super().__init__(index, tenant.name, ctx, hp=tenant.hp, quota=tenant.quota)
        self.tenant = tenant
        self.kernels = tenant.workload.kernels
        self.n_kernels = len(self.kernels)
        n = spec.n_tpcs
        self.iso_ns = [k.isolated_duration_ns(n) for k in self.kernels]
        self.sms = [kernel_sms(k, spec) for k in self.kernels]
        self.profiles = [kernel_profile(k) for k in self.kernels]
        self.request_iso_ns = sum(self.iso_ns)
        self.request_ns = 0  # arrival (open) or issue time of the current request
        self.run_ahead = tenant.run_ahead
        # Completion times of the last `run_ahead` kernels: the host may enqueue
        # kernel g once kernel g - run_ahead is done.
        self.done_ns: deque[int] = deque(maxlen=max(1, tenant.run_ahead))
        self.pending: deque[int] = deque()  # arrival times of queued requests
        self.next_arrival = 0  # index into tenant.arrivals_ns
        # Counters over the measured window.
        self.latencies_ns: list[int] = []
        self.completed = 0
        self.kernels_done = 0
        self.busy_tpc_ns = 0.0
        self.alloc_tpc_ns = 0


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


class Simulation(SharedDevice[Stream]):
    """Tenants on one virtual GPU under a sharing policy, in virtual time."""

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
        """`compiled`: run in the compiled epoch loop when the policy has a
        compiled form (epoch.py), else in Python; the results are the same.
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
        super().__init__(
            spec, policy, record_blocks=record_blocks, trace_window_ns=trace_window_ns,
            engine_mode=engine_mode,
        )  # fmt: skip
        self.streams = [
            Stream(i, t, self.gpu.create_context(), self.spec) for i, t in enumerate(tenants)
        ]
        self.duration_ns = duration_ns
        self.warmup_ns = warmup_ns
        self.sample_ns = sample_ns
        self._energy_at_warmup = 0.0
        self.allocation: list[tuple[int, tuple[int, ...]]] = []
        self.use_compiled = compiled
        #: The compiled run while the run is in the epoch loop, else None.
        self.compiled: CompiledRun | None = None

    # -- the run -------------------------------------------------------------

    def run(self) -> RunResult:
        if self.policy is None:
            raise InvalidArgument("a simulation needs a policy to run")
        wall0 = time.perf_counter()
        self.running = True
        pol = None
        if self.use_compiled and compilable(self):
            pol = self.policy.compiled_setup(self)
        if pol is not None:
            self.compiled = CompiledRun(self, pol)
            self.compiled.start()
        else:
            self.policy.attach(self)
            for s in self.streams:
                if s.tenant.kind == "open":
                    self._schedule_arrival(s)
                else:
                    self._start_request(s, 0)
        if self.warmup_ns > 0:
            self.call_at(self.warmup_ns, self._mark_warmup)
        if self.sample_ns:
            window = self.trace_window_ns
            self.call_at(window[0] if window else 0, self._sample)
        if self.compiled is not None:
            self.compiled.advance(self.duration_ns)
        else:
            self.advance(self.duration_ns)
        self.running = False
        if self.compiled is not None:
            self.compiled.write_back_counters()
        return self._result(time.perf_counter() - wall0)

    # -- the compiled form -----------------------------------------------------

    def call_at(self, t_ns: int, fn, *args, owner=None) -> None:
        if self.compiled is not None:
            self.compiled.call_at(t_ns, fn, args, owner)
        else:
            super().call_at(t_ns, fn, *args, owner=owner)

    def set_policy(self, policy: SharingPolicy) -> None:
        if self.compiled is not None:
            pol = policy.compiled_setup(self)
            if pol is not None:
                self.compiled.switch(policy, pol)
                self.policy = policy
                return
            # No compiled form: the run goes on in Python from now.  The
            # compiled policy detaches in the hand-back; its Python object
            # was never set up, so it is not asked to.
            self.compiled.hand_back()
            self.compiled = None
            policy.attach(self)
            self.policy = policy
            for s in self.streams:
                if s.kernel_pending:
                    policy.kernel_ready(s)
            return
        super().set_policy(policy)

    def set_clock(self, clock_mhz: int) -> int:
        if self.compiled is not None:
            return self.compiled.set_clock(clock_mhz)
        return super().set_clock(clock_mhz)

    def atom_log(self) -> list[tuple[int, ...]]:
        """Every atom launched: stream, launch, done (-1: not yet), first
        block, end block, mask, priority and dispatch order (for tests)."""
        if self.compiled is not None:
            return self.compiled.atom_log()
        return [
            (s, t, -1 if (done := self.gpu.atom_done_ns(a)) is None else done, *rest)
            for a, (s, t, *rest) in enumerate(self.launch_log)
        ]

    def _mark_warmup(self) -> None:
        self._energy_at_warmup = self.gpu.energy_j

    def _sample(self) -> None:
        counts = []
        if self.compiled is not None:
            counts = [m.bit_count() for m in self.compiled.inflight_masks()]
        for s in self.streams if self.compiled is None else ():
            union = 0
            for mask in s.inflight_masks.values():
                union |= mask
            counts.append(union.bit_count())
        now = self.now_ns
        self.allocation.append((now, tuple(counts)))
        window = self.trace_window_ns
        sample_ns = self.sample_ns
        assert sample_ns  # sampling runs only with a sample period
        if window is None or now + sample_ns < window[1]:
            self.call_at(now + sample_ns, self._sample)

    # -- requests ------------------------------------------------------------

    def _schedule_arrival(self, s: Stream) -> None:
        arrivals = s.tenant.arrivals_ns
        if s.next_arrival < len(arrivals) and arrivals[s.next_arrival] < self.duration_ns:
            self.call_at(arrivals[s.next_arrival], self._arrive, s)

    def _arrive(self, s: Stream) -> None:
        t = s.tenant.arrivals_ns[s.next_arrival]
        s.next_arrival += 1
        self._schedule_arrival(s)
        if s.active:
            s.pending.append(t)
        else:
            self._start_request(s, t)

    def _start_request(self, s: Stream, request_ns: int) -> None:
        s.request_ns = request_ns
        s.pos = 0
        self._ready(s)

    def _ready(self, s: Stream) -> None:
        # The host enqueues each kernel HOST_LAUNCH_NS after the previous one,
        # and starts no earlier than its barrier: the request's start for a
        # host that waits for results, the completion `run_ahead` kernels back
        # otherwise.  The GPU cannot see a kernel before its host launched it,
        # so a stream of kernels shorter than the launch time is host-bound.
        start = s.host_ns
        if s.run_ahead == 0:
            if s.pos == 0:
                start = max(start, self.now_ns)
        elif len(s.done_ns) == s.run_ahead:
            start = max(start, s.done_ns[0])
        host = s.host_ns = start + HOST_LAUNCH_NS
        s.desc = None  # between kernels until the launch arrives
        if host > self.now_ns:
            self.call_at(host, self._enqueued, s)
        else:
            self._enqueued(s)

    def _enqueued(self, s: Stream) -> None:
        """The host's launch of `s`'s current kernel reached the GPU."""
        pos = s.pos
        s.kernel_iso_ns = s.iso_ns[pos]
        s.kernel_sms = s.sms[pos]
        s.kernel_profile = s.profiles[pos]
        s.kernel_key = (s.index, pos)
        self.enqueue(s, s.kernels[pos])

    def atom_completed(self, s: Stream, atom: int) -> None:
        now = self.now_ns
        if now >= self.warmup_ns:
            launch_ns = self.atom_launch_ns[atom]
            assert s.desc is not None  # its kernel is on the device until its last atom
            s.busy_tpc_ns += self.gpu.atom_busy_ns(atom) / s.desc.blocks_per_tpc
            s.alloc_tpc_ns += self.atom_tpcs[atom] * (now - max(launch_ns, self.warmup_ns))

    def kernel_finished(self, s: Stream) -> None:
        now = self.now_ns
        if now >= self.warmup_ns:
            s.kernels_done += 1
        if s.run_ahead:
            s.done_ns.append(now)
        s.pos += 1
        if s.pos < s.n_kernels:
            self._ready(s)
            return
        # The request is done.
        if s.request_ns >= self.warmup_ns:
            s.latencies_ns.append(now - s.request_ns)
        if now >= self.warmup_ns:
            s.completed += 1
        s.pos = -1
        s.desc = None
        s.grid = s.launched = 0
        if s.tenant.kind != "open":
            self._start_request(s, now)
        elif s.pending:
            self._start_request(s, s.pending.popleft())
        else:
            self.policy.stream_idle(s)

    # -- results -------------------------------------------------------------

    def _result(self, wall_s: float) -> RunResult:
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
            extra=self.policy.report() if self.compiled is None else self.compiled.report(),
            atoms=tuple(self.trace_atoms) if self.compiled is None else self.compiled.trace_atoms(),
            clocks=tuple(self.clock_log if self.compiled is None else self.compiled.clock_log()),
            allocation=tuple(self.allocation),
        )


def percentile_ns(latencies: Sequence[int], q: float) -> float:
    """The q-th percentile (0-100) of `latencies`, NaN when there are none."""
    if not latencies:
        return float("nan")
    return float(np.percentile(np.asarray(latencies, dtype=np.float64), q))
