"""A GPU advisor that answers whatever the test tells it: `self.told[callback]`
makes each answer from the call's arguments (masks that lie, mappings that are
not, objects whose dunders go off, ...)."""

from kernel.mlaas import GpuAdvisor


class AnswersAsToldGpu(GpuAdvisor):
    name = "told_gpu"

    def on_load(self):
        self.told = {}

    def tpc_allocation(self, contexts, n_tpcs):
        make = self.told.get("tpc_allocation")
        return None if make is None else make(contexts, n_tpcs)
