"""A memory advisor whose victim is an int that lies: it claims to equal every
candidate and converts to 7, but its real value is -1 (`target=minus_one`), the
frame of the page that is faulting in, which is not a candidate
(`target=protected`: it prefetches to make such evictions happen), or a real
candidate (`target=valid`, the one answer the kernel may take)."""

from adversary import LyingInt

from kernel.mlaas import MemoryAdvisor


class LyingVictim(MemoryAdvisor):
    name = "lying_victim"
    params = {"target": "minus_one"}

    def on_load(self):
        self.intended = []  # the real value of each victim it answered
        self.evicted = []  # the frame of each eviction it was told of

    def select_victim(self, candidates):
        target = self.ctx.params["target"]
        if target == "valid":
            real = candidates[len(candidates) // 2]
        elif target == "protected":
            given = set(candidates)
            left_out = [f for f in range(self.ctx.memory.nframes) if f not in given]
            if not left_out:
                return None  # no frame is protected in this eviction: wait for one that is
            real = left_out[0]
        else:
            real = -1
        self.intended.append(real)
        return LyingInt(real)

    def prefetch(self, pid, vpn):
        if self.ctx.params["target"] == "protected":
            return [vpn + 1, vpn + 2, vpn + 3]
        return None

    def on_evict(self, frame, pid, vpn):
        self.evicted.append(frame)
