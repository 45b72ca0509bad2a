"""A module whose top-level code raises KeyboardInterrupt."""

from kernel.mlaas import SchedAdvisor

raise KeyboardInterrupt


class InterruptsAtImport(SchedAdvisor):
    name = "interrupts_at_import"
