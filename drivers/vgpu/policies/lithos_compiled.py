"""LithOS's compiled form (`drivers/vgpu/policies`): lithos.py, on numpy tables.

Each function is the twin of the method of the same name in lithos.py, or
of the mechanism it calls in `drivers/vgpu/lithos` (`TpcScheduler`,
`Atomizer`, `LatencyPredictor`).  TPC masks are int64 bit sets,
busy-until times an int64 per TPC, the predictor a dense table of wave
times per (stream, kernel position), NaN where never seen; an atom's record
is a column of `Pol.t`; what right-sizing and DVFS learn of each kernel,
rows of `Pol.ki` and `Pol.kf`.
"""

from __future__ import annotations

import math

import numpy as np

from drivers.vgpu.api import PRIORITY_LIMIT
from drivers.vgpu.engine import A_DONE_NS
from drivers.vgpu.lithos.tpcs import TpcScheduler
from drivers.vgpu.policies.base import PRIO_NORMAL, PRIO_STOLEN
from drivers.vgpu.policies.compiled import (
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
    P_LITHOS,
    POLICY_TIMERS,
    ST_GRID,
    ST_INFLIGHT,
    ST_LAUNCHED,
    ST_POS,
    Pol,
    clock_mhz,
    compiled_fn,
    empty_pol,
    kernel_index,
    kernel_pending,
    launch,
    lowest_tpc,
    policy_call_at,
    popcount,
    set_clock,
)

_FOREVER = 1 << 62

# Scalars in `Pol.i`.
L_ATOM_MIN_NS = 1
L_ATOM_MAX_NS = 2
L_MAX_STOLEN = 3
L_MAX_INFLIGHT = 4
L_STEALING = 5
L_ATOMIZATION = 6
L_IDLE = 7  # TPCs idle now, kept until L_IDLE_UNTIL
L_IDLE_UNTIL = 8
L_WAITING = 9  # streams waiting for a TPC, a bit set
L_STOLEN_ATOMS = 10
L_OWN_ATOMS = 11
L_PREDICTIONS = 12
L_MISPREDICTIONS = 13
L_THRESHOLD_NS = 14
L_RIGHTSIZING = 15
L_FIT = 16
L_DVFS = 17
L_DECISIONS = 18  # right-sizing: kernels sized, TPCs given, TPCs they could have had
L_GIVEN = 19
L_AVAILABLE = 20
L_REQUESTED_MHZ = 21  # DVFS: the clock asked for last
L_LAST_CHANGE_NS = 22
L_CHANGES = 23
L_DVFS_PERIOD_NS = 24
L_DVFS_MIN_INTERVAL_NS = 25
L_WINDOW_N = 26  # kernels in the DVFS window, listed after the per-TPC values
# The atoms in flight when the policy took over (LA_INHERITED): how many
# are still in flight, and the range of atom ids they are within.
L_INHERITED = 27
L_INHERITED_FIRST = 28
L_INHERITED_END = 29
L_PER_STREAM = 30
# Then n values each (n streams): own mask, not owned, stolen out, own
# until, kernel start, own done, the TPCs right-sizing gave the kernel (-1:
# no choice), the most it ran on, the clock it started at; then one per
# TPC: owner, busy until; then the DVFS window's kernels, in the order seen.
(OWN_MASK, NOT_OWNED, STOLEN_OUT, OWN_UNTIL, KERNEL_START, OWN_DONE, KERNEL_TPCS, KERNEL_USED,
 KERNEL_CLOCK) = range(9)  # fmt: skip
N_PER_STREAM = 9
OWNER, BUSY_UNTIL = range(2)

# Floats in `Pol.f`.
LF_WEIGHT = 0
LF_ABS_ERROR = 1
LF_SLIP = 2
LF_MAX_SHRINK = 3
LF_ALLOWED_SLOWDOWN = 4
LF_UNSEEN_SHARE = 5
LF_DVFS_WEIGHT = 6
LF_LAST_SENSITIVITY = 7  # NaN: none yet
N_LF = 8

# What is learned per kernel (stream, position): `Pol.ki` and `Pol.kf` rows.
KI_FIT_N, KI_T_MIN, KI_T_SEEN, KI_WINDOW_NS, KI_IN_WINDOW = range(5)  # T_SEEN: bit t-1
KF_SX, KF_SXX, KF_SY, KF_SXY, KF_L_MAX, KF_S = range(6)  # L_MAX, S: NaN until known

# Rows of `Pol.t`: an atom's record (the Python form's `atoms` dict).
LA_PRESENT = 0
LA_WAVES = 1
LA_PREDICTED = 2  # -1: none
LA_STOLEN = 3
LA_QUEUED = 4
LA_INHERITED = 5  # 1: in flight when the policy took over, and not done yet
N_LA_ROWS = 6

RETRY = POLICY_TIMERS
DVFS_TICK = POLICY_TIMERS + 1


def compiled_state(policy, sim) -> Pol:
    """The compiled state of `policy` (a `Lithos`) on `sim`."""
    streams = sim.streams
    n, t = len(streams), sim.n_tpcs
    quotas = policy.quotas if policy.quotas is not None else [s.quota for s in streams]
    if len(quotas) != n:
        raise ValueError(f"lithos: {len(quotas)} quotas for {n} tenants")
    if policy.slip < 1.0:
        raise ValueError(f"right-sizing and DVFS slip must be at least 1, got {policy.slip}")
    tpcs = TpcScheduler(t, quotas, policy.max_stolen)
    width = max(len(s.kernels) for s in streams)
    pol = empty_pol(P_LITHOS, L_PER_STREAM + N_PER_STREAM * n + 2 * t + n * width, N_LF, N_LA_ROWS)
    i, f = pol.i, pol.f
    i[L_ATOM_MIN_NS] = policy.atom_min_ns
    i[L_ATOM_MAX_NS] = policy.atom_max_ns
    i[L_MAX_STOLEN] = policy.max_stolen
    i[L_MAX_INFLIGHT] = policy.max_inflight
    i[L_STEALING] = int(policy.stealing)
    i[L_ATOMIZATION] = int(policy.atomization)
    i[L_IDLE] = (1 << t) - 1
    i[L_IDLE_UNTIL] = _FOREVER
    i[L_THRESHOLD_NS] = 50_000
    i[L_RIGHTSIZING] = int(policy.rightsizing)
    i[L_FIT] = int(policy.rightsizing_fit)
    i[L_DVFS] = int(policy.dvfs)
    i[L_LAST_CHANGE_NS] = -(1 << 62)
    i[L_DVFS_PERIOD_NS] = policy.dvfs_period_ns
    i[L_DVFS_MIN_INTERVAL_NS] = policy.dvfs_min_interval_ns
    base = L_PER_STREAM
    i[base + OWN_MASK * n : base + (OWN_MASK + 1) * n] = tpcs.own_mask
    i[base + NOT_OWNED * n : base + (NOT_OWNED + 1) * n] = [
        ((1 << t) - 1) & ~m for m in tpcs.own_mask
    ]
    i[base + KERNEL_TPCS * n : base + (KERNEL_TPCS + 1) * n] = -1
    tb = base + N_PER_STREAM * n
    i[tb + OWNER * t : tb + (OWNER + 1) * t] = tpcs.owner
    f[LF_WEIGHT] = 0.5
    f[LF_SLIP] = policy.slip
    f[LF_MAX_SHRINK] = 0.5  # RightSizer's default
    f[LF_ALLOWED_SLOWDOWN] = policy.slip - 1.0
    f[LF_UNSEEN_SHARE] = 0.1  # DvfsGovernor's defaults
    f[LF_DVFS_WEIGHT] = 0.5
    f[LF_LAST_SENSITIVITY] = np.nan
    ki = np.zeros((5, n, width), np.int64)
    ki[KI_T_MIN] = 1 << 30
    kf = np.zeros((6, n, width), np.float64)
    kf[KF_L_MAX] = kf[KF_S] = np.nan
    return pol._replace(w=np.full((n, width), np.nan), ki=ki, kf=kf)


def report(policy, pol: Pol, n_streams: int) -> dict:
    i = pol.i
    base = L_PER_STREAM
    masks = i[base + OWN_MASK * n_streams : base + (OWN_MASK + 1) * n_streams]
    predictions = int(i[L_PREDICTIONS])
    out = {
        "quota_tpcs": [int(m).bit_count() for m in masks],
        "predictions": predictions,
        "misprediction_rate": int(i[L_MISPREDICTIONS]) / predictions if predictions else 0.0,
        "mean_abs_error_us": (float(pol.f[LF_ABS_ERROR]) / predictions if predictions else 0.0)
        / 1e3,
        "own_atoms": int(i[L_OWN_ATOMS]),
        "stolen_atoms": int(i[L_STOLEN_ATOMS]),
    }
    if i[L_RIGHTSIZING] and i[L_DECISIONS]:
        out["rightsized_tpc_share"] = int(i[L_GIVEN]) / int(i[L_AVAILABLE])
    if i[L_DVFS]:
        sensitivity = float(pol.f[LF_LAST_SENSITIVITY])
        out["clock_changes"] = int(i[L_CHANGES])
        out["final_clock_mhz"] = int(i[L_REQUESTED_MHZ])
        out["sensitivity"] = None if math.isnan(sensitivity) else sensitivity
    return out


# -- the per-stream and per-TPC values ----------------------------------------


@compiled_fn
def _at(d, field, s):
    return L_PER_STREAM + field * d.sc[D_NSTREAMS] + s


@compiled_fn
def _tpc(d, field, t):
    return L_PER_STREAM + N_PER_STREAM * d.sc[D_NSTREAMS] + field * d.sc[D_NTPCS] + t


# -- TpcScheduler --------------------------------------------------------------


@compiled_fn
def claim(d, p, mask, until_ns):
    i = p.i
    m = mask
    while m:
        low = m & -m
        t = lowest_tpc(low)
        k = _tpc(d, BUSY_UNTIL, t)
        if i[k] < until_ns:
            i[k] = until_ns
        m ^= low
    i[L_IDLE] &= ~mask
    if until_ns < i[L_IDLE_UNTIL]:
        i[L_IDLE_UNTIL] = until_ns


@compiled_fn
def stealable(d, p, s, now):
    i = p.i
    if i[_at(d, STOLEN_OUT, s)] >= i[L_MAX_STOLEN]:
        return 0
    if now >= i[L_IDLE_UNTIL]:
        idle = 0
        until = _FOREVER
        for t in range(d.sc[D_NTPCS]):
            b = i[_tpc(d, BUSY_UNTIL, t)]
            if b <= now:
                idle |= 1 << t
            elif b < until:
                until = b
        i[L_IDLE] = idle
        i[L_IDLE_UNTIL] = until
    return i[L_IDLE] & i[_at(d, NOT_OWNED, s)]


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


# -- Atomizer and LatencyPredictor ----------------------------------------------


@compiled_fn
def atom_blocks(p, remaining, n_tpcs, blocks_per_tpc, wave_ns):
    max_ns = p.i[L_ATOM_MAX_NS]
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
    if predicted_ns >= 0:
        p.i[L_PREDICTIONS] += 1
        error = abs(actual_ns - predicted_ns)
        p.f[LF_ABS_ERROR] += error
        if error > p.i[L_THRESHOLD_NS]:
            p.i[L_MISPREDICTIONS] += 1
    sample = actual_ns / max(1, waves)
    old = p.w[s, pos]
    p.w[s, pos] = sample if np.isnan(old) else old + p.f[LF_WEIGHT] * (sample - old)


# -- the callbacks --------------------------------------------------------------


@compiled_fn
def compiled_setup(d, p):
    p.i[L_REQUESTED_MHZ] = clock_mhz(d)
    first = d.sc[D_OPEN_ATOM]
    p.i[L_INHERITED_FIRST] = first
    p.i[L_INHERITED_END] = d.sc[D_NATOMS]
    for a in range(first, d.sc[D_NATOMS]):
        if d.eng.atoms[A_DONE_NS, a] < 0:
            p.t[LA_INHERITED, a] = 1
            p.i[L_INHERITED] += 1
    if p.i[L_DVFS]:
        policy_call_at(d, d.sc[D_NOW] + p.i[L_DVFS_PERIOD_NS], DVFS_TICK, 0)


@compiled_fn
def compiled_kernel_ready(d, p, s):
    i = p.i
    i[_at(d, KERNEL_START, s)] = d.sc[D_NOW]
    i[_at(d, KERNEL_CLOCK, s)] = clock_mhz(d)
    i[_at(d, KERNEL_USED, s)] = 0
    if i[L_RIGHTSIZING]:
        own = popcount(i[_at(d, OWN_MASK, s)]) or d.sc[D_NTPCS]
        k = kernel_index(d, s)
        i[_at(d, KERNEL_TPCS, s)] = choose(
            p, s, d.st[ST_POS, s], d.st[ST_GRID, s], d.kern[K_BPT, k], own
        )  # fmt: skip
    pump(d, p, s)


@compiled_fn
def compiled_atom_done(d, p, s, atom, kernel_done):
    now = d.sc[D_NOW]
    t = p.t
    if atom >= t.shape[1] or t[LA_PRESENT, atom] == 0:  # launched before the policy took over
        if atom < t.shape[1] and t[LA_INHERITED, atom]:
            t[LA_INHERITED, atom] = 0
            p.i[L_INHERITED] -= 1
        if not kernel_done:
            pump(d, p, s)
        return
    t[LA_PRESENT, atom] = 0
    start = d.atoms[AT_LAUNCH_NS, atom]
    if t[LA_QUEUED, atom]:
        start = max(start, p.i[_at(d, OWN_DONE, s)])
    observe(
        p, s, d.atoms[AT_POS, atom], t[LA_WAVES, atom], now - start, t[LA_PREDICTED, atom]
    )  # fmt: skip
    if t[LA_STOLEN, atom]:
        p.i[_at(d, STOLEN_OUT, s)] -= 1
    else:
        p.i[_at(d, OWN_DONE, s)] = now
    if kernel_done:
        latency = now - p.i[_at(d, KERNEL_START, s)]
        pos = d.st[ST_POS, s]
        if p.i[L_RIGHTSIZING]:
            sizer_observe(p, s, pos, p.i[_at(d, KERNEL_USED, s)], latency)
        clock = p.i[_at(d, KERNEL_CLOCK, s)]
        if p.i[L_DVFS] and clock == clock_mhz(d):
            governor_observe(d, p, s, pos, latency, clock)
    else:
        pump(d, p, s)
    waiting = p.i[L_WAITING]
    if waiting:
        for j in range(d.sc[D_NSTREAMS]):
            if waiting >> j & 1:
                p.i[L_WAITING] &= ~(1 << j)
                if j != s and kernel_pending(d, j):
                    pump(d, p, j)


@compiled_fn
def compiled_timer(d, p, kind, arg):
    if kind == DVFS_TICK:
        target = decide(d, p, d.sc[D_NOW], p.i[L_REQUESTED_MHZ])
        if target >= 0:
            set_clock(d, target)
            p.i[L_REQUESTED_MHZ] = target
        policy_call_at(d, d.sc[D_NOW] + p.i[L_DVFS_PERIOD_NS], DVFS_TICK, 0)
    elif kind == RETRY:
        s = arg
        if p.i[L_WAITING] >> s & 1:
            p.i[L_WAITING] &= ~(1 << s)
            if kernel_pending(d, s):
                pump(d, p, s)


@compiled_fn
def compiled_detach(d, p):
    p.i[L_WAITING] = 0
    # The clock DVFS chose is this policy's: the next one starts at f_max.
    if p.i[L_DVFS] and p.i[L_REQUESTED_MHZ] != d.sc[D_FMAX]:
        set_clock(d, d.sc[D_FMAX])


@compiled_fn
def pump(d, p, s):
    st = d.st
    while st[ST_LAUNCHED, s] < st[ST_GRID, s] and st[ST_INFLIGHT, s] < p.i[L_MAX_INFLIGHT]:
        if not step(d, p, s):
            # No TPC now: retry on the next completion, or when the first
            # busy-until timer of another tenant's TPC runs out.
            if not p.i[L_WAITING] >> s & 1:
                p.i[L_WAITING] |= 1 << s
                now = d.sc[D_NOW]
                first = _FOREVER
                for t in range(d.sc[D_NTPCS]):
                    if p.i[_tpc(d, OWNER, t)] != s:
                        b = p.i[_tpc(d, BUSY_UNTIL, t)]
                        if now < b < first:
                            first = b
                if first < _FOREVER:
                    policy_call_at(d, first, RETRY, s)
            return


@compiled_fn
def step(d, p, s):
    """Launch the next atom of `s` (own part, stolen part or both); False if no TPC."""
    i, st = p.i, d.st
    now = d.sc[D_NOW]
    want = i[_at(d, KERNEL_TPCS, s)]
    own = i[_at(d, OWN_MASK, s)]
    if 0 <= want < popcount(own):
        own = first_tpcs(own, want)
    n_own = popcount(own)
    k = kernel_index(d, s)
    bpt = d.kern[K_BPT, k]
    pos = st[ST_POS, s]
    learned = p.w[s, pos]
    known = not np.isnan(learned)
    wave_ns = learned if known else float(d.kern[K_BLOCK_NS, k])
    stolen = 0
    if i[L_STEALING] and (want < 0 or want > n_own):
        stolen = stealable(d, p, s, now)
        if i[L_INHERITED]:
            stolen &= ~inherited_tpcs(d, p)
        if stolen and want >= 0:
            stolen = first_tpcs(stolen, want - n_own)
    remaining = st[ST_GRID, s] - st[ST_LAUNCHED, s]
    while True:
        n_all = n_own + popcount(stolen)
        if n_all == 0:
            return False
        blocks = remaining
        if i[L_ATOMIZATION]:
            blocks = atom_blocks(p, remaining, n_all, bpt, wave_ns)
        waves = math.ceil(blocks / (n_all * bpt))
        own_blocks = min(blocks, waves * n_own * bpt)
        stolen_blocks = blocks - own_blocks
        if stolen_blocks and waves * wave_ns > i[L_ATOM_MAX_NS] and n_own:
            stolen = 0  # too long to run on TPCs an owner may want back
            continue
        break
    if stolen_blocks:  # take only the stolen TPCs the blocks can occupy
        stolen = first_tpcs(stolen, math.ceil(stolen_blocks / (waves * bpt)))
    duration = round(waves * wave_ns)
    predicted = duration if known else -1
    t = p.t
    used = 0
    if own_blocks:
        start = max(now, i[_at(d, OWN_UNTIL, s)])
        i[_at(d, OWN_UNTIL, s)] = start + duration
        claim(d, p, own, start + duration)
        queued = start > now
        atom = launch(d, s, own_blocks, own, own_priority(d, p, s, own, queued), 0, -1)
        own_waves = math.ceil(own_blocks / (n_own * bpt))
        t[LA_PRESENT, atom] = 1
        t[LA_WAVES, atom] = own_waves
        t[LA_PREDICTED, atom] = round(own_waves * wave_ns) if known else -1
        t[LA_STOLEN, atom] = 0
        t[LA_QUEUED, atom] = queued
        i[L_OWN_ATOMS] += 1
        used += n_own
    if stolen_blocks:
        claim(d, p, stolen, now + duration)
        i[_at(d, STOLEN_OUT, s)] += 1
        atom = launch(d, s, stolen_blocks, stolen, PRIO_STOLEN, 1, -1)
        t[LA_PRESENT, atom] = 1
        t[LA_WAVES, atom] = waves
        t[LA_PREDICTED, atom] = predicted
        t[LA_STOLEN, atom] = 1
        t[LA_QUEUED, atom] = 0
        i[L_STOLEN_ATOMS] += 1
        used += popcount(stolen)
    k_used = _at(d, KERNEL_USED, s)
    i[k_used] = max(i[k_used], used)
    return True


@compiled_fn
def inherited_tpcs(d, p):
    """`Lithos._inherited_tpcs`: the TPCs of the atoms still in flight since
    before the policy took over."""
    mask = 0
    t, at = p.t, d.atoms
    for a in range(p.i[L_INHERITED_FIRST], p.i[L_INHERITED_END]):
        if t[LA_INHERITED, a]:
            mask |= at[AT_MASK, a]
    return mask


@compiled_fn
def own_priority(d, p, s, own, queued):
    """`Lithos._own_priority`: PRIO_STOLEN for an atom queued behind the
    owner's own, else PRIO_NORMAL; or one above the atoms, at PRIO_NORMAL or
    above, that other streams launched on `own` before the policy took over."""
    priority = PRIO_STOLEN if queued else PRIO_NORMAL
    if p.i[L_INHERITED] == 0:
        return priority
    t, at = p.t, d.atoms
    for a in range(p.i[L_INHERITED_FIRST], p.i[L_INHERITED_END]):
        if t[LA_INHERITED, a] and at[AT_STREAM, a] != s and at[AT_MASK, a] & own:
            inherited = at[AT_PRIO, a]
            if inherited >= PRIO_NORMAL:
                priority = max(priority, min(inherited + 1, PRIORITY_LIMIT - 1))
    return priority


# -- RightSizer -------------------------------------------------------------------


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
    """`RightSizer.choose`: TPCs (1..t_all) for the next run of kernel (s, pos)."""
    w_all = math.ceil(grid / (t_all * bpt))
    t_first = knee(grid, bpt, w_all)
    t = _choose(p, s, pos, grid, bpt, w_all, t_first)
    p.i[L_DECISIONS] += 1
    p.i[L_GIVEN] += t
    p.i[L_AVAILABLE] += t_all
    return t


@compiled_fn
def _choose(p, s, pos, grid, bpt, w_all, t_first):
    ki, kf = p.ki, p.kf
    n = ki[KI_FIT_N, s, pos]
    if n == 0 or not p.i[L_FIT]:
        return t_first
    seen = ki[KI_T_SEEN, s, pos]
    if popcount(seen) < 2:
        probe = knee(grid, bpt, w_all + 1)
        probe_seen = probe <= 64 and (seen >> (probe - 1)) & 1
        return probe if probe < t_first and not probe_seen else t_first
    sx, sxx, sy, sxy = kf[KF_SX, s, pos], kf[KF_SXX, s, pos], kf[KF_SY, s, pos], kf[KF_SXY, s, pos]
    det = n * sxx - sx * sx
    if det <= 0:
        m, b = 0.0, sy / max(1, n)
    else:
        m = (n * sxy - sx * sy) / det
        b = (sy - m * sx) / n
    lower = max(1, math.ceil(ki[KI_T_MIN, s, pos] * p.f[LF_MAX_SHRINK]))
    if m <= 0:
        x = lower
    else:
        headroom = p.f[LF_SLIP] * (m / t_first + b) - b
        x = max(lower, math.ceil(m / headroom)) if headroom > 0 else t_first
    return min(t_first, smallest_knee_at_least(grid, bpt, x))


@compiled_fn
def sizer_observe(p, s, pos, tpcs, latency_ns):
    """`RightSizer.observe` (`_Fit.add`)."""
    ki, kf = p.ki, p.kf
    x = 1.0 / tpcs
    ki[KI_FIT_N, s, pos] += 1
    kf[KF_SX, s, pos] += x
    kf[KF_SXX, s, pos] += x * x
    kf[KF_SY, s, pos] += latency_ns
    kf[KF_SXY, s, pos] += x * latency_ns
    ki[KI_T_SEEN, s, pos] |= 1 << (tpcs - 1)
    ki[KI_T_MIN, s, pos] = min(ki[KI_T_MIN, s, pos], tpcs)


# -- DvfsGovernor -------------------------------------------------------------------


@compiled_fn
def _window(d):
    return L_PER_STREAM + N_PER_STREAM * d.sc[D_NSTREAMS] + 2 * d.sc[D_NTPCS]


@compiled_fn
def governor_observe(d, p, s, pos, latency_ns, clock):
    """`DvfsGovernor.observe`: kernel (s, pos) ran in `latency_ns` at `clock`."""
    kf, ki = p.kf, p.ki
    w = p.f[LF_DVFS_WEIGHT]
    f_max = d.sc[D_FMAX]
    l_max = kf[KF_L_MAX, s, pos]
    if clock == f_max:
        kf[KF_L_MAX, s, pos] = latency_ns if np.isnan(l_max) else l_max + w * (latency_ns - l_max)
    elif not np.isnan(l_max):
        slowdown = latency_ns / l_max - 1.0
        sens = min(1.0, max(0.0, slowdown / (f_max / clock - 1.0)))
        old = kf[KF_S, s, pos]
        kf[KF_S, s, pos] = sens if np.isnan(old) else old + w * (sens - old)
    if not ki[KI_IN_WINDOW, s, pos]:  # the window lists kernels in the order first seen
        ki[KI_IN_WINDOW, s, pos] = 1
        p.i[_window(d) + p.i[L_WINDOW_N]] = s * ki.shape[2] + pos
        p.i[L_WINDOW_N] += 1
    ki[KI_WINDOW_NS, s, pos] += latency_ns


@compiled_fn
def target_mhz(d, p):
    """`DvfsGovernor.target_mhz`: the clock for the window's mix; -1: nothing ran."""
    ki, kf = p.ki, p.kf
    width = ki.shape[2]
    total = unseen = weighted = 0.0
    base = _window(d)
    for j in range(p.i[L_WINDOW_N]):
        key = p.i[base + j]
        s, pos = key // width, key % width
        runtime = ki[KI_WINDOW_NS, s, pos]
        total += runtime
        if np.isnan(kf[KF_L_MAX, s, pos]):
            unseen += runtime
        else:
            sens = kf[KF_S, s, pos]
            weighted += runtime * (1.0 if np.isnan(sens) else sens)
        ki[KI_WINDOW_NS, s, pos] = 0
        ki[KI_IN_WINDOW, s, pos] = 0
    p.i[L_WINDOW_N] = 0
    if total <= 0:
        return -1
    f_min, f_max, step = d.sc[D_FMIN], d.sc[D_FMAX], d.sc[D_FSTEP]
    if unseen > p.f[LF_UNSEEN_SHARE] * total:
        return f_max
    sensitivity = weighted / (total - unseen)
    p.f[LF_LAST_SENSITIVITY] = sensitivity
    if sensitivity <= 0:
        return f_min
    f = f_max / (1.0 + p.f[LF_ALLOWED_SLOWDOWN] / sensitivity)
    steps = int((f - f_min) // step)
    return max(f_min, min(f_max, f_min + steps * step))


@compiled_fn
def decide(d, p, now_ns, clock):
    """`DvfsGovernor.decide`: a clock to switch to now, or -1."""
    target = target_mhz(d, p)
    if target < 0 or target == clock:
        return -1
    if now_ns - p.i[L_LAST_CHANGE_NS] < p.i[L_DVFS_MIN_INTERVAL_NS]:
        return -1
    p.i[L_LAST_CHANGE_NS] = now_ns
    p.i[L_CHANGES] += 1
    return target


__all__ = ["AT_STREAM", "compiled_state", "report"]
