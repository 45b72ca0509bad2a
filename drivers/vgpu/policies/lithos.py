"""LithOS: TPC quotas, stealing, atoms, right-sizing and DVFS (`drivers/vgpu/policies`).

After Coppock et al., "LithOS: An Operating System for Efficient Machine
Learning on GPUs" (SOSP 2025).  The mechanisms live in `drivers/vgpu/lithos`;
this policy puts them together:

* every tenant owns a TPC quota (`TpcScheduler`), and its atoms run on it,
  at the normal priority unless said below;
* a kernel is cut into atoms of 250-500 us (`Atomizer`), sized with the
  online `LatencyPredictor`, and a stream keeps at most `max_inflight`
  atoms launched, so the next atom can take new TPCs;
* TPCs of other tenants whose busy-until timers have run out are stolen:
  the next atom gets a second part on them, at the lowest priority, if it
  is predicted to end within `atom_max_ns`; at most `max_stolen` stolen
  atoms per tenant are outstanding.  An owner's atom that can start at
  once outranks stolen blocks, so the owner has its TPCs back at the next
  block boundary.  Its atoms queued behind its own go in launch order with
  the stolen blocks, at their priority: blocks stolen before the owner
  came back start at the end of its first atom, so a borrower waits for
  one of the owner's atoms, never for the owner's whole kernel;
* atoms launched before the policy took over (the driver re-divides the
  TPCs when a stream comes or goes, or another policy was in charge) stay
  on the masks and at the priorities they were launched with.  Those at
  the normal priority or above, on TPCs that are now another tenant's,
  hold them as stolen work does: while any is in flight, the owner's atoms
  on those TPCs go one priority above them, so a newly arrived kernel
  waits for the blocks running on its TPCs, not for the atoms (or whole
  kernel) queued behind them.  Nor are their TPCs stolen meanwhile: the
  busy-until timers know nothing of them;
* right-sizing (`RightSizer`, off by default) gives each kernel only the
  TPCs it needs within slip 1.1, from the owner's quota first;
* DVFS (`DvfsGovernor`, off by default) sets the clock from the runtime
  weighted frequency sensitivity of the recent kernels, rate-limited.

Kernels are keyed by the stream's `kernel_key`: in the simulator, tenant
and position in the request, the predictor's "kernel and its position in
the batch"; in the booted driver, context stream and kernel name.  A kernel never seen before is
estimated from its descriptor's block time until its first atom is back.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence

from drivers.vgpu.api import PRIORITY_LIMIT
from drivers.vgpu.lithos import Atomizer, DvfsGovernor, LatencyPredictor, RightSizer, TpcScheduler
from drivers.vgpu.policies import lithos_compiled
from drivers.vgpu.policies.base import PRIO_NORMAL, PRIO_STOLEN, SharingPolicy, microseconds, plain


class Lithos(SharingPolicy):
    name = "lithos"
    compiled_module = "drivers.vgpu.policies.lithos_compiled"
    summary = (
        "LithOS: TPC quotas, stealing, 250-500 us atoms, and optionally right-sizing "
        "(slip 1.1) and DVFS."
    )
    PARAMETERS = {
        "atom_max_us": microseconds("atom_max_ns"),
        "max_stolen": plain("max_stolen"),
        "stealing": plain("stealing"),
        "rightsizing": plain("rightsizing"),
        "rightsizing_fit": plain("rightsizing_fit"),
        "dvfs": plain("dvfs"),
        "slip": plain("slip"),
    }

    def __init__(
        self,
        *,
        quotas: Sequence[float] | None = None,
        atom_min_ns: int = 250_000,
        atom_max_ns: int = 500_000,
        max_stolen: int = 2,
        max_inflight: int = 2,
        stealing: bool = True,
        atomization: bool = True,
        rightsizing: bool = False,
        rightsizing_fit: bool = True,
        dvfs: bool = False,
        slip: float = 1.1,
        dvfs_period_ns: int = 50_000_000,
        dvfs_min_interval_ns: int = 200_000_000,
    ) -> None:
        self.quotas = None if quotas is None else tuple(quotas)
        self.atom_min_ns = atom_min_ns
        self.atom_max_ns = atom_max_ns
        self.max_stolen = max_stolen
        self.max_inflight = max_inflight
        self.stealing = stealing
        self.atomization = atomization
        self.rightsizing = rightsizing
        self.rightsizing_fit = rightsizing_fit
        self.dvfs = dvfs
        self.slip = slip
        self.dvfs_period_ns = dvfs_period_ns
        self.dvfs_min_interval_ns = dvfs_min_interval_ns

    @property
    def label(self) -> str:
        sizing = "+rightsizing" if self.rightsizing_fit else "+trim"
        return self.name + sizing * self.rightsizing + "+dvfs" * self.dvfs

    def setup(self) -> None:
        sim = self.sim
        streams = sim.streams
        quotas = self.quotas if self.quotas is not None else [s.quota for s in streams]
        if len(quotas) != len(streams):
            raise ValueError(f"lithos: {len(quotas)} quotas for {len(streams)} tenants")
        self.tpcs = TpcScheduler(sim.n_tpcs, quotas, self.max_stolen)
        self.predictor = LatencyPredictor()
        self.atomizer = Atomizer(self.atom_min_ns, self.atom_max_ns)
        self.sizer = RightSizer(self.slip, fit=self.rightsizing_fit) if self.rightsizing else None
        self.governor = None
        self.requested_mhz = sim.gpu.clock_mhz
        if self.dvfs:
            self.governor = DvfsGovernor(
                sim.spec, self.slip, self.dvfs_period_ns, self.dvfs_min_interval_ns
            )
            self.call_at(sim.now_ns + self.dvfs_period_ns, self._dvfs_tick)
        n = len(streams)
        self.own_until = [0] * n  # predicted end of each tenant's own atoms
        self.kernel_start_ns = [0] * n
        self.kernel_clock = [0] * n
        self.kernel_tpcs: list[int | None] = [None] * n
        self.kernel_used = [0] * n  # TPCs the current kernel ran on, at most
        # Atom id -> kernel key, waves, predicted ns, stolen, queued behind another.
        self.atoms: dict[int, tuple[Hashable, int, int | None, bool, bool]] = {}
        self.own_done_ns = [0] * n  # when the tenant's last own atom completed
        self.waiting: set[int] = set()
        # Atom id -> (stream, mask, priority) of the atoms in flight when the
        # policy took over, until each is done.
        self.inherited: dict[int, tuple[int, int, int]] = {
            atom: (s.index, mask, s.inflight_priorities[atom])
            for s in streams
            for atom, mask in s.inflight_masks.items()
        }
        self.stolen_atoms = 0
        self.own_atoms = 0

    # -- callbacks -----------------------------------------------------------

    def kernel_ready(self, s) -> None:
        i = s.index
        self.kernel_start_ns[i] = self.sim.now_ns
        self.kernel_clock[i] = self.sim.gpu.clock_mhz
        self.kernel_used[i] = 0
        if self.sizer is not None:
            own = self.tpcs.own_mask[i].bit_count() or self.sim.n_tpcs
            self.kernel_tpcs[i] = self.sizer.choose(
                s.kernel_key, s.grid, s.desc.blocks_per_tpc, own
            )
        self._pump(s)

    def atom_done(self, s, atom, kernel_done) -> None:
        sim = self.sim
        now = sim.now_ns
        i = s.index
        info = self.atoms.pop(atom, None)
        if info is None:  # launched before the policy took over
            self.inherited.pop(atom, None)
            if not kernel_done:
                self._pump(s)
            return
        key, waves, predicted, stolen, queued = info
        start = sim.atom_launch_ns[atom]
        if queued:  # it ran once the atom ahead of it was done
            start = max(start, self.own_done_ns[i])
        self.predictor.observe(key, waves, now - start, predicted)
        if stolen:
            self.tpcs.stolen_out[i] -= 1
        else:
            self.own_done_ns[i] = now
        if kernel_done:
            latency = now - self.kernel_start_ns[i]
            if self.sizer is not None:
                self.sizer.observe(key, self.kernel_used[i], latency)
            if self.governor is not None and self.kernel_clock[i] == sim.gpu.clock_mhz:
                self.governor.observe(key, latency, self.kernel_clock[i])
        else:
            self._pump(s)
        if self.waiting:
            for j in sorted(self.waiting):
                self.waiting.discard(j)
                w = sim.streams[j]
                if w is not s and w.kernel_pending:
                    self._pump(w)

    # -- placing atoms -------------------------------------------------------

    def _pump(self, s) -> None:
        while s.launched < s.grid and s.inflight < self.max_inflight:
            if not self._step(s):
                # No TPC now (no quota, nothing idle): retry on the next
                # completion, or when the first busy-until timer runs out.
                if s.index not in self.waiting:
                    self.waiting.add(s.index)
                    until = self.tpcs.busy_until[self.tpcs.owner != s.index]
                    later = until[until > self.sim.now_ns]
                    if later.size:
                        self.call_at(int(later.min()), self._retry, s)
                return

    def _retry(self, s) -> None:
        if s.index in self.waiting:
            self.waiting.discard(s.index)
            if s.kernel_pending:
                self._pump(s)

    def _step(self, s) -> bool:
        """Launch the next atom of `s` (own part, stolen part or both); False if no TPC."""
        sim = self.sim
        tpcs = self.tpcs
        now = sim.now_ns
        i = s.index
        want = self.kernel_tpcs[i]
        own = tpcs.own_mask[i]
        if want is not None and want < own.bit_count():
            own = tpcs.first_tpcs(own, want)
        n_own = own.bit_count()
        bpt = s.desc.blocks_per_tpc
        key = s.kernel_key
        learned_ns = self.predictor.wave_ns(key)
        known = learned_ns is not None
        wave_ns = learned_ns if learned_ns is not None else s.desc.block_duration_ns
        stolen = 0
        if self.stealing and (want is None or want > n_own):
            stolen = tpcs.stealable(i, now) & ~self._inherited_tpcs()
            if stolen and want is not None:
                stolen = tpcs.first_tpcs(stolen, want - n_own)
        remaining = s.grid - s.launched
        while True:
            n_all = n_own + stolen.bit_count()
            if n_all == 0:
                return False
            if self.atomization:
                blocks = self.atomizer.atom_blocks(remaining, n_all, bpt, wave_ns)
            else:
                blocks = remaining
            waves = math.ceil(blocks / (n_all * bpt))
            own_blocks = min(blocks, waves * n_own * bpt)
            stolen_blocks = blocks - own_blocks
            if stolen_blocks and waves * wave_ns > self.atom_max_ns and n_own:
                stolen = 0  # too long to run on TPCs an owner may want back
                continue
            break
        if stolen_blocks:  # take only the stolen TPCs the blocks can occupy
            stolen = tpcs.first_tpcs(stolen, math.ceil(stolen_blocks / (waves * bpt)))
        duration = round(waves * wave_ns)
        predicted = duration if known else None
        used = 0
        if own_blocks:
            start = max(now, self.own_until[i])
            self.own_until[i] = start + duration
            tpcs.claim(own, self.own_until[i])
            atom = sim.launch(s, own_blocks, own, self._own_priority(i, own, start > now))
            own_waves = math.ceil(own_blocks / (n_own * bpt))
            own_predicted = round(own_waves * wave_ns) if known else None
            self.atoms[atom] = (key, own_waves, own_predicted, False, start > now)
            self.own_atoms += 1
            used += n_own
        if stolen_blocks:
            tpcs.claim(stolen, now + duration)
            tpcs.stolen_out[i] += 1
            atom = sim.launch(s, stolen_blocks, stolen, PRIO_STOLEN, stolen=True)
            self.atoms[atom] = (key, waves, predicted, True, False)
            self.stolen_atoms += 1
            used += stolen.bit_count()
        self.kernel_used[i] = max(self.kernel_used[i], used)
        return True

    def _inherited_tpcs(self) -> int:
        """The TPCs of the atoms in flight since before the policy took over.

        Its busy-until timers know nothing of them: a part stolen there would
        wait, at the lowest priority, behind work that is not idle."""
        mask = 0
        for _, held, _ in self.inherited.values():
            mask |= held
        return mask

    def _own_priority(self, i: int, own: int, queued: bool) -> int:
        """The priority of stream `i`'s atom on its TPCs `own`.

        One that starts at once outranks stolen blocks (PRIO_NORMAL): the
        owner has its TPCs back at the next block boundary.  One queued
        behind the owner's own goes with stolen blocks, in launch order
        (PRIO_STOLEN): blocks stolen before it start before it, so a
        borrower waits for one of the owner's atoms, not for all of them.
        Either goes one above the atoms, at PRIO_NORMAL or above, that other
        streams launched on `own` before the policy took over and that are
        still in flight."""
        priority = PRIO_STOLEN if queued else PRIO_NORMAL
        for j, mask, inherited in self.inherited.values():
            if j != i and mask & own and inherited >= PRIO_NORMAL:
                priority = max(priority, min(inherited + 1, PRIORITY_LIMIT - 1))
        return priority

    # -- DVFS ----------------------------------------------------------------

    def _dvfs_tick(self) -> None:
        sim = self.sim
        assert self.governor is not None  # the tick runs only with DVFS on
        target = self.governor.decide(sim.now_ns, self.requested_mhz)
        if target is not None:
            sim.set_clock(target)
            self.requested_mhz = target
        self.call_at(sim.now_ns + self.dvfs_period_ns, self._dvfs_tick)

    def detach(self) -> None:
        self.waiting.clear()
        # The clock DVFS chose is this policy's: the next one starts at f_max.
        f_max = self.sim.spec.max_clock_mhz
        if self.governor is not None and self.requested_mhz != f_max:
            self.sim.set_clock(f_max)

    def compiled_setup(self, sim):
        return lithos_compiled.compiled_state(self, sim)

    def compiled_report(self, pol) -> dict:
        return lithos_compiled.report(pol)

    def report(self) -> dict:
        p = self.predictor
        out = {
            "quota_tpcs": [m.bit_count() for m in self.tpcs.own_mask],
            "predictions": p.predictions,
            "misprediction_rate": p.misprediction_rate,
            "mean_abs_error_us": p.mean_abs_error_ns / 1e3,
            "own_atoms": self.own_atoms,
            "stolen_atoms": self.stolen_atoms,
        }
        if self.sizer is not None and self.sizer.decisions:
            out["rightsized_tpc_share"] = self.sizer.tpcs_given / self.sizer.tpcs_available
        if self.governor is not None:
            out["clock_changes"] = self.governor.changes
            out["final_clock_mhz"] = self.requested_mhz
            out["sensitivity"] = self.governor.last_sensitivity
        return out
