"""first_fit: a baseline GPU advisor.

TPC allocation: the contexts (ids, in the order given) each get the next
run of free TPCs of an equal share; a context that finds no free TPC left
shares the whole device.
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
        for ctx in contexts:
            demand = max(1, min(share, n_tpcs))
            if next_free + demand <= n_tpcs:
                masks[ctx] = ((1 << demand) - 1) << next_free
                next_free += demand
            else:
                masks[ctx] = (1 << n_tpcs) - 1
        return masks
