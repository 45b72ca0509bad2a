"""`malv exp memory`: memory advisors against LRU and Belady's OPT.

Each run boots a kernel with `--frames` frames of memory and one task.  The
task maps a data region, writes every page of it once (so the data lives in
swap, as after loading a data set), loads the advisor with the module trap
(`insmod` from a program), and then reads one byte of each page of a
reference string.  Every advisor starts from the same memory state, and
Belady's OPT is computed offline on the same reference string from that
same state: the most hits any demand pager could have (a prefetcher can
beat it by bringing pages in before they are asked for).

Workloads, over a region a few times larger than memory:

* ``sequential`` — a hot set of 3/4 of memory, read at random, while half of
  the accesses sweep a cold region 3x memory (scan pollution);
* ``looping`` — a loop over 1.5x memory, again and again;
* ``zipf`` — Zipf(1.0) popularity over 6x memory;
* ``mix`` — phases of zipf, loop, hot set + scan, a skewer zipf, another
  loop, each over its own pages.

Reported per workload: hit rate and faults of `lru`, `clock`, `leap` (the
prefetcher), `learned_warmth` and OPT, and the fraction of the LRU-to-OPT gap
in hits each closes.  Target: `learned_warmth` closes at least 30% on ``mix``.
The host seconds each run's reads took go to timing.json, not the results.
"""

from __future__ import annotations

import bisect
import heapq
import random
import sys
import time
from collections.abc import Sequence

from exp.output import (
    Progress,
    int_in,
    markdown_table,
    parser,
    positive_int,
    pyplot,
    results_dir,
    write_json,
    write_markdown,
    write_timing,
)
from kernel import Kernel
from kernel.config import MAX_FRAMES, MIN_FRAMES
from kernel.memory import PAGE_SIZE
from kernel.traps import MemMap, MemRead, MemWrite, ModLoad

WORKLOADS = ("sequential", "looping", "zipf", "mix")
POLICIES = ("lru", "clock", "leap", "learned_warmth")
TARGET_GAP_CLOSED = 0.30


# -- reference strings ----------------------------------------------------------------


class Zipf:
    """Zipf(alpha) over `n` pages starting at `base`, ranks shuffled over the pages."""

    def __init__(self, rng: random.Random, n: int, alpha: float, base: int = 0) -> None:
        weights = [1.0 / (rank**alpha) for rank in range(1, n + 1)]
        total = sum(weights)
        self.cdf = []
        acc = 0.0
        for w in weights:
            acc += w / total
            self.cdf.append(acc)
        self.pages = list(range(base, base + n))
        rng.shuffle(self.pages)
        self.rng = rng

    def draw(self) -> int:
        return self.pages[min(bisect.bisect_left(self.cdf, self.rng.random()), len(self.pages) - 1)]


def _looping(n: int, base: int, length: int) -> list[int]:
    return [base + i % length for i in range(n)]


def _hot_and_scan(
    rng: random.Random, n: int, hot_base: int, hot: int, scan_base: int, scan: int
) -> list[int]:
    refs, cursor = [], 0
    for _ in range(n):
        if rng.random() < 0.5:
            refs.append(hot_base + rng.randrange(hot))
        else:
            refs.append(scan_base + cursor)
            cursor = (cursor + 1) % scan
    return refs


def reference_string(
    workload: str, n: int, frames: int, rng: random.Random
) -> tuple[int, list[int]]:
    """(pages in the region, the page of each access)."""
    m = frames
    if workload == "sequential":
        hot = 3 * m // 4
        return hot + 3 * m, _hot_and_scan(rng, n, 0, hot, hot, 3 * m)
    if workload == "looping":
        return 3 * m // 2, _looping(n, 0, 3 * m // 2)
    if workload == "zipf":
        z = Zipf(rng, 6 * m, 1.0)
        return 6 * m, [z.draw() for _ in range(n)]
    if workload == "mix":
        phase = n // 5
        a, b, c, d, e, f = (
            0,
            4 * m,
            4 * m + 3 * m // 2,
            5 * m + 3 * m // 2,
            8 * m + 3 * m // 2,
            10 * m + 3 * m // 2,
        )
        pages = f + 5 * m // 4
        z1, z2 = Zipf(rng, 4 * m, 1.0, a), Zipf(rng, 2 * m, 1.2, e)
        refs = [z1.draw() for _ in range(phase)]
        refs += _looping(phase, b, 3 * m // 2)
        refs += _hot_and_scan(rng, phase, c, 3 * m // 4, d, 3 * m)
        refs += [z2.draw() for _ in range(phase)]
        refs += _looping(n - 4 * phase, f, 5 * m // 4)
        return pages, refs
    raise ValueError(f"unknown workload {workload!r}; choose from {', '.join(WORKLOADS)}")


# -- Belady's OPT -----------------------------------------------------------------------


def belady_faults(refs: Sequence[int], frames: int, resident: set[int]) -> int:
    """Faults of the optimal demand pager (evict the page used furthest ahead),
    starting with `resident` in memory."""
    never = len(refs)
    next_use = [never] * len(refs)
    last: dict[int, int] = {}
    for i in range(len(refs) - 1, -1, -1):
        next_use[i] = last.get(refs[i], never)
        last[refs[i]] = i
    cache: dict[int, int] = {}  # page -> its next use
    heap: list[tuple[int, int]] = []  # (-next use, page), lazily updated
    for page in resident:
        nu = last.get(page, never)
        cache[page] = nu
        heapq.heappush(heap, (-nu, page))
    while len(cache) > frames:  # more resident than frames: drop the furthest
        _, page = heapq.heappop(heap)
        cache.pop(page, None)
    faults = 0
    for i, page in enumerate(refs):
        nu = next_use[i]
        if page not in cache:
            faults += 1
            if len(cache) >= frames:
                while True:
                    neg, victim = heapq.heappop(heap)
                    if cache.get(victim) == -neg:
                        del cache[victim]
                        break
        cache[page] = nu
        heapq.heappush(heap, (-nu, page))
    return faults


# -- one run in a kernel ------------------------------------------------------------------


def run_policy(policy: str | None, refs: Sequence[int], pages: int, frames: int, seed: int) -> dict:
    """Run the reference string under `policy` (a module name, None: the kernel's
    CLOCK) and count the faults of the measured part."""
    k = Kernel(seed=seed, cpus=1, frames=frames)
    probe: dict = {}

    def snapshot(pid: int, base_vpn: int) -> tuple[int, set[int]]:
        table = k.tasks[pid].aspace.table
        resident = {vpn - base_vpn for vpn, pte in table.items() if pte.frame >= 0}
        return k.mm.faults, resident

    def workload(proc):
        base = yield MemMap(pages)
        for i in range(pages):
            yield MemWrite(base + i * PAGE_SIZE, b"\x01")
        if policy is not None:
            yield ModLoad(policy)
        probe["start"] = snapshot(proc.pid, base // PAGE_SIZE)
        t0 = time.perf_counter()
        bad = 0
        for page in refs:
            data = yield MemRead(base + page * PAGE_SIZE, 1)
            bad += data != b"\x01"
        probe["host_s"] = time.perf_counter() - t0
        probe["faults"] = k.mm.faults - probe["start"][0]
        probe["bad"] = bad

    try:
        k.spawn(workload, name="memwork")
        k.run()
        if "faults" not in probe:
            raise RuntimeError(f"the workload under {policy} did not finish: {k.log.lines()[-3:]}")
        rec = k.mlaas.modules.get(policy) if policy else None
        if rec is not None and rec.state != "live":
            raise RuntimeError(f"{policy} was ejected: {rec.report}")
        if probe["bad"]:
            raise RuntimeError(f"{probe['bad']} reads returned wrong data under {policy}")
        return {
            "faults": probe["faults"],
            "hit_rate": 1.0 - probe["faults"] / len(refs),
            "prefetched": k.mm.prefetched,
            "host_s": round(probe["host_s"], 4),
            "resident_at_start": probe["start"][1],
        }
    finally:
        k.shutdown()


def gap_closed(hits: int, lru_hits: int, opt_hits: int) -> float | None:
    gap = opt_hits - lru_hits
    return None if gap <= 0 else (hits - lru_hits) / gap


def measure(n: int, frames: int, seed: int, quiet: bool = False) -> tuple[dict, dict]:
    """The results (seeded, the same on any host) and the host seconds each run's
    measured part took (for timing.json)."""
    results: dict = {"frames": frames, "accesses": n, "seed": seed, "workloads": {}}
    host_s: dict = {}
    progress = Progress("memory", len(WORKLOADS) * (len(POLICIES) + 1), quiet)
    for wi, workload in enumerate(WORKLOADS):
        rng = random.Random(f"{seed}:{workload}")
        pages, refs = reference_string(workload, n, frames, rng)
        runs = {}
        resident = None
        for policy in POLICIES:
            r = run_policy(policy, refs, pages, frames, seed + wi)
            resident = r.pop("resident_at_start")
            host_s.setdefault(workload, {})[policy] = r.pop("host_s")
            runs[policy] = r
            progress.step(f"{workload}/{policy}")
        opt_faults = belady_faults(refs, frames, resident or set())
        runs["opt"] = {"faults": opt_faults, "hit_rate": 1.0 - opt_faults / n, "prefetched": 0}
        progress.step(f"{workload}/opt")
        lru_hits, opt_hits = n - runs["lru"]["faults"], n - opt_faults
        for r in runs.values():
            r["gap_closed"] = gap_closed(n - r["faults"], lru_hits, opt_hits)
        results["workloads"][workload] = {"pages": pages, "runs": runs}
    mix = results["workloads"]["mix"]["runs"]["learned_warmth"]["gap_closed"]
    results["target"] = {"learned_warmth_gap_closed_on_mix": mix, "goal": TARGET_GAP_CLOSED,
                         "met": mix is not None and mix >= TARGET_GAP_CLOSED}  # fmt: skip
    return results, {"host_s": host_s}


# -- output -----------------------------------------------------------------------------------


def table(results: dict) -> str:
    names = [*POLICIES, "opt"]
    rows = []
    for workload, w in results["workloads"].items():
        for name in names:
            r = w["runs"][name]
            closed = "n/a" if r["gap_closed"] is None else f"{100 * r['gap_closed']:.0f}%"
            rows.append(
                (
                    workload,
                    name,
                    f"{100 * r['hit_rate']:.1f}%",
                    r["faults"],
                    r["prefetched"],
                    closed,
                )
            )
    t = results["target"]
    verdict = "met" if t["met"] else "NOT met"
    return (
        f"# memory: advisors vs LRU and Belady's OPT\n\n"
        f"{results['accesses']} accesses per workload, {results['frames']} frames of memory, seed {results['seed']}.\n\n"
        + markdown_table(
            ("workload", "policy", "hit rate", "faults", "prefetched", "LRU→OPT gap closed"), rows
        )
        + f"\nTarget: learned_warmth closes ≥ {100 * t['goal']:.0f}% of the LRU→OPT gap on mix: "
        f"{100 * (t['learned_warmth_gap_closed_on_mix'] or 0):.0f}% ({verdict}).\n"
    )


def timing_line(timing: dict) -> str:
    total = {}
    for runs in timing["host_s"].values():
        for policy, seconds in runs.items():
            total[policy] = total.get(policy, 0.0) + seconds
    return "host seconds for the measured accesses, per policy: " + ", ".join(
        f"{policy} {seconds:.2f}" for policy, seconds in total.items()
    )


def plot(results: dict, directory: str) -> None:
    plt = pyplot()
    names = [*POLICIES, "opt"]
    workloads = list(results["workloads"])
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        xs = [j + (i - len(names) / 2 + 0.5) * width for j in range(len(workloads))]
        hits = [100 * results["workloads"][w]["runs"][name]["hit_rate"] for w in workloads]
        axes[0].bar(xs, hits, width, label=name, color=f"C{i}")
        if name not in ("lru", "opt"):
            closed = [
                100 * (results["workloads"][w]["runs"][name]["gap_closed"] or 0) for w in workloads
            ]
            axes[1].bar(xs, closed, width, label=name, color=f"C{i}")
    for ax, title, ylabel in (
        (axes[0], "hit rate", "%"),
        (axes[1], "LRU→OPT gap closed", "% of the gap"),
    ):
        ax.set_xticks(range(len(workloads)), workloads)
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        ax.grid(axis="y", alpha=0.3)
    axes[1].axhline(
        100 * TARGET_GAP_CLOSED, color="k", ls="--", lw=1, label="target (learned, mix)"
    )
    axes[1].legend(fontsize=8)
    axes[0].legend(fontsize=8)
    fig.suptitle(
        f"memory advisors, {results['frames']} frames, {results['accesses']} accesses per workload"
    )
    fig.tight_layout()
    fig.savefig(f"{directory}/hit_rates.png", dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = parser("memory", "memory advisors against LRU and Belady's OPT")
    p.add_argument(
        "--frames",
        type=int_in(MIN_FRAMES, MAX_FRAMES),
        default=64,
        help="physical memory in frames (default 64)",
    )
    p.add_argument(
        "--accesses",
        type=positive_int,
        default=None,
        help="accesses per workload (default 30000, quick 6000)",
    )
    args = p.parse_args(argv)
    n = args.accesses or (6000 if args.quick else 30000)
    with results_dir(args.out) as tmp:
        results, timing = measure(n, args.frames, args.seed, args.quiet)
        write_json(tmp, results)
        write_markdown(tmp, table(results))
        plot(results, tmp)
        write_timing(tmp, timing, timing_line(timing))
    print(table(results))
    print(f"written to {args.out}", file=sys.stderr)
    return 0
