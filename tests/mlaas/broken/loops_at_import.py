"""A module whose top-level code busy-loops for longer than any test waits."""

from adversary import hang

from kernel.mlaas import SchedAdvisor

hang()


class LoopsAtImport(SchedAdvisor):
    name = "loops_at_import"
