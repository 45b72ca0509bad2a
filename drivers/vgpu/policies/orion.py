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
"""

from __future__ import annotations

from drivers.vgpu.policies.base import PRIO_HIGH, PRIO_LOW, SharingPolicy, microseconds

#: The duration cap where no high-priority request profile is known.
DEFAULT_DURATION_CAP_NS = 150_000


class Orion(SharingPolicy):
    name = "orion"
    summary = (
        "Orion: best-effort admission by SMs, compute/memory profile and outstanding duration "
        "(duration_cap_us 0: 2.5% of the high-priority request time)."
    )
    PARAMETERS = {"duration_cap_us": microseconds("duration_cap_ns")}

    def __init__(
        self,
        sm_threshold: int | None = None,
        duration_cap_ns: int | None = None,
        duration_cap_share: float = 0.025,
    ) -> None:
        self.sm_threshold = sm_threshold
        self.duration_cap_ns = duration_cap_ns
        self.duration_cap_share = duration_cap_share

    def setup(self) -> None:
        sim = self.sim
        self.threshold = self.sm_threshold or sim.spec.n_sms
        hp_requests = [s.request_iso_ns for s in sim.streams if s.hp and s.request_iso_ns]
        if self.duration_cap_ns:
            self.cap_ns = self.duration_cap_ns
        elif hp_requests:
            self.cap_ns = int(self.duration_cap_share * min(hp_requests))
        else:  # no request profile (the booted driver's programs)
            self.cap_ns = DEFAULT_DURATION_CAP_NS
        self.held: list = []
        self.out_sms = 0
        self.out_ns = 0
        self.outstanding: dict[int, tuple[int, int]] = {}  # BE stream -> (sms, ns) in flight
        self.admitted_busy = 0
        self.admitted_idle = 0

    def priority(self, s) -> int:
        return PRIO_HIGH if s.hp else PRIO_LOW

    def kernel_ready(self, s) -> None:
        if s.hp:
            super().kernel_ready(s)
        else:
            self.held.append(s)
        self._admit()

    def atom_done(self, s, atom, kernel_done) -> None:
        if kernel_done and not s.hp:
            sms, ns = self.outstanding.pop(s.index, (0, 0))
            self.out_sms -= sms
            self.out_ns -= ns

    def stream_idle(self, s) -> None:
        if s.hp:
            self._admit()

    def _admissible(self, s, running: list) -> bool:
        if self.out_sms + s.kernel_sms > self.threshold:
            return False
        if self.out_ns + s.kernel_iso_ns > self.cap_ns:
            return False
        profile = s.kernel_profile
        return all(
            profile == -1 or h.kernel_profile == -1 or h.kernel_profile != profile for h in running
        )

    def _admit(self) -> None:
        if not self.held:
            return
        running = [h for h in self.sim.streams if h.hp and h.has_kernel]
        keep = []
        for s in self.held:
            if not s.kernel_pending:
                continue
            if running and not self._admissible(s, running):
                keep.append(s)
                continue
            if running:
                self.admitted_busy += 1
            else:
                self.admitted_idle += 1
            self.outstanding[s.index] = (s.kernel_sms, s.kernel_iso_ns)
            self.out_sms += s.kernel_sms
            self.out_ns += s.kernel_iso_ns
            self.launch_whole(s)
        self.held = keep

    def detach(self) -> None:
        self.held = []

    def report(self) -> dict:
        return {
            "sm_threshold": self.threshold,
            "duration_cap_ns": self.cap_ns,
            "admitted_beside_hp": self.admitted_busy,
            "admitted_hp_idle": self.admitted_idle,
        }
