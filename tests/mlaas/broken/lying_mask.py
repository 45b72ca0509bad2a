"""A GPU advisor whose TPC masks are ints that lie: they claim to equal anything,
`&` to 1 and convert to 7, but their real value is `real` (default -1)."""

from adversary import LyingInt

from kernel.mlaas import GpuAdvisor


class LyingMask(GpuAdvisor):
    name = "lying_mask"
    params = {"real": -1}

    def tpc_allocation(self, contexts, n_tpcs):
        return {c: LyingInt(self.ctx.params["real"]) for c in contexts}
