"""Hostile: rewrites its copy of malvos: the fault classes at its top level, and
the child's protocol encoder in a callback (its next reply is garbage)."""

import kernel.mlaas.child as child
import kernel.mlaas.faults as faults
from kernel.mlaas import MemoryAdvisor

faults.ModuleError = None
faults.describe = lambda exc: "nothing happened"


class MonkeyPatches(MemoryAdvisor):
    name = "monkeypatches"

    def select_victim(self, candidates):
        child.encode = lambda message: b"\x00\x00\x00\x03\xc1\xc1\xc1"
        return candidates[0]
