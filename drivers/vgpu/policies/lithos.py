"""LithOS: TPC quotas, stealing, atoms, right-sizing and DVFS (`drivers/vgpu/policies`).

After Coppock et al., "LithOS: An Operating System for Efficient Machine
Learning on GPUs" (SOSP 2025).  The policy puts its mechanisms together:

* every tenant owns a TPC quota (the TPC scheduler, §4.1), and its atoms
  run on it, at the normal priority unless said below;
* a kernel is cut into atoms of 250-500 us (the atomizer, §4.2), sized
  with the online latency predictor (§5.4), and a stream keeps at most
  `max_inflight` atoms launched, so the next atom can take new TPCs;
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
* a best-effort tenant's TPCs are lent to the high-priority ones
  (`lend_best_effort`, on by default; ours, not the paper's): a
  high-priority atom takes them busy or not, at a priority above the
  owner's atoms, so it waits for the blocks running there and for nothing
  queued behind them.  Each high-priority tenant keeps its quota and gains
  the best-effort ones', so the second is not left to the first's idle
  TPCs;
* right-sizing (§5.5, off by default) gives each kernel only the TPCs it
  needs within the slip of what it would run on without it (its quota,
  the TPCs it may steal now and those lent to it), from the owner's quota
  first, then stolen, then lent;
* DVFS (§6, off by default) sets the clock so that work of the most
  clock-sensitive high-priority tenant slows by at most the slip,
  rate-limited.

Right-sizing and DVFS estimate a kernel's slowdown (`estimate`) from the
isolated block times the engine knows, by default: a kernel's blocks all
take one time, so on t TPCs it takes waves(t) / waves(t_all) of its time
on t_all, and at clock f its blocks take compute * f_max / f + memory.
Neither is skewed by interference, which the paper's online measurements
(`estimate="observed"`: latency fitted on 1 / TPCs, latency at two clocks,
both measured in the mix) are: a kernel slowed by its neighbours looks
insensitive to TPCs and clock alike.  `docs/lithos-vs-paper.md` lists
where this file departs from the paper, and why.

Each mechanism is a function below, called compiled by the loop or, from
a test, interpreted: `claim`/`stealable` (the TPC scheduler),
`atom_blocks` (atoms), `observe` (the predictor; a misprediction is an
error over 50 us), `choose`/`sizer_observe` (right-sizing: the smallest knee
within the slip, on isolated wave counts or on latency fitted as
l(t) = m/t + b) and `governor_observe`/`target_mhz`/`decide` (DVFS:
f = f_max / (1 + slip/S), rate-limited), `lendable` (lending).
`drivers/vgpu/lithos` keeps the quota layout.  Kernels are keyed by
stream and kernel slot: in the simulator, tenant and position in the
request, the predictor's "kernel and its position in the batch"; in the
booted driver, context stream and a slot per kernel name.  A kernel never
seen before is estimated from its descriptor's block time until its first
atom is back.

TPC masks are int64 bit sets, busy-until times an int64 per TPC, the
predictor a wave time per (stream, kernel position), NaN where never seen.
The policy's scalars and per-stream and per-TPC values are its named state
(`STATE`); an atom's record is a row of its per-atom table (`ATOM`); what
the predictor, right-sizing and DVFS learn of each kernel, a record per
(stream, kernel position) (`KERNEL`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from drivers.vgpu.api import PRIORITY_LIMIT
from drivers.vgpu.engine import A_DONE_NS
from drivers.vgpu.lithos import TpcScheduler
from drivers.vgpu.sharing.compiled import (
    AT_LAUNCH_NS,
    AT_MASK,
    AT_POS,
    AT_PRIO,
    AT_STREAM,
    D_FMAX,
    D_FMIN,
    D_FSTEP,
    D_NATOMS,
    D_NOW,
    D_NSTREAMS,
    D_NTPCS,
    D_OPEN_ATOM,
    K_BLOCK_NS,
    K_BPT,
    K_COMPUTE,
    K_ISO,
    K_MEM,
    MAX_STREAMS,
    MAX_TPCS,
    POLICY_TIMERS,
    ST_GRID,
    ST_HAS_KERNEL,
    ST_HP,
    ST_INFLIGHT,
    ST_LAUNCHED,
    ST_SLOT,
    Pol,
    atom_record,
    clock_mhz,
    compiled_fn,
    kernel_index,
    kernel_pending,
    kernel_record,
    launch,
    lowest_tpc,
    named_state,
    named_table,
    new_state,
    new_table,
    policy_call_at,
    popcount,
    set_clock,
    state_of,
    state_values,
)
from drivers.vgpu.sharing.policy import (
    PRIO_HIGH,
    PRIO_NORMAL,
    PRIO_STOLEN,
    SharingPolicy,
    microseconds,
    plain,
)


class Lithos(SharingPolicy):
    name = "lithos"
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
        "estimate": plain("estimate"),
        "lend_best_effort": plain("lend_best_effort"),
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
        estimate: str = "isolated",
        lend_best_effort: bool = True,
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
        self.estimate = estimate
        self.lend_best_effort = lend_best_effort
        self.dvfs_period_ns = dvfs_period_ns
        self.dvfs_min_interval_ns = dvfs_min_interval_ns

    @property
    def label(self) -> str:
        sizing = "+rightsizing" if self.rightsizing_fit else "+trim"
        return self.name + sizing * self.rightsizing + "+dvfs" * self.dvfs

    def compiled_setup(self, sim) -> Pol:
        """The state on `sim`: each tenant's quota of TPCs, every TPC idle,
        nothing learned yet."""
        self.sim = sim
        streams = sim.streams
        n, t = len(streams), sim.n_tpcs
        quotas = self.quotas if self.quotas is not None else [s.quota for s in streams]
        if len(quotas) != n:
            raise ValueError(f"lithos: {len(quotas)} quotas for {n} tenants")
        if self.slip < 1.0:
            raise ValueError(f"right-sizing and DVFS slip must be at least 1, got {self.slip}")
        if self.estimate not in ESTIMATES:
            raise ValueError(
                f"lithos: estimate must be one of {', '.join(ESTIMATES)}, got {self.estimate!r}"
            )
        if n > MAX_STREAMS or t > MAX_TPCS:
            raise ValueError(f"lithos: at most {MAX_STREAMS} tenants and {MAX_TPCS} TPCs")
        tpcs = TpcScheduler(t, quotas, self.max_stolen)
        width = max((s.kernel_slots for s in streams), default=1)
        full = (1 << t) - 1
        best_effort = 0
        for s, mask in zip(streams, tpcs.own_mask, strict=True):
            if not s.hp:
                best_effort |= mask
        pol = new_state(
            STATE, 0,
            atom_min_ns=self.atom_min_ns,
            atom_max_ns=self.atom_max_ns,
            max_stolen=self.max_stolen,
            max_inflight=self.max_inflight,
            stealing=int(self.stealing),
            atomization=int(self.atomization),
            idle=full,
            idle_until=_FOREVER,
            threshold_ns=50_000,
            rightsizing=int(self.rightsizing),
            fit=int(self.rightsizing_fit),
            isolated=int(self.estimate == "isolated"),
            lend=int(self.lend_best_effort),
            best_effort_mask=best_effort,
            dvfs=int(self.dvfs),
            last_change_ns=-(1 << 62),
            dvfs_period_ns=self.dvfs_period_ns,
            dvfs_min_interval_ns=self.dvfs_min_interval_ns,
            window_first=-1,
            window_last=-1,
            weight=0.5,
            slip=self.slip,
            max_shrink=0.5,  # right-sizing: never below half the fewest TPCs seen
            allowed_slowdown=self.slip - 1.0,
            unseen_share=0.1,  # DVFS: f_max while unseen kernels run over a tenth of the time
            dvfs_weight=0.5,
            last_sensitivity=math.nan,
            own_mask=tpcs.own_mask,
            not_owned=[full & ~m for m in tpcs.own_mask],
            kernel_tpcs=[-1] * n,
            owner=tpcs.owner,
        )  # fmt: skip
        learned = new_table(
            KERNEL, (n, width),
            wave_ns=math.nan, t_min=1 << 30, l_max=math.nan, sensitivity=math.nan, window_next=-1,
        )  # fmt: skip
        return pol._replace(at=new_table(ATOM, 1), kn=learned)

    def compiled_report(self, pol: Pol) -> dict:
        st = state_values(pol, STATE)
        n_streams = len(pol.kn)  # a row per stream, held either way
        masks = st["own_mask"][:n_streams]
        predictions = int(st["predictions"])
        out = {
            "quota_tpcs": [int(m).bit_count() for m in masks],
            "predictions": predictions,
            "misprediction_rate": int(st["mispredictions"]) / predictions if predictions else 0.0,
            "mean_abs_error_us": (float(st["abs_error"]) / predictions if predictions else 0.0)
            / 1e3,
            "own_atoms": int(st["own_atoms"]),
            "stolen_atoms": int(st["stolen_atoms"]),
        }
        if st["rightsizing"] and st["decisions"]:
            out["rightsized_tpc_share"] = int(st["given"]) / int(st["available"])
        out["lent_atoms"] = int(st["lent_atoms"])
        if st["dvfs"]:
            sensitivity = float(st["last_sensitivity"])
            out["clock_changes"] = int(st["changes"])
            out["final_clock_mhz"] = int(st["requested_mhz"])
            out["sensitivity"] = None if math.isnan(sensitivity) else sensitivity
        return out


_FOREVER = 1 << 62
#: How right-sizing and DVFS estimate a kernel's slowdown: "isolated", from
#: the block times the engine knows (TPC count and clock alone, no
#: interference: see the module's doc); "observed", the paper's online
#: measurements of the kernel's latency (a fit on 1 / TPCs; latency at two
#: clocks).
ESTIMATES = ("isolated", "observed")

STATE = named_state(
    atom_min_ns=np.int64,
    atom_max_ns=np.int64,
    max_stolen=np.int64,
    max_inflight=np.int64,
    stealing=np.int64,
    atomization=np.int64,
    idle=np.int64,  # TPCs idle now, kept until idle_until
    idle_until=np.int64,
    waiting=np.int64,  # streams waiting for a TPC, a bit set
    stolen_atoms=np.int64,
    own_atoms=np.int64,
    predictions=np.int64,
    mispredictions=np.int64,
    threshold_ns=np.int64,
    rightsizing=np.int64,
    fit=np.int64,
    isolated=np.int64,  # right-sizing and DVFS estimate from isolated block times
    lend=np.int64,  # best-effort tenants' TPCs are lent to high-priority ones
    best_effort_mask=np.int64,  # the TPCs best-effort tenants own
    lent_atoms=np.int64,
    dvfs=np.int64,
    decisions=np.int64,  # right-sizing: kernels sized, TPCs given, TPCs they could have had
    given=np.int64,
    available=np.int64,
    requested_mhz=np.int64,  # DVFS: the clock asked for last
    last_change_ns=np.int64,
    changes=np.int64,
    dvfs_period_ns=np.int64,
    dvfs_min_interval_ns=np.int64,
    # The DVFS window's kernels, in the order seen: a list linked through
    # their records (`KERNEL`'s window_next), from window_first.  A kernel
    # (s, pos) is named pos * MAX_STREAMS + s.
    window_n=np.int64,
    window_first=np.int64,
    window_last=np.int64,
    # The atoms in flight when the policy took over (`ATOM`'s inherited):
    # how many are still in flight, and the range of atom ids they are within.
    inherited=np.int64,
    inherited_first=np.int64,
    inherited_end=np.int64,
    weight=np.float64,  # the predictor's
    abs_error=np.float64,
    slip=np.float64,
    max_shrink=np.float64,
    allowed_slowdown=np.float64,
    unseen_share=np.float64,
    dvfs_weight=np.float64,
    last_sensitivity=np.float64,  # NaN: none yet
    # Per stream.
    own_mask=(np.int64, MAX_STREAMS),
    not_owned=(np.int64, MAX_STREAMS),
    stolen_out=(np.int64, MAX_STREAMS),
    own_until=(np.int64, MAX_STREAMS),
    kernel_start=(np.int64, MAX_STREAMS),
    own_done=(np.int64, MAX_STREAMS),
    kernel_tpcs=(np.int64, MAX_STREAMS),  # the TPCs right-sizing gave the kernel, -1: no choice
    kernel_used=(np.int64, MAX_STREAMS),  # the most it ran on
    kernel_clock=(np.int64, MAX_STREAMS),  # the clock it started at
    # DVFS on isolated block times: per stream, the isolated time of the
    # kernels started so far, and its part that scales with the clock.
    iso_ns=(np.float64, MAX_STREAMS),
    compute_ns=(np.float64, MAX_STREAMS),
    # Per TPC.
    owner=(np.int64, MAX_TPCS),
    busy_until=(np.int64, MAX_TPCS),
)
state = state_of(STATE)

# An atom's record, from its launch until it is done.
ATOM = named_table(
    present=np.int64,  # launched by this policy, and not done yet
    waves=np.int64,
    predicted=np.int64,  # -1: none
    stolen=np.int64,
    queued=np.int64,
    lent=np.int64,  # on a best-effort tenant's TPCs, lent
    inherited=np.int64,  # 1: in flight when the policy took over, and not done yet
)
atom_of = atom_record(ATOM)

# What is learned per kernel (stream, position).
KERNEL = named_table(
    wave_ns=np.float64,  # the predictor's; NaN: never seen
    fit_n=np.int64,  # right-sizing's fit of latency on 1 / TPCs
    t_min=np.int64,
    t_seen=np.int64,  # bit t-1: seen on t TPCs
    sx=np.float64,
    sxx=np.float64,
    sy=np.float64,
    sxy=np.float64,
    l_max=np.float64,  # DVFS: latency at f_max, sensitivity; NaN until known
    sensitivity=np.float64,
    window_ns=np.int64,
    in_window=np.int64,
    window_next=np.int64,  # the next kernel in the window (STATE's window_first)
)
kernel_of = kernel_record(KERNEL)

RETRY = POLICY_TIMERS
DVFS_TICK = POLICY_TIMERS + 1


# -- the TPC scheduler (§4.1) -------------------------------------------------


@compiled_fn
def claim(p, mask, until_ns):
    st = state(p)
    busy_until = st["busy_until"]
    m = mask
    while m:
        low = m & -m
        t = lowest_tpc(low)
        if busy_until[t] < until_ns:
            busy_until[t] = until_ns
        m ^= low
    st["idle"] &= ~mask
    if until_ns < st["idle_until"]:
        st["idle_until"] = until_ns


@compiled_fn
def stealable(d, p, s, now):
    st = state(p)
    if st["stolen_out"][s] >= st["max_stolen"]:
        return 0
    return idle_tpcs(d, p, now) & st["not_owned"][s]


@compiled_fn
def idle_tpcs(d, p, now):
    """The TPCs whose busy-until timers have run out (kept until the first
    of the others runs out)."""
    st = state(p)
    if now >= st["idle_until"]:
        busy_until = st["busy_until"]
        idle = 0
        until = _FOREVER
        for t in range(d.sc[D_NTPCS]):
            b = busy_until[t]
            if b <= now:
                idle |= 1 << t
            elif b < until:
                until = b
        st["idle"] = idle
        st["idle_until"] = until
    return st["idle"]


@compiled_fn
def first_tpcs(mask, count):
    out = 0
    while mask and count > 0:
        low = mask & -mask
        run = mask & ~(mask + low)
        n = popcount(run)
        if n >= count:
            return out | ((1 << count) - 1) * low
        out |= run
        mask ^= run
        count -= n
    return out


# -- the atomizer (§4.2) and the latency predictor (§5.4) ----------------------


@compiled_fn
def atom_blocks(p, remaining, n_tpcs, blocks_per_tpc, wave_ns):
    max_ns = state(p)["atom_max_ns"]
    wave_blocks = n_tpcs * blocks_per_tpc
    waves = math.ceil(remaining / wave_blocks)
    total_ns = waves * max(1.0, wave_ns)
    if total_ns <= max_ns:
        return remaining
    cap = max(1, int(max_ns // max(1.0, wave_ns)))
    n_atoms = math.ceil(waves / cap)
    per_atom = math.ceil(waves / n_atoms)
    return min(remaining, per_atom * wave_blocks)


@compiled_fn
def observe(p, s, pos, waves, actual_ns, predicted_ns):
    st = state(p)
    if predicted_ns >= 0:
        st["predictions"] += 1
        error = abs(actual_ns - predicted_ns)
        st["abs_error"] += error
        if error > st["threshold_ns"]:
            st["mispredictions"] += 1
    sample = actual_ns / max(1, waves)
    k = kernel_of(p, s, pos)
    old = k["wave_ns"]
    k["wave_ns"] = sample if np.isnan(old) else old + st["weight"] * (sample - old)


# -- the callbacks --------------------------------------------------------------


@compiled_fn
def compiled_setup(d, p):
    st = state(p)
    st["requested_mhz"] = clock_mhz(d)
    first = d.sc[D_OPEN_ATOM]
    st["inherited_first"] = first
    st["inherited_end"] = d.sc[D_NATOMS]
    for a in range(first, d.sc[D_NATOMS]):
        if d.eng.atoms[A_DONE_NS, a] < 0:
            atom_of(p, a)["inherited"] = 1
            st["inherited"] += 1
    if st["dvfs"]:
        policy_call_at(d, d.sc[D_NOW] + st["dvfs_period_ns"], DVFS_TICK, 0)


@compiled_fn
def compiled_kernel_ready(d, p, s):
    st = state(p)
    st["kernel_start"][s] = d.sc[D_NOW]
    st["kernel_clock"][s] = clock_mhz(d)
    st["kernel_used"][s] = 0
    k = kernel_index(d, s)
    if st["rightsizing"]:
        st["kernel_tpcs"][s] = choose(
            p, s, d.st[ST_SLOT, s], d.st[ST_GRID, s], d.kern[K_BPT, k], reference_tpcs(d, p, s)
        )  # fmt: skip
    if st["dvfs"] and st["isolated"]:
        iso = float(d.kern[K_ISO, k])
        block_ns = d.kern[K_COMPUTE, k] + d.kern[K_MEM, k]
        st["iso_ns"][s] += iso
        if block_ns > 0:
            st["compute_ns"][s] += iso * d.kern[K_COMPUTE, k] / block_ns
    pump(d, p, s)


@compiled_fn
def compiled_atom_done(d, p, s, atom, kernel_done):
    now = d.sc[D_NOW]
    st = state(p)
    a = atom_of(p, atom)  # `Pol.at` is as long as the atom table (`LoopRun._sized`)
    if a["present"] == 0:  # launched before the policy took over
        if a["inherited"]:
            a["inherited"] = 0
            st["inherited"] -= 1
        if not kernel_done:
            pump(d, p, s)
        return
    a["present"] = 0
    start = d.atoms[AT_LAUNCH_NS, atom]
    if a["queued"]:
        start = max(start, st["own_done"][s])
    if not a["lent"]:
        observe(p, s, d.atoms[AT_POS, atom], a["waves"], now - start, a["predicted"])
    if a["stolen"]:
        st["stolen_out"][s] -= 1
    else:
        st["own_done"][s] = now
    if kernel_done:
        latency = now - st["kernel_start"][s]
        pos = d.st[ST_SLOT, s]
        if st["rightsizing"]:
            sizer_observe(p, s, pos, st["kernel_used"][s], latency)
        clock = st["kernel_clock"][s]
        if st["dvfs"] and not st["isolated"] and clock == clock_mhz(d):
            governor_observe(d, p, s, pos, latency, clock)
    else:
        pump(d, p, s)
    waiting = st["waiting"]
    if waiting:
        for j in range(d.sc[D_NSTREAMS]):
            if waiting >> j & 1:
                st["waiting"] &= ~(1 << j)
                if j != s and kernel_pending(d, j):
                    pump(d, p, j)


@compiled_fn
def compiled_timer(d, p, kind, arg):
    st = state(p)
    if kind == DVFS_TICK:
        target = decide(d, p, d.sc[D_NOW], st["requested_mhz"])
        if target >= 0:
            set_clock(d, target)
            st["requested_mhz"] = target
        policy_call_at(d, d.sc[D_NOW] + st["dvfs_period_ns"], DVFS_TICK, 0)
    elif kind == RETRY:
        s = arg
        if st["waiting"] >> s & 1:
            st["waiting"] &= ~(1 << s)
            if kernel_pending(d, s):
                pump(d, p, s)


@compiled_fn
def compiled_detach(d, p):
    st = state(p)
    st["waiting"] = 0
    # The clock DVFS chose is this policy's: the next one starts at f_max.
    if st["dvfs"] and st["requested_mhz"] != d.sc[D_FMAX]:
        set_clock(d, d.sc[D_FMAX])


@compiled_fn
def pump(d, p, s):
    st, ds = state(p), d.st
    while ds[ST_LAUNCHED, s] < ds[ST_GRID, s] and ds[ST_INFLIGHT, s] < st["max_inflight"]:
        if not step(d, p, s):
            # No TPC now: retry on the next completion, or when the first
            # busy-until timer of another tenant's TPC runs out.
            if not st["waiting"] >> s & 1:
                st["waiting"] |= 1 << s
                now = d.sc[D_NOW]
                first = _FOREVER
                for t in range(d.sc[D_NTPCS]):
                    if st["owner"][t] != s:
                        b = st["busy_until"][t]
                        if now < b < first:
                            first = b
                if first < _FOREVER:
                    policy_call_at(d, first, RETRY, s)
            return


@compiled_fn
def step(d, p, s):
    """Launch the next atom of `s` (own part, stolen part, lent part or
    several); False if no TPC."""
    st, ds = state(p), d.st
    now = d.sc[D_NOW]
    want = st["kernel_tpcs"][s]
    own = st["own_mask"][s]
    if 0 <= want < popcount(own):
        own = first_tpcs(own, want)
    n_own = popcount(own)
    k = kernel_index(d, s)
    bpt = d.kern[K_BPT, k]
    pos = ds[ST_SLOT, s]
    learned = kernel_of(p, s, pos)["wave_ns"]
    known = not np.isnan(learned)
    wave_ns = learned if known else float(d.kern[K_BLOCK_NS, k])
    stolen = 0
    lent = 0
    if st["stealing"] and (want < 0 or want > n_own):
        stolen = stealable(d, p, s, now)
        lent = lendable(d, p, s) & ~stolen  # busy ones: `s` outranks their owner
        if st["inherited"]:
            stolen &= ~inherited_tpcs(d, p)
            lent &= ~inherited_tpcs(d, p)
        if want >= 0:
            stolen = first_tpcs(stolen, want - n_own)
            lent = first_tpcs(lent, want - n_own - popcount(stolen))
    if stolen and lent and st["stolen_out"][s] + 2 > st["max_stolen"]:
        lent = 0  # one part more than the bound on borrowed atoms allows
    remaining = ds[ST_GRID, s] - ds[ST_LAUNCHED, s]
    if lent:
        # Lent TPCs start once the owner's running blocks end: worth it
        # only if the rest of the kernel ends sooner for them.
        n_have = n_own + popcount(stolen)
        n_lent = popcount(lent)
        with_ns = lend_wait_ns(d, p) + math.ceil(remaining / ((n_have + n_lent) * bpt)) * wave_ns
        if n_have and with_ns >= math.ceil(remaining / (n_have * bpt)) * wave_ns:
            lent = 0
    while True:
        n_stolen = popcount(stolen)
        n_all = n_own + n_stolen + popcount(lent)
        if n_all == 0:
            return False
        blocks = remaining
        if st["atomization"]:
            blocks = atom_blocks(p, remaining, n_all, bpt, wave_ns)
        waves = math.ceil(blocks / (n_all * bpt))
        own_blocks = min(blocks, waves * n_own * bpt)
        stolen_blocks = min(blocks - own_blocks, waves * n_stolen * bpt)
        lent_blocks = blocks - own_blocks - stolen_blocks
        if stolen_blocks + lent_blocks and waves * wave_ns > st["atom_max_ns"] and n_own:
            stolen = lent = 0  # too long to run on TPCs an owner may want back
            continue
        break
    # Take only the stolen and lent TPCs the blocks can occupy.
    if stolen_blocks:
        stolen = first_tpcs(stolen, math.ceil(stolen_blocks / (waves * bpt)))
    if lent_blocks:
        lent = first_tpcs(lent, math.ceil(lent_blocks / (waves * bpt)))
    duration = round(waves * wave_ns)
    predicted = duration if known else -1
    used = 0
    if own_blocks:
        start = max(now, st["own_until"][s])
        st["own_until"][s] = start + duration
        claim(p, own, start + duration)
        queued = start > now
        atom = launch(d, s, own_blocks, own, own_priority(d, p, s, own, queued), 0, -1)
        own_waves = math.ceil(own_blocks / (n_own * bpt))
        a = atom_of(p, atom)
        a["present"] = 1
        a["waves"] = own_waves
        a["predicted"] = round(own_waves * wave_ns) if known else -1
        a["stolen"] = 0
        a["queued"] = queued
        a["lent"] = 0
        st["own_atoms"] += 1
        used += n_own
    if stolen_blocks:
        borrow(d, p, s, stolen_blocks, stolen, PRIO_STOLEN, waves, predicted, now + duration)
        st["stolen_atoms"] += 1
        used += popcount(stolen)
    if lent_blocks:
        atom = borrow(d, p, s, lent_blocks, lent, PRIO_HIGH, waves, predicted, now + duration)
        atom_of(p, atom)["lent"] = 1  # its time includes the wait for the owner's blocks
        st["lent_atoms"] += 1
        used += popcount(lent)
    st["kernel_used"][s] = max(st["kernel_used"][s], used)
    return True


@compiled_fn
def borrow(d, p, s, blocks, mask, priority, waves, predicted, until_ns):
    """Launch `blocks` of stream `s` on another tenant's TPCs `mask`: a
    stolen or lent part, counted against `max_stolen`; its atom id."""
    st = state(p)
    claim(p, mask, until_ns)
    st["stolen_out"][s] += 1
    atom = launch(d, s, blocks, mask, priority, 1, -1)
    a = atom_of(p, atom)
    a["present"] = 1
    a["waves"] = waves
    a["predicted"] = predicted
    a["stolen"] = 1
    a["queued"] = 0
    a["lent"] = 0
    return atom


@compiled_fn
def lend_wait_ns(d, p):
    """The longest a lent TPC may stay busy with its owner's block: the
    longest isolated block time of the best-effort tenants' current kernels."""
    wait = 0
    for j in range(d.sc[D_NSTREAMS]):
        if not d.st[ST_HP, j] and d.st[ST_HAS_KERNEL, j]:
            wait = max(wait, d.kern[K_BLOCK_NS, kernel_index(d, j)])
    return wait


@compiled_fn
def lendable(d, p, s):
    """The best-effort tenants' TPCs that high-priority stream `s` may have
    whether or not they are busy, at a priority above their owners' atoms
    (0 where lending is off, `s` is best effort, or its stolen atoms are at
    the bound)."""
    st = state(p)
    if not st["lend"] or not d.st[ST_HP, s] or st["stolen_out"][s] >= st["max_stolen"]:
        return 0
    return st["best_effort_mask"] & st["not_owned"][s]


@compiled_fn
def reference_tpcs(d, p, s):
    """The TPCs stream `s`'s next kernel would run on without right-sizing:
    its own, those it may steal now and those lent to it (all TPCs where
    that is none).  Right-sizing's slip is counted against this."""
    st = state(p)
    n = popcount(st["own_mask"][s])
    if st["stealing"]:  # whether or not `s` is at its bound on stolen atoms now
        others = st["not_owned"][s]
        idle = idle_tpcs(d, p, d.sc[D_NOW]) & others
        n += popcount(idle)
        if st["lend"] and d.st[ST_HP, s]:
            n += popcount(st["best_effort_mask"] & others & ~idle)
    return min(n, d.sc[D_NTPCS]) if n else d.sc[D_NTPCS]


@compiled_fn
def inherited_tpcs(d, p):
    """The TPCs of the atoms still in flight since before the policy took over.

    Its busy-until timers know nothing of them: a part stolen there would
    wait, at the lowest priority, behind work that is not idle."""
    st, at = state(p), d.atoms
    mask = 0
    for a in range(st["inherited_first"], st["inherited_end"]):
        if atom_of(p, a)["inherited"]:
            mask |= at[AT_MASK, a]
    return mask


@compiled_fn
def own_priority(d, p, s, own, queued):
    """The priority of stream `s`'s atom on its TPCs `own`.

    One that starts at once outranks stolen blocks (PRIO_NORMAL): the owner
    has its TPCs back at the next block boundary.  One `queued` behind the
    owner's own goes with stolen blocks, in launch order (PRIO_STOLEN):
    blocks stolen before it start before it, so a borrower waits for one of
    the owner's atoms, not for all of them.  Either goes one above the
    atoms, at PRIO_NORMAL or above, that other streams launched on `own`
    before the policy took over and that are still in flight."""
    priority = PRIO_STOLEN if queued else PRIO_NORMAL
    st = state(p)
    if st["inherited"] == 0:
        return priority
    at = d.atoms
    for a in range(st["inherited_first"], st["inherited_end"]):
        if atom_of(p, a)["inherited"] and at[AT_STREAM, a] != s and at[AT_MASK, a] & own:
            inherited = at[AT_PRIO, a]
            if inherited >= PRIO_NORMAL:
                priority = max(priority, min(inherited + 1, PRIORITY_LIMIT - 1))
    return priority


# -- right-sizing (§5.5) -----------------------------------------------------------


@compiled_fn
def knee(grid, blocks_per_tpc, waves):
    return max(1, math.ceil(grid / (waves * blocks_per_tpc)))


@compiled_fn
def smallest_knee_at_least(grid, blocks_per_tpc, x):
    if x <= 1:
        return 1
    w = max(1, math.ceil(grid / (blocks_per_tpc * (x - 1))) - 1)
    t = knee(grid, blocks_per_tpc, w)
    while t < x and w > 1:
        w -= 1
        t = knee(grid, blocks_per_tpc, w)
    return t


@compiled_fn
def choose(p, s, pos, grid, bpt, t_all):
    """TPCs (1..t_all) for the next run of kernel (s, pos): the smallest knee
    whose fitted l(t) = m/t + b stays within the slip (LithOS §5.5)."""
    w_all = math.ceil(grid / (t_all * bpt))
    t_first = knee(grid, bpt, w_all)
    t = _choose(p, s, pos, grid, bpt, w_all, t_first)
    st = state(p)
    st["decisions"] += 1
    st["given"] += t
    st["available"] += t_all
    return t


@compiled_fn
def _choose(p, s, pos, grid, bpt, w_all, t_first):
    st, k = state(p), kernel_of(p, s, pos)
    if not st["fit"]:
        return t_first
    if st["isolated"]:
        # Every block of a kernel takes the same isolated time, so on t TPCs
        # the kernel takes waves(t) / waves(t_all) of its time on t_all: the
        # fewest TPCs whose waves stay within the slip.
        return knee(grid, bpt, max(w_all, int(math.floor(st["slip"] * w_all + 1e-9))))
    n = k["fit_n"]
    if n == 0:
        return t_first
    seen = k["t_seen"]
    if popcount(seen) < 2:
        probe = knee(grid, bpt, w_all + 1)
        probe_seen = probe <= 64 and (seen >> (probe - 1)) & 1
        return probe if probe < t_first and not probe_seen else t_first
    sx, sxx, sy, sxy = k["sx"], k["sxx"], k["sy"], k["sxy"]
    det = n * sxx - sx * sx
    if det <= 0:
        m, b = 0.0, sy / max(1, n)
    else:
        m = (n * sxy - sx * sy) / det
        b = (sy - m * sx) / n
    lower = max(1, math.ceil(k["t_min"] * st["max_shrink"]))
    if m <= 0:
        x = lower
    else:
        headroom = st["slip"] * (m / t_first + b) - b
        x = max(lower, math.ceil(m / headroom)) if headroom > 0 else t_first
    return min(t_first, smallest_knee_at_least(grid, bpt, x))


@compiled_fn
def sizer_observe(p, s, pos, tpcs, latency_ns):
    """Kernel (s, pos) ran on `tpcs` TPCs in `latency_ns`: a point of its fit
    of the latency on 1 / TPCs, kept as running sums."""
    k = kernel_of(p, s, pos)
    x = 1.0 / tpcs
    k["fit_n"] += 1
    k["sx"] += x
    k["sxx"] += x * x
    k["sy"] += latency_ns
    k["sxy"] += x * latency_ns
    k["t_seen"] |= 1 << (tpcs - 1)
    k["t_min"] = min(k["t_min"], tpcs)


# -- DVFS (§6) ---------------------------------------------------------------------


@compiled_fn
def governor_observe(d, p, s, pos, latency_ns, clock):
    """Kernel (s, pos) ran in `latency_ns` at `clock`: its latency at f_max,
    or its frequency sensitivity, and its runtime in the window."""
    st, k = state(p), kernel_of(p, s, pos)
    w = st["dvfs_weight"]
    f_max = d.sc[D_FMAX]
    l_max = k["l_max"]
    if clock == f_max:
        k["l_max"] = latency_ns if np.isnan(l_max) else l_max + w * (latency_ns - l_max)
    elif not np.isnan(l_max):
        slowdown = latency_ns / l_max - 1.0
        sens = min(1.0, max(0.0, slowdown / (f_max / clock - 1.0)))
        old = k["sensitivity"]
        k["sensitivity"] = sens if np.isnan(old) else old + w * (sens - old)
    if not k["in_window"]:  # the window lists kernels in the order first seen
        k["in_window"] = 1
        key = pos * MAX_STREAMS + s
        if st["window_n"]:
            last = st["window_last"]
            kernel_of(p, last % MAX_STREAMS, last // MAX_STREAMS)["window_next"] = key
        else:
            st["window_first"] = key
        st["window_last"] = key
        st["window_n"] += 1
    k["window_ns"] += latency_ns


@compiled_fn
def target_mhz(d, p):
    """The clock for the window's mix, f = f_max / (1 + slip / S); -1: nothing ran."""
    st = state(p)
    if st["isolated"]:
        return isolated_target_mhz(d, p)
    total = unseen = weighted = 0.0
    key = st["window_first"]
    for _ in range(st["window_n"]):
        k = kernel_of(p, key % MAX_STREAMS, key // MAX_STREAMS)
        runtime = k["window_ns"]
        total += runtime
        if np.isnan(k["l_max"]):
            unseen += runtime
        else:
            sens = k["sensitivity"]
            weighted += runtime * (1.0 if np.isnan(sens) else sens)
        k["window_ns"] = 0
        k["in_window"] = 0
        key = k["window_next"]
    st["window_n"] = 0
    if total <= 0:
        return -1
    if unseen > st["unseen_share"] * total:
        return d.sc[D_FMAX]
    sensitivity = weighted / (total - unseen)
    st["last_sensitivity"] = sensitivity
    return clock_for(d, p, sensitivity)


@compiled_fn
def clock_for(d, p, sensitivity):
    """The lowest clock step at which work of frequency sensitivity S slows
    by at most the slip: f >= f_max / (1 + slip / S), rounded up to a step
    (rounded down, it would break the slip by up to a step)."""
    f_min, f_max, step = d.sc[D_FMIN], d.sc[D_FMAX], d.sc[D_FSTEP]
    if sensitivity <= 0:
        return f_min
    f = f_max / (1.0 + state(p)["allowed_slowdown"] / sensitivity)
    steps = int(math.ceil((f - f_min) / step - 1e-9))
    return max(f_min, min(f_max, f_min + steps * step))


@compiled_fn
def isolated_target_mhz(d, p):
    """The clock on isolated block times: the most clock-sensitive
    high-priority tenant's share of isolated time that scales with the clock
    (every tenant's where none is high priority) sets it, so each keeps
    within the slip; f_max until each of them has started a kernel."""
    st, ds = state(p), d.st
    n = d.sc[D_NSTREAMS]
    any_hp = False
    for s in range(n):
        if ds[ST_HP, s]:
            any_hp = True
    worst = 0.0
    for s in range(n):
        if any_hp and not ds[ST_HP, s]:
            continue
        iso = st["iso_ns"][s]
        if iso <= 0:
            return d.sc[D_FMAX]
        worst = max(worst, st["compute_ns"][s] / iso)
    st["last_sensitivity"] = worst
    return clock_for(d, p, worst)


@compiled_fn
def decide(d, p, now_ns, clock):
    """A clock to switch to now, or -1 (changes are `dvfs_min_interval_ns` apart)."""
    target = target_mhz(d, p)
    if target < 0 or target == clock:
        return -1
    st = state(p)
    if now_ns - st["last_change_ns"] < st["dvfs_min_interval_ns"]:
        return -1
    st["last_change_ns"] = now_ns
    st["changes"] += 1
    return target
