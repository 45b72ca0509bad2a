"""A module whose top-level code blocks in time.sleep, in C, for longer than any
test waits."""

import time

from adversary import HANG_S

from kernel.mlaas import SchedAdvisor

time.sleep(HANG_S)


class SleepsAtImport(SchedAdvisor):
    name = "sleeps_at_import"
