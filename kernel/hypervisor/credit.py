"""The vCPU scheduler: Xen's credit scheduler, on the kernel's `CpuProvider`.

Guests' vCPUs ask for host CPU time (kernel/cpu.py); this scheduler grants it
on `cpus` host CPUs.  Each domain (a VM) has a *weight* and an optional *cap*,
as in Xen's credit scheduler (sched_credit.c):

* Every accounting period (30 ms) the host's CPU time for the period, `cpus`
  x period, is handed out as credit to the domains that want CPU, in
  proportion to their weights.  Credit does not pile up: a domain holds at
  most one period's share, so an idle domain cannot save for later.
* Running costs credit, ns for ns.  A vCPU of a domain with credit left is
  UNDER, one without is OVER; UNDER vCPUs are granted host CPUs first,
  OVER ones only take what is left (FIFO within a priority).
* A cap is a percent of one host CPU for the whole domain (cap 50: half a
  CPU, cap 200: two).  A capped domain's share is cut to its cap, its grants
  never reach past its remaining credit, and when that is spent it is
  *parked* until the next period, even when host CPUs are idle.
* A grant lasts at most one time slice (10 ms), so a waiting UNDER vCPU gets
  a host CPU within a slice; there is no preemption inside a grant.

Everything happens on the machine's event loop, in an order fixed by the
requests, so a seeded run is deterministic.  Pausing a domain stops new
grants to it; a grant it holds runs to its end (at most a slice).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from kernel.clock import Timer
    from kernel.cpu import Cpu
    from kernel.kernel import Kernel
    from kernel.machine import Machine

ACCOUNT_PERIOD_NS = 30_000_000  # Xen: credits are refilled every 30 ms
TIMESLICE_NS = 10_000_000  # the longest grant
MIN_GRANT_NS = 10_000  # a capped domain with less credit than this is parked
DEFAULT_WEIGHT = 256  # Xen's default
MAX_WEIGHT = 65_535


@attrs.define(eq=False)
class Domain:
    """A VM as the scheduler sees it: its kernel's vCPUs, weight, cap and credit."""

    name: str
    vcpus: int
    weight: int = DEFAULT_WEIGHT
    cap: int = 0  # percent of one host CPU; 0 = no cap
    credit_ns: int = 0
    used_ns: int = 0  # host CPU time its vCPUs have run
    granted_ns: int = 0  # the length of the grants its vCPUs hold now
    paused: bool = False
    active: bool = False  # asked for CPU since the last accounting

    def limit_ns(self, period_ns: int) -> int:
        """The most CPU time it can use in a period: its vCPUs, or its cap."""
        most = self.vcpus * period_ns
        return min(most, self.cap * period_ns // 100) if self.cap else most

    def parked(self) -> bool:
        return self.paused or (self.cap > 0 and self.credit_ns - self.granted_ns < MIN_GRANT_NS)


def check_weight_cap(weight: int, cap: int, cpus: int) -> None:
    if type(weight) is not int or not 1 <= weight <= MAX_WEIGHT:
        raise ValueError(f"weight must be an integer between 1 and {MAX_WEIGHT}, got {weight!r}")
    if type(cap) is not int or not 0 <= cap <= 100 * cpus:
        raise ValueError(
            f"cap must be a percent of one host CPU between 0 (no cap) and {100 * cpus}, got {cap!r}"
        )


class CreditScheduler:
    """A `CpuProvider` for every guest kernel on a machine: `cpus` host CPUs
    shared by weight and cap.  Register each guest kernel with `add`."""

    def __init__(
        self,
        machine: Machine,
        cpus: int,
        period_ns: int = ACCOUNT_PERIOD_NS,
        timeslice_ns: int = TIMESLICE_NS,
    ) -> None:
        if type(cpus) is not int or cpus < 1:
            raise ValueError(f"cpus must be a positive integer, got {cpus!r}")
        if type(timeslice_ns) is not int or not MIN_GRANT_NS <= timeslice_ns <= period_ns:
            raise ValueError(
                f"timeslice_ns must be between {MIN_GRANT_NS} and period_ns, got {timeslice_ns!r}"
            )
        self.loop = machine.loop
        self.cpus = cpus
        self.period_ns = period_ns
        self.timeslice_ns = timeslice_ns
        self.domains: dict[Kernel, Domain] = {}
        self.running: dict[Cpu, tuple[int, int]] = {}  # vCPU -> (grant start, grant end)
        self.waiting: list[Cpu] = []  # vCPUs that asked, in the order they asked
        self.tick: Timer | None = None  # the next accounting
        self.grants = 0

    # -- domains ---------------------------------------------------------------------------

    def add(self, kernel: Kernel, name: str, weight: int = DEFAULT_WEIGHT, cap: int = 0) -> Domain:
        check_weight_cap(weight, cap, self.cpus)
        if kernel in self.domains:
            raise ValueError(f"kernel {kernel.name!r} is already scheduled here")
        domain = Domain(name, len(kernel.cpus), weight, cap)
        self.domains[kernel] = domain
        return domain

    def remove(self, kernel: Kernel) -> None:
        """Forget a domain; its vCPUs must have given their host CPUs back."""
        self.waiting = [v for v in self.waiting if v.kernel is not kernel]
        for vcpu in [v for v in self.running if v.kernel is kernel]:
            self._charge(vcpu)
        self.domains.pop(kernel, None)
        self._dispatch()

    def set_paused(self, kernel: Kernel, paused: bool) -> None:
        self.domains[kernel].paused = paused
        if not paused:
            self._arm()
            self._dispatch()

    # -- CpuProvider -----------------------------------------------------------------------

    def request(self, vcpu: Cpu) -> None:
        domain = self.domains.get(vcpu.kernel)
        if domain is None:
            return  # a destroyed guest's last word
        domain.active = True
        self.waiting.append(vcpu)
        self._arm()
        self._dispatch()

    def release(self, vcpu: Cpu) -> None:
        if vcpu in self.running:
            self._charge(vcpu)
        elif vcpu in self.waiting:
            self.waiting.remove(vcpu)
        self._dispatch()
        if self.tick is not None and not self._wanted():
            self.tick.cancel()  # an idle machine has no pending ticks
            self.tick = None

    # -- the mechanism ---------------------------------------------------------------------

    def _charge(self, vcpu: Cpu) -> None:
        """A vCPU gives its host CPU back: its domain pays for the time it ran."""
        start, end = self.running.pop(vcpu)
        domain = self.domains.get(vcpu.kernel)
        if domain is not None:
            used = self.loop.now_ns - start
            domain.used_ns += used
            domain.credit_ns -= used
            domain.granted_ns -= end - start

    def _dispatch(self) -> None:
        """Fill the free host CPUs: UNDER vCPUs first, then OVER, FIFO in each."""
        while len(self.running) < self.cpus:
            pick = -1
            for i, vcpu in enumerate(self.waiting):
                domain = self.domains[vcpu.kernel]
                if domain.parked():
                    continue
                if domain.credit_ns > 0:
                    pick = i  # UNDER: the first one goes
                    break
                if pick < 0:
                    pick = i  # the first OVER one, unless an UNDER one follows
            if pick < 0:
                return
            vcpu = self.waiting.pop(pick)
            domain = self.domains[vcpu.kernel]
            length = self.timeslice_ns
            if domain.cap:  # never grant past a capped domain's credit
                length = min(length, domain.credit_ns - domain.granted_ns)
            now = self.loop.now_ns
            self.running[vcpu] = (now, now + length)
            domain.granted_ns += length
            self.grants += 1
            vcpu.grant(now + length)

    def _wanted(self) -> bool:
        """Some unpaused domain has a vCPU running or waiting."""
        return bool(self.running) or any(not self.domains[v.kernel].paused for v in self.waiting)

    def _arm(self) -> None:
        """Schedule the next accounting, at the next period boundary, while
        anyone wants CPU (an idle machine has no pending ticks)."""
        if self.tick is None and self._wanted():
            now = self.loop.now_ns
            self.tick = self.loop.call_at(
                (now // self.period_ns + 1) * self.period_ns, self._account
            )

    def _account(self, _arg: object = None) -> None:
        """Xen's csched_acct: refill credit by weight, cut to caps, clip."""
        self.tick = None
        busy = {v.kernel for v in self.running} | {v.kernel for v in self.waiting}
        active = [d for k, d in self.domains.items() if d.active or k in busy]
        for domain, share in self._shares(active):
            domain.credit_ns = max(min(domain.credit_ns + share, share), -share)
        for kernel, domain in self.domains.items():
            domain.active = kernel in busy
        self._arm()
        self._dispatch()

    def _shares(self, active: list[Domain]) -> list[tuple[Domain, int]]:
        """The period's host CPU time, split by weight among `active` domains;
        a domain's share is cut to what its vCPUs or cap can use, and what it
        cannot use goes to the others by weight (water-filling)."""
        left_ns = self.cpus * self.period_ns
        pool = list(active)
        shares: list[tuple[Domain, int]] = []
        while pool:
            total_weight = sum(d.weight for d in pool)
            full = [
                d for d in pool if d.limit_ns(self.period_ns) <= left_ns * d.weight // total_weight
            ]
            if not full:
                shares += [(d, left_ns * d.weight // total_weight) for d in pool]
                break
            for domain in full:
                limit = domain.limit_ns(self.period_ns)
                shares.append((domain, limit))
                left_ns -= limit
                pool.remove(domain)
        return shares
