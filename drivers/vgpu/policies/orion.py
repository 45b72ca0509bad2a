"""Orion: interference-aware admission of best-effort kernels (`drivers/vgpu/policies`).

After Strati et al., "Orion: Interference-aware, Fine-grained GPU Sharing for
ML Applications" (EuroSys 2024).  High-priority kernels launch at once on a
high-priority stream.  While a high-priority request is in progress, a
best-effort kernel is admitted only if

* the SMs of the outstanding best-effort kernels, with its own, stay within
  `sm_threshold` (default: the device's SMs, Orion's choice for an
  inference client);
* its profile (compute- or memory-bound) differs from that of every
  running high-priority kernel (an unknown profile, -1, matches nothing);
* the isolated duration of the outstanding best-effort kernels, with its
  own, stays within `duration_cap_ns`: by default 2.5% of the shortest
  high-priority request's isolated latency (about 150 us for ResNet-50),
  or 150 us where requests have no profile (programs in the booted driver).

With no high-priority request in progress, best-effort kernels run freely.
Profiles, SM counts and durations are the tenants' kernel profiles.

`decision_ns` is the CPU-side cost of Orion's scheduling: a client's
launch is intercepted into a queue, which one scheduler thread polls
(src/scheduler/scheduler_eval.cpp, `busy_wait_profile`) and decides on, one
kernel at a time, before it submits it.  A decision starts once the host
has enqueued the kernel and the thread is free, and takes `decision_ns`;
it overlaps the kernels before it on the device, so it delays a kernel
only when it ends after the kernel is ready (the first of a request, or
every one when the thread is the bottleneck).  Neither the paper nor the
artifact states the figure: it is unsourced, and 0 by default, the
idealised form (docs/policy-audit.md).
"""

from __future__ import annotations

import numpy as np

from drivers.vgpu.sharing.compiled import (
    D_FULL_MASK,
    D_NOW,
    K_ISO,
    K_PROFILE,
    K_SMS,
    MAX_STREAMS,
    POLICY_TIMERS,
    ST_HOST_NS,
    ST_HP,
    Pol,
    compiled_fn,
    host_order,
    hp_running,
    kernel_index,
    kernel_pending,
    launch_whole,
    named_state,
    new_state,
    policy_call_at,
    state_of,
    state_values,
)
from drivers.vgpu.sharing.policy import PRIO_HIGH, PRIO_LOW, SharingPolicy, microseconds

#: The duration cap where no high-priority request profile is known.
DEFAULT_DURATION_CAP_NS = 150_000


class Orion(SharingPolicy):
    name = "orion"
    summary = (
        "Orion: best-effort admission by SMs, compute/memory profile and outstanding duration "
        "(duration_cap_us 0: 2.5% of the high-priority request time)."
    )
    PARAMETERS = {
        "duration_cap_us": microseconds("duration_cap_ns", minimum=0),
        "decision_us": microseconds("decision_ns", minimum=0),
    }

    def __init__(
        self,
        sm_threshold: int | None = None,
        duration_cap_ns: int | None = None,
        duration_cap_share: float = 0.025,
        decision_ns: int = 0,
    ) -> None:
        if decision_ns < 0:
            raise ValueError(f"orion: the decision cost must be 0 or more, got {decision_ns} ns")
        self.sm_threshold = sm_threshold
        self.duration_cap_ns = duration_cap_ns
        self.duration_cap_share = duration_cap_share
        self.decision_ns = decision_ns

    def compiled_setup(self, sim) -> Pol:
        """The SM threshold and the duration cap, from the parameters and the tenants."""
        self.sim = sim
        threshold = self.sm_threshold or sim.spec.n_sms
        hp_requests = [s.request_iso_ns for s in sim.streams if s.hp and s.request_iso_ns]
        if self.duration_cap_ns:
            cap_ns = self.duration_cap_ns
        elif hp_requests:
            cap_ns = int(self.duration_cap_share * min(hp_requests))
        else:  # no request profile (the booted driver's programs)
            cap_ns = DEFAULT_DURATION_CAP_NS
        return new_state(STATE, 0, threshold=threshold, cap_ns=cap_ns, decision_ns=self.decision_ns)

    def compiled_report(self, pol: Pol) -> dict:
        st = state_values(pol, STATE)
        return {
            "sm_threshold": int(st["threshold"]),
            "duration_cap_ns": int(st["cap_ns"]),
            "admitted_beside_hp": int(st["admitted_busy"]),
            "admitted_hp_idle": int(st["admitted_idle"]),
        }


# The named state.
STATE = named_state(
    threshold=np.int64,  # the SM threshold
    cap_ns=np.int64,  # the duration cap
    decision_ns=np.int64,  # the scheduler thread's cost per kernel
    free_ns=np.int64,  # when the scheduler thread's last decision ends
    out_sms=np.int64,  # the SMs of the outstanding best-effort kernels
    out_ns=np.int64,  # their isolated duration
    admitted_busy=np.int64,
    admitted_idle=np.int64,
    sms=(np.int64, MAX_STREAMS),  # per best-effort stream: its outstanding SMs
    iso_ns=(np.int64, MAX_STREAMS),  # and its outstanding duration
    n_held=np.int64,
    held=(np.int64, MAX_STREAMS),  # the best-effort streams waiting, in order
)
state = state_of(STATE)
DECIDED = POLICY_TIMERS  # the scheduler thread has reached a stream's kernel


@compiled_fn
def _priority(d, s):
    return PRIO_HIGH if d.st[ST_HP, s] else PRIO_LOW


@compiled_fn
def compiled_kernel_ready(d, p, s):
    st = state(p)
    if st["decision_ns"] > 0:
        # The thread decides once the host has enqueued the kernel and the
        # thread is free: the decision may be over before the kernel is ready.
        st["free_ns"] = max(d.st[ST_HOST_NS, s], st["free_ns"]) + st["decision_ns"]
        if st["free_ns"] > d.sc[D_NOW]:
            policy_call_at(d, st["free_ns"], DECIDED, s)
            return
    _schedule(d, p, s)


@compiled_fn
def compiled_timer(d, p, kind, arg):
    if kind == DECIDED and kernel_pending(d, arg):
        _schedule(d, p, arg)


@compiled_fn
def _schedule(d, p, s):
    """The scheduler's decision on stream `s`'s ready kernel."""
    if d.st[ST_HP, s]:
        launch_whole(d, s, d.sc[D_FULL_MASK], PRIO_HIGH, host_order(d, s))
    else:
        st = state(p)
        st["held"][st["n_held"]] = s
        st["n_held"] += 1
    _admit(d, p)


@compiled_fn
def compiled_atom_done(d, p, s, atom, kernel_done):
    if kernel_done and not d.st[ST_HP, s]:
        st = state(p)
        st["out_sms"] -= st["sms"][s]
        st["out_ns"] -= st["iso_ns"][s]
        st["sms"][s] = 0
        st["iso_ns"][s] = 0


@compiled_fn
def compiled_stream_idle(d, p, s):
    if d.st[ST_HP, s]:
        _admit(d, p)


@compiled_fn
def _admissible(d, p, s, running, n_running):
    st = state(p)
    k = kernel_index(d, s)
    sms, iso, profile = d.kern[K_SMS, k], d.kern[K_ISO, k], d.kern[K_PROFILE, k]
    if st["out_sms"] + sms > st["threshold"]:
        return False
    if st["out_ns"] + iso > st["cap_ns"]:
        return False
    for r in range(n_running):
        other = d.kern[K_PROFILE, kernel_index(d, running[r])]
        if not (profile == -1 or other == -1 or other != profile):
            return False
    return True


@compiled_fn
def _admit(d, p):
    st = state(p)
    if st["n_held"] == 0:
        return
    running, n_running = hp_running(d)
    kept = 0
    for j in range(st["n_held"]):
        s = st["held"][j]
        if not kernel_pending(d, s):
            continue
        if n_running and not _admissible(d, p, s, running, n_running):
            st["held"][kept] = s
            kept += 1
            continue
        if n_running:
            st["admitted_busy"] += 1
        else:
            st["admitted_idle"] += 1
        k = kernel_index(d, s)
        st["sms"][s] = d.kern[K_SMS, k]
        st["iso_ns"][s] = d.kern[K_ISO, k]
        st["out_sms"] += d.kern[K_SMS, k]
        st["out_ns"] += d.kern[K_ISO, k]
        launch_whole(d, s, d.sc[D_FULL_MASK], _priority(d, s), -1)
    st["n_held"] = kept
