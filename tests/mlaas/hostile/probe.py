"""A well-behaved isolated module that reports what its context offers.

`export_state` answers with what it read of `ctx` (params, name, kind,
virtual time, the seeded rng, the memory view, the notices it saw) and logs
a line; `select_victim` tries kernel-space inference, which isolated modules
do not have."""

from kernel.mlaas import MemoryAdvisor


class Probe(MemoryAdvisor):
    name = "probe"
    params = {"depth": 2, "label": "x"}

    def on_load(self):
        self.faults = []

    def on_fault(self, pid, vpn, major):
        self.faults.append([pid, vpn, major, self.ctx.now_ns])

    def export_state(self):
        ctx = self.ctx
        memory = ctx.memory
        ctx.log.info("probed", faults=len(self.faults), odd=object)
        try:
            memory.owner(10**6)
            missing = "answered"
        except IndexError as exc:
            missing = f"IndexError: {exc}"
        return {
            "params": dict(ctx.params),
            "name": ctx.name,
            "kind": ctx.kind,
            "now_ns": ctx.now_ns,
            "rng": ctx.rng.random(),
            "nframes": memory.nframes,
            "owner": list(memory.owner(5)),
            "swapped": memory.swapped_pages(1),
            "missing": missing,
            "faults": self.faults,
        }

    def select_victim(self, candidates):
        return self.ctx.infer(None, [1.0])
