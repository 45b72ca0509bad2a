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
"""

from __future__ import annotations

from collections import deque

import numpy as np

from drivers.vgpu.policies.base import PRIO_NORMAL, SharingPolicy, converted, microseconds
from drivers.vgpu.policies.compiled import (
    D_FULL_MASK,
    D_NOW,
    D_NSTREAMS,
    K_ISO,
    P_TGS,
    POLICY_TIMERS,
    ST_HP,
    Pol,
    compiled_fn,
    empty_pol,
    host_order,
    kernel_index,
    launch_whole,
    policy_call_at,
)


class Tgs(SharingPolicy):
    name = "tgs"
    summary = "TGS: best-effort launch rate under slow start and AIMD on the high-priority rate."
    PARAMETERS = {
        "period_us": microseconds("period_ns"),
        "threshold": converted("threshold", float),
    }

    def __init__(
        self,
        period_ns: int = 10_000_000,
        threshold: float = 0.03,
        initial_rate_per_s: float = 200.0,
        additive_per_s: float = 200.0,
        min_rate_per_s: float = 50.0,
        reference_periods: int = 50,
    ) -> None:
        self.period_ns = period_ns
        self.threshold = threshold
        self.initial_rate_per_s = initial_rate_per_s
        self.additive_per_s = additive_per_s
        self.min_rate_per_s = min_rate_per_s
        self.reference_periods = reference_periods

    def setup(self) -> None:
        self.rate_per_s = self.initial_rate_per_s
        self.slow_start = True
        self.tokens = 1.0
        self.token_ns = self.sim.now_ns
        self.held: deque = deque()  # best-effort streams waiting for a token
        self.waking = False
        hp = [s.index for s in self.sim.streams if s.hp]
        self.work_ns = dict.fromkeys(hp, 0)
        self.busy_ns = dict.fromkeys(hp, 0)
        self.busy_since: dict[int, int | None] = dict.fromkeys(hp)
        self.recent: dict[int, deque[float]] = {i: deque(maxlen=self.reference_periods) for i in hp}
        self.decreases = 0
        self.rates: list[tuple[int, float]] = []
        self.call_at(self.sim.now_ns + self.period_ns, self._control)

    def priority(self, s) -> int:
        return PRIO_NORMAL

    # -- launches ----------------------------------------------------------

    def kernel_ready(self, s) -> None:
        if s.hp:
            if self.busy_since[s.index] is None:
                self.busy_since[s.index] = self.sim.now_ns
            super().kernel_ready(s)
            return
        self.held.append(s)
        self._release()

    def _refill(self) -> None:
        now = self.sim.now_ns
        burst = max(1.0, self.rate_per_s * self.period_ns / 1e9)
        self.tokens = min(burst, self.tokens + (now - self.token_ns) * self.rate_per_s / 1e9)
        self.token_ns = now

    def _release(self) -> None:
        self._refill()
        while self.held and self.tokens >= 1.0:
            s = self.held.popleft()
            self.tokens -= 1.0
            self.launch_whole(s)
        if self.held and not self.waking:
            wait_ns = int((1.0 - self.tokens) * 1e9 / self.rate_per_s) + 1
            self.waking = True
            self.call_at(self.sim.now_ns + wait_ns, self._wake)

    def _wake(self) -> None:
        self.waking = False
        self._release()

    # -- measuring the high-priority rate ------------------------------------

    def atom_done(self, s, atom, kernel_done) -> None:
        if s.hp and kernel_done:
            self.work_ns[s.index] += s.kernel_iso_ns

    def stream_idle(self, s) -> None:
        since = self.busy_since.get(s.index)
        if since is not None:
            self.busy_ns[s.index] += self.sim.now_ns - since
            self.busy_since[s.index] = None

    def _control(self) -> None:
        now = self.sim.now_ns
        drop = False
        for i, since in self.busy_since.items():
            busy = self.busy_ns[i]
            if since is not None:
                busy += now - since
                self.busy_since[i] = now
            if busy > self.period_ns // 10:
                rate = self.work_ns[i] / busy
                recent = self.recent[i]
                drop |= rate < (1.0 - self.threshold) * max(recent, default=rate)
                recent.append(rate)
            self.work_ns[i] = self.busy_ns[i] = 0
        self._refill()
        if drop:
            self.rate_per_s = max(self.min_rate_per_s, self.rate_per_s / 2)
            self.slow_start = False
            self.decreases += 1
        elif self.slow_start:
            self.rate_per_s *= 2
        else:
            self.rate_per_s += self.additive_per_s
        self.rates.append((now, self.rate_per_s))
        self.call_at(now + self.period_ns, self._control)
        self._release()

    def detach(self) -> None:
        self.held.clear()

    def report(self) -> dict:
        rates = [r for _, r in self.rates]
        return {
            "decreases": self.decreases,
            "final_rate_per_s": self.rate_per_s,
            "mean_rate_per_s": sum(rates) / len(rates) if rates else self.rate_per_s,
        }

    # -- the compiled form ---------------------------------------------------

    def compiled_setup(self, sim) -> Pol:
        self.sim = sim
        n = len(sim.streams)
        pol = empty_pol(P_TGS, G_PER_STREAM + 6 * n + 1, G_N_FLOATS)
        i, f = pol.i, pol.f
        i[G_PERIOD_NS] = self.period_ns
        i[G_REFERENCE] = self.reference_periods
        f[GF_THRESHOLD] = self.threshold
        f[GF_RATE] = self.initial_rate_per_s
        f[GF_ADDITIVE] = self.additive_per_s
        f[GF_MIN_RATE] = self.min_rate_per_s
        f[GF_TOKENS] = 1.0
        i[G_SLOW_START] = 1
        i[G_TOKEN_NS] = sim.now_ns
        i[G_PER_STREAM + 2 * n : G_PER_STREAM + 3 * n] = -1  # busy since: none
        return pol._replace(w=np.zeros((n, max(1, self.reference_periods))))

    def compiled_report(self, pol: Pol) -> dict:
        n = int(pol.i[G_NRATES])
        return {
            "decreases": int(pol.i[G_DECREASES]),
            "final_rate_per_s": float(pol.f[GF_RATE]),
            "mean_rate_per_s": float(pol.f[GF_RATE_SUM]) / n if n else float(pol.f[GF_RATE]),
        }


# The compiled form.  Scalars in `Pol.i` and `Pol.f`; then in `Pol.i`, per
# stream: work, busy time, busy since (-1: none), and the head and length of
# its recent rates (a ring in row s of `Pol.w`); then the held streams (a
# ring of n, its head and length in the scalars).
G_PERIOD_NS = 1
G_REFERENCE = 2
G_SLOW_START = 3
G_TOKEN_NS = 4
G_WAKING = 5
G_DECREASES = 6
G_NRATES = 7
G_HELD_HEAD = 8
G_HELD_LEN = 9
G_STARTED = 10
G_PER_STREAM = 11
WORK, BUSY, SINCE, RECENT_HEAD, RECENT_LEN, HELD = range(6)
GF_THRESHOLD = 0
GF_RATE = 1
GF_ADDITIVE = 2
GF_MIN_RATE = 3
GF_TOKENS = 4
GF_RATE_SUM = 5
G_N_FLOATS = 6
CONTROL = POLICY_TIMERS
WAKE = POLICY_TIMERS + 1


@compiled_fn
def _at(d, field, s):
    return G_PER_STREAM + field * d.sc[D_NSTREAMS] + s


@compiled_fn
def compiled_setup(d, p):
    policy_call_at(d, d.sc[D_NOW] + p.i[G_PERIOD_NS], CONTROL, 0)


@compiled_fn
def compiled_kernel_ready(d, p, s):
    if d.st[ST_HP, s]:
        if p.i[_at(d, SINCE, s)] < 0:
            p.i[_at(d, SINCE, s)] = d.sc[D_NOW]
        launch_whole(d, s, d.sc[D_FULL_MASK], PRIO_NORMAL, host_order(d, s))
        return
    n = d.sc[D_NSTREAMS]
    p.i[_at(d, HELD, (p.i[G_HELD_HEAD] + p.i[G_HELD_LEN]) % n)] = s
    p.i[G_HELD_LEN] += 1
    _release(d, p)


@compiled_fn
def _refill(d, p):
    now = d.sc[D_NOW]
    f = p.f
    rate = f[GF_RATE]
    burst = max(1.0, rate * p.i[G_PERIOD_NS] / 1e9)
    f[GF_TOKENS] = min(burst, f[GF_TOKENS] + (now - p.i[G_TOKEN_NS]) * rate / 1e9)
    p.i[G_TOKEN_NS] = now


@compiled_fn
def _release(d, p):
    _refill(d, p)
    n = d.sc[D_NSTREAMS]
    while p.i[G_HELD_LEN] and p.f[GF_TOKENS] >= 1.0:
        s = p.i[_at(d, HELD, p.i[G_HELD_HEAD])]
        p.i[G_HELD_HEAD] = (p.i[G_HELD_HEAD] + 1) % n
        p.i[G_HELD_LEN] -= 1
        p.f[GF_TOKENS] -= 1.0
        launch_whole(d, s, d.sc[D_FULL_MASK], PRIO_NORMAL, -1)
    if p.i[G_HELD_LEN] and not p.i[G_WAKING]:
        wait_ns = int((1.0 - p.f[GF_TOKENS]) * 1e9 / p.f[GF_RATE]) + 1
        p.i[G_WAKING] = 1
        policy_call_at(d, d.sc[D_NOW] + wait_ns, WAKE, 0)


@compiled_fn
def compiled_atom_done(d, p, s, atom, kernel_done):
    if d.st[ST_HP, s] and kernel_done:
        p.i[_at(d, WORK, s)] += d.kern[K_ISO, kernel_index(d, s)]


@compiled_fn
def compiled_stream_idle(d, p, s):
    since = p.i[_at(d, SINCE, s)]
    if d.st[ST_HP, s] and since >= 0:
        p.i[_at(d, BUSY, s)] += d.sc[D_NOW] - since
        p.i[_at(d, SINCE, s)] = -1


@compiled_fn
def compiled_timer(d, p, kind, arg):
    if kind == WAKE:
        p.i[G_WAKING] = 0
        _release(d, p)
    elif kind == CONTROL:
        _control(d, p)


@compiled_fn
def _control(d, p):
    now = d.sc[D_NOW]
    i, f = p.i, p.f
    period = i[G_PERIOD_NS]
    drop = False
    for s in range(d.sc[D_NSTREAMS]):
        if not d.st[ST_HP, s]:
            continue
        busy = i[_at(d, BUSY, s)]
        if i[_at(d, SINCE, s)] >= 0:
            busy += now - i[_at(d, SINCE, s)]
            i[_at(d, SINCE, s)] = now
        if busy > period // 10:
            rate = i[_at(d, WORK, s)] / busy
            length = i[_at(d, RECENT_LEN, s)]
            best = rate
            if length:
                best = -np.inf
                for r in range(length):
                    best = max(best, p.w[s, r])
            drop |= rate < (1.0 - f[GF_THRESHOLD]) * best
            # recent.append(rate): a deque of `reference` rates; its order does
            # not matter, only its maximum, so the oldest is overwritten.
            cap = i[G_REFERENCE]
            head = i[_at(d, RECENT_HEAD, s)]
            if cap == 0:
                pass
            elif length < cap:
                p.w[s, (head + length) % cap] = rate
                i[_at(d, RECENT_LEN, s)] = length + 1
            else:
                p.w[s, head] = rate
                i[_at(d, RECENT_HEAD, s)] = (head + 1) % cap
        i[_at(d, WORK, s)] = 0
        i[_at(d, BUSY, s)] = 0
    _refill(d, p)
    if drop:
        f[GF_RATE] = max(f[GF_MIN_RATE], f[GF_RATE] / 2)
        i[G_SLOW_START] = 0
        i[G_DECREASES] += 1
    elif i[G_SLOW_START]:
        f[GF_RATE] *= 2
    else:
        f[GF_RATE] += f[GF_ADDITIVE]
    i[G_NRATES] += 1
    f[GF_RATE_SUM] += f[GF_RATE]
    policy_call_at(d, now + period, CONTROL, 0)
    _release(d, p)
