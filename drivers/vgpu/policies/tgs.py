"""TGS: transparent rate control of best-effort kernels (`drivers/vgpu/policies`).

After Wu et al., "Transparent GPU Sharing in Container Clouds for Deep
Learning Workloads" (NSDI 2023).  Kernels share one space as under MPS, but
the best-effort tenants may launch only at a rate `rate_per_s` kernels per
second (a token bucket).  Every `period_ns` the controller compares the
high-priority tenants' kernel rate with the best it has seen recently:

* a drop of more than `threshold` (3%) is interference: the rate halves
  (multiplicative decrease) and slow start ends;
* otherwise the rate grows: it doubles during slow start, then grows by
  `additive_per_s` per period (additive increase).

Each high-priority tenant's rate is measured as work per busy second: the
kernels it completed, each weighted by its isolated duration from the
profile, over the time it had a request in progress.  Weighting keeps a
period's kernel mix from looking like a change of rate.  A tenant that was
busy for less than a tenth of the period gives no signal; a drop of any
tenant below its own recent best is a drop.

The two costs of the real controller, from TGS's released code
(github.com/pkusys/TGS, hijack/; docs/policy-audit.md quotes them):

* `period_ns` (5 s): the high-priority side's `rate_watcher` reports its
  rate to the best-effort side's `limit_manager` once per `duration = 5000`
  ms (high_priority_hijack_call.c), and the limit changes once per report;
* `poll_ns` (10 ms): a launch over the limit sleeps in `rate_limiter`
  (``while (launch_test(...)) nanosleep(&g_cycle)``, ``g_cycle = TIME_TICK *
  MILLISEC``, ``TIME_TICK 10`` in hijack.h) and checks again, so a held
  kernel is released at the first whole poll after its token is due.
  0: at the instant its token is due (the idealised form).
"""

from __future__ import annotations

import numpy as np

from drivers.vgpu.sharing.compiled import (
    D_FULL_MASK,
    D_NOW,
    D_NSTREAMS,
    K_ISO,
    MAX_STREAMS,
    POLICY_TIMERS,
    ST_HP,
    Pol,
    compiled_fn,
    host_order,
    kernel_index,
    launch_whole,
    named_state,
    new_state,
    policy_call_at,
    state_of,
    state_values,
)
from drivers.vgpu.sharing.policy import PRIO_NORMAL, SharingPolicy, converted, microseconds


class Tgs(SharingPolicy):
    name = "tgs"
    summary = "TGS: best-effort launch rate under slow start and AIMD on the high-priority rate."
    PARAMETERS = {
        "period_us": microseconds("period_ns", minimum=1),
        "threshold": converted("threshold", float),
        "poll_us": microseconds("poll_ns", minimum=0),
    }

    def __init__(
        self,
        period_ns: int = 5_000_000_000,
        threshold: float = 0.03,
        initial_rate_per_s: float = 200.0,
        additive_per_s: float = 200.0,
        min_rate_per_s: float = 50.0,
        reference_periods: int = 50,
        poll_ns: int = 10_000_000,
    ) -> None:
        if period_ns <= 0:
            raise ValueError(f"tgs: the control period must be positive, got {period_ns} ns")
        if poll_ns < 0:
            raise ValueError(f"tgs: the launch poll must be 0 or more, got {poll_ns} ns")
        self.period_ns = period_ns
        self.poll_ns = poll_ns
        self.threshold = threshold
        self.initial_rate_per_s = initial_rate_per_s
        self.additive_per_s = additive_per_s
        self.min_rate_per_s = min_rate_per_s
        self.reference_periods = reference_periods

    def compiled_setup(self, sim) -> Pol:
        self.sim = sim
        n = len(sim.streams)
        pol = new_state(
            STATE,
            0,
            period_ns=self.period_ns,
            poll_ns=self.poll_ns,
            reference=self.reference_periods,
            threshold=self.threshold,
            rate_per_s=self.initial_rate_per_s,
            additive_per_s=self.additive_per_s,
            min_rate_per_s=self.min_rate_per_s,
            tokens=1.0,
            slow_start=1,
            token_ns=sim.now_ns,
            busy_since=[-1] * n,  # none
        )
        return pol._replace(rates=np.zeros((n, max(1, self.reference_periods))))

    def compiled_report(self, pol: Pol) -> dict:
        st = state_values(pol, STATE)
        n = int(st["n_rates"])
        rate = float(st["rate_per_s"])
        return {
            "decreases": int(st["decreases"]),
            "final_rate_per_s": rate,
            "mean_rate_per_s": float(st["rate_sum"]) / n if n else rate,
        }


# The named state.  The held streams are a ring of n; each high-priority
# stream's recent rates, a ring in row s of `Pol.rates` (as wide as
# `reference_periods`).
STATE = named_state(
    period_ns=np.int64,
    poll_ns=np.int64,  # a held launch checks its token once per poll (0: when due)
    reference=np.int64,  # the recent rates kept per stream
    threshold=np.float64,
    rate_per_s=np.float64,
    additive_per_s=np.float64,
    min_rate_per_s=np.float64,
    tokens=np.float64,
    rate_sum=np.float64,  # of the rates set so far, for their mean
    slow_start=np.int64,
    token_ns=np.int64,  # when the tokens were last refilled
    waking=np.int64,  # 1: a WAKE timer is set
    decreases=np.int64,
    n_rates=np.int64,
    held_head=np.int64,
    held_len=np.int64,
    held=(np.int64, MAX_STREAMS),
    work_ns=(np.int64, MAX_STREAMS),  # per high-priority stream, this period
    busy_ns=(np.int64, MAX_STREAMS),
    busy_since=(np.int64, MAX_STREAMS),  # -1: not busy
    recent_head=(np.int64, MAX_STREAMS),
    recent_len=(np.int64, MAX_STREAMS),
)
state = state_of(STATE)
CONTROL = POLICY_TIMERS
WAKE = POLICY_TIMERS + 1


@compiled_fn
def compiled_setup(d, p):
    policy_call_at(d, d.sc[D_NOW] + state(p)["period_ns"], CONTROL, 0)


@compiled_fn
def compiled_kernel_ready(d, p, s):
    st = state(p)
    if d.st[ST_HP, s]:
        if st["busy_since"][s] < 0:
            st["busy_since"][s] = d.sc[D_NOW]
        launch_whole(d, s, d.sc[D_FULL_MASK], PRIO_NORMAL, host_order(d, s))
        return
    n = d.sc[D_NSTREAMS]
    st["held"][(st["held_head"] + st["held_len"]) % n] = s
    st["held_len"] += 1
    _release(d, p)


@compiled_fn
def _refill(d, p):
    st = state(p)
    now = d.sc[D_NOW]
    rate = st["rate_per_s"]
    burst = max(1.0, rate * st["period_ns"] / 1e9)
    st["tokens"] = min(burst, st["tokens"] + (now - st["token_ns"]) * rate / 1e9)
    st["token_ns"] = now


@compiled_fn
def _release(d, p):
    _refill(d, p)
    st = state(p)
    if st["poll_ns"] > 0 and st["waking"]:
        return  # the held launches sleep until their next poll
    n = d.sc[D_NSTREAMS]
    while st["held_len"] and st["tokens"] >= 1.0:
        s = st["held"][st["held_head"]]
        st["held_head"] = (st["held_head"] + 1) % n
        st["held_len"] -= 1
        st["tokens"] -= 1.0
        launch_whole(d, s, d.sc[D_FULL_MASK], PRIO_NORMAL, -1)
    if st["held_len"] and not st["waking"]:
        wait_ns = int((1.0 - st["tokens"]) * 1e9 / st["rate_per_s"]) + 1
        poll = st["poll_ns"]
        if poll > 0:  # TGS's rate_limiter: sleep a whole poll, then check again
            wait_ns = (wait_ns + poll - 1) // poll * poll
        st["waking"] = 1
        policy_call_at(d, d.sc[D_NOW] + wait_ns, WAKE, 0)


@compiled_fn
def compiled_atom_done(d, p, s, atom, kernel_done):
    if d.st[ST_HP, s] and kernel_done:
        state(p)["work_ns"][s] += d.kern[K_ISO, kernel_index(d, s)]


@compiled_fn
def compiled_stream_idle(d, p, s):
    st = state(p)
    since = st["busy_since"][s]
    if d.st[ST_HP, s] and since >= 0:
        st["busy_ns"][s] += d.sc[D_NOW] - since
        st["busy_since"][s] = -1


@compiled_fn
def compiled_timer(d, p, kind, arg):
    if kind == WAKE:
        state(p)["waking"] = 0
        _release(d, p)
    elif kind == CONTROL:
        _control(d, p)


@compiled_fn
def _control(d, p):
    st = state(p)
    now = d.sc[D_NOW]
    period = st["period_ns"]
    drop = False
    for s in range(d.sc[D_NSTREAMS]):
        if not d.st[ST_HP, s]:
            continue
        busy = st["busy_ns"][s]
        if st["busy_since"][s] >= 0:
            busy += now - st["busy_since"][s]
            st["busy_since"][s] = now
        if busy > period // 10:
            rate = st["work_ns"][s] / busy
            length = st["recent_len"][s]
            best = rate
            if length:
                best = -np.inf
                for r in range(length):
                    best = max(best, p.rates[s, r])
            drop |= rate < (1.0 - st["threshold"]) * best
            # Keep the rate among the stream's last `reference`: only their
            # maximum matters, not their order, so the oldest is overwritten.
            cap = st["reference"]
            head = st["recent_head"][s]
            if cap == 0:
                pass
            elif length < cap:
                p.rates[s, (head + length) % cap] = rate
                st["recent_len"][s] = length + 1
            else:
                p.rates[s, head] = rate
                st["recent_head"][s] = (head + 1) % cap
        st["work_ns"][s] = 0
        st["busy_ns"][s] = 0
    _refill(d, p)
    if drop:
        st["rate_per_s"] = max(st["min_rate_per_s"], st["rate_per_s"] / 2)
        st["slow_start"] = 0
        st["decreases"] += 1
    elif st["slow_start"]:
        st["rate_per_s"] *= 2
    else:
        st["rate_per_s"] += st["additive_per_s"]
    st["n_rates"] += 1
    st["rate_sum"] += st["rate_per_s"]
    policy_call_at(d, now + period, CONTROL, 0)
    _release(d, p)
