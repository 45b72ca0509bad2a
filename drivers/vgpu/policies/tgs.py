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

from drivers.vgpu.policies.base import PRIO_NORMAL, SharingPolicy, converted, microseconds


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
