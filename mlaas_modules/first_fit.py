"""first_fit: a baseline GPU advisor.

TPC allocation: contexts in the order given each get the first run of free
TPCs of their demand (`demand_tpcs`, or an equal share when they state
none); a context that finds no free TPC left shares the whole device.
Atom size and right-sizing are left to the driver's defaults.
"""

from kernel.mlaas import GpuAdvisor


class FirstFit(GpuAdvisor):
    name = "first_fit"
    budget_us = 500

    def tpc_allocation(self, contexts, n_tpcs):
        if not contexts:
            return {}
        share = max(1, n_tpcs // len(contexts))
        masks = {}
        next_free = 0
        for c in contexts:
            ctx = c if isinstance(c, int) else c.ctx
            demand = getattr(c, "demand_tpcs", None) or share
            demand = max(1, min(demand, n_tpcs))
            if next_free + demand <= n_tpcs:
                masks[ctx] = ((1 << demand) - 1) << next_free
                next_free += demand
            else:
                masks[ctx] = (1 << n_tpcs) - 1
        return masks
