"""LithOS's compiled form (`drivers/vgpu/policies`): lithos.py, on numpy tables.

Each function is the twin of the method of the same name in lithos.py, or
of the mechanism it calls in `drivers/vgpu/lithos` (`TpcScheduler`,
`Atomizer`, `LatencyPredictor`).  TPC masks are int64 bit sets,
busy-until times an int64 per TPC, the predictor a dense table of wave
times per (stream, kernel position), NaN where never seen; an atom's record
is a column of `Pol.t`.  Right-sizing and DVFS have no compiled form yet: a
lithos with either runs the Python form.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from drivers.vgpu.lithos.tpcs import TpcScheduler
from drivers.vgpu.policies.base import PRIO_NORMAL, PRIO_STOLEN
from drivers.vgpu.policies.compiled import (
    AT_LAUNCH_NS,
    AT_POS,
    AT_STREAM,
    D_NOW,
    D_NSTREAMS,
    D_NTPCS,
    K_BLOCK_NS,
    K_BPT,
    P_LITHOS,
    POLICY_TIMERS,
    ST_GRID,
    ST_INFLIGHT,
    ST_LAUNCHED,
    ST_POS,
    Pol,
    empty_pol,
    kernel_index,
    kernel_pending,
    launch,
    policy_call_at,
    popcount,
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
L_PER_STREAM = 15
# Then n values each (n streams): own mask, not owned, stolen out, own
# until, kernel start, own done; then one per TPC: owner, busy until.
OWN_MASK, NOT_OWNED, STOLEN_OUT, OWN_UNTIL, KERNEL_START, OWN_DONE = range(6)
N_PER_STREAM = 6
OWNER, BUSY_UNTIL = range(2)

# Floats in `Pol.f`.
LF_WEIGHT = 0
LF_ABS_ERROR = 1

# Rows of `Pol.t`: an atom's record (the Python form's `atoms` dict).
LA_PRESENT = 0
LA_WAVES = 1
LA_PREDICTED = 2  # -1: none
LA_STOLEN = 3
LA_QUEUED = 4
N_LA_ROWS = 5

RETRY = POLICY_TIMERS


def compiled_state(policy, sim) -> Pol | None:
    """The compiled state of `policy` (a `Lithos`) on `sim`, or None if it has none."""
    if policy.rightsizing or policy.dvfs:
        return None
    streams = sim.streams
    n, t = len(streams), sim.n_tpcs
    quotas = policy.quotas if policy.quotas is not None else [s.quota for s in streams]
    if len(quotas) != n:
        raise ValueError(f"lithos: {len(quotas)} quotas for {n} tenants")
    tpcs = TpcScheduler(t, quotas, policy.max_stolen)
    pol = empty_pol(P_LITHOS, L_PER_STREAM + N_PER_STREAM * n + 2 * t, 2, N_LA_ROWS)
    i = pol.i
    i[L_ATOM_MIN_NS] = policy.atom_min_ns
    i[L_ATOM_MAX_NS] = policy.atom_max_ns
    i[L_MAX_STOLEN] = policy.max_stolen
    i[L_MAX_INFLIGHT] = policy.max_inflight
    i[L_STEALING] = int(policy.stealing)
    i[L_ATOMIZATION] = int(policy.atomization)
    i[L_IDLE] = (1 << t) - 1
    i[L_IDLE_UNTIL] = _FOREVER
    i[L_THRESHOLD_NS] = 50_000
    base = L_PER_STREAM
    i[base + OWN_MASK * n : base + (OWN_MASK + 1) * n] = tpcs.own_mask
    i[base + NOT_OWNED * n : base + (NOT_OWNED + 1) * n] = [
        ((1 << t) - 1) & ~m for m in tpcs.own_mask
    ]
    tb = base + N_PER_STREAM * n
    i[tb + OWNER * t : tb + (OWNER + 1) * t] = tpcs.owner
    pol.f[LF_WEIGHT] = 0.5
    width = max(len(s.kernels) for s in streams)
    return pol._replace(w=np.full((n, width), np.nan))


def report(policy, pol: Pol, n_streams: int) -> dict:
    i = pol.i
    base = L_PER_STREAM
    masks = i[base + OWN_MASK * n_streams : base + (OWN_MASK + 1) * n_streams]
    predictions = int(i[L_PREDICTIONS])
    return {
        "quota_tpcs": [int(m).bit_count() for m in masks],
        "predictions": predictions,
        "misprediction_rate": int(i[L_MISPREDICTIONS]) / predictions if predictions else 0.0,
        "mean_abs_error_us": (float(pol.f[LF_ABS_ERROR]) / predictions if predictions else 0.0)
        / 1e3,
        "own_atoms": int(i[L_OWN_ATOMS]),
        "stolen_atoms": int(i[L_STOLEN_ATOMS]),
    }


# -- the per-stream and per-TPC values ----------------------------------------


@njit(cache=True)
def _at(d, field, s):
    return L_PER_STREAM + field * d.sc[D_NSTREAMS] + s


@njit(cache=True)
def _tpc(d, field, t):
    return L_PER_STREAM + N_PER_STREAM * d.sc[D_NSTREAMS] + field * d.sc[D_NTPCS] + t


# -- TpcScheduler --------------------------------------------------------------


@njit(cache=True)
def claim(d, p, mask, until_ns):
    i = p.i
    m = mask
    while m:
        low = m & -m
        t = _bit(low)
        k = _tpc(d, BUSY_UNTIL, t)
        if i[k] < until_ns:
            i[k] = until_ns
        m ^= low
    i[L_IDLE] &= ~mask
    if until_ns < i[L_IDLE_UNTIL]:
        i[L_IDLE_UNTIL] = until_ns


@njit(cache=True)
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


@njit(cache=True)
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


@njit(cache=True)
def _bit(low):
    n = 0
    while low > 1:
        low >>= 1
        n += 1
    return n


# -- Atomizer and LatencyPredictor ----------------------------------------------


@njit(cache=True)
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


@njit(cache=True)
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


@njit(cache=True)
def compiled_kernel_ready(d, p, s):
    p.i[_at(d, KERNEL_START, s)] = d.sc[D_NOW]
    pump(d, p, s)


@njit(cache=True)
def compiled_atom_done(d, p, s, atom, kernel_done):
    now = d.sc[D_NOW]
    t = p.t
    if atom >= t.shape[1] or t[LA_PRESENT, atom] == 0:  # launched before a switch
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
    if not kernel_done:
        pump(d, p, s)
    waiting = p.i[L_WAITING]
    if waiting:
        for j in range(d.sc[D_NSTREAMS]):
            if waiting >> j & 1:
                p.i[L_WAITING] &= ~(1 << j)
                if j != s and kernel_pending(d, j):
                    pump(d, p, j)


@njit(cache=True)
def compiled_timer(d, p, kind, arg):
    if kind == RETRY:
        s = arg
        if p.i[L_WAITING] >> s & 1:
            p.i[L_WAITING] &= ~(1 << s)
            if kernel_pending(d, s):
                pump(d, p, s)


@njit(cache=True)
def compiled_detach(d, p):
    p.i[L_WAITING] = 0


@njit(cache=True)
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


@njit(cache=True)
def step(d, p, s):
    """Launch the next atom of `s` (own part, stolen part or both); False if no TPC."""
    i, st = p.i, d.st
    now = d.sc[D_NOW]
    own = i[_at(d, OWN_MASK, s)]
    n_own = popcount(own)
    k = kernel_index(d, s)
    bpt = d.kern[K_BPT, k]
    pos = st[ST_POS, s]
    learned = p.w[s, pos]
    known = not np.isnan(learned)
    wave_ns = learned if known else float(d.kern[K_BLOCK_NS, k])
    stolen = 0
    if i[L_STEALING]:
        stolen = stealable(d, p, s, now)
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
    if own_blocks:
        start = max(now, i[_at(d, OWN_UNTIL, s)])
        i[_at(d, OWN_UNTIL, s)] = start + duration
        claim(d, p, own, start + duration)
        atom = launch(d, s, own_blocks, own, PRIO_NORMAL, 0, -1)
        own_waves = math.ceil(own_blocks / (n_own * bpt))
        t[LA_PRESENT, atom] = 1
        t[LA_WAVES, atom] = own_waves
        t[LA_PREDICTED, atom] = round(own_waves * wave_ns) if known else -1
        t[LA_STOLEN, atom] = 0
        t[LA_QUEUED, atom] = start > now
        i[L_OWN_ATOMS] += 1
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
    return True


__all__ = ["AT_STREAM", "compiled_state", "report"]
