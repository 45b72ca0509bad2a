"""A module whose top-level code calls sys.exit."""

import sys

from kernel.mlaas import SchedAdvisor

sys.exit(3)


class ExitsAtImport(SchedAdvisor):
    name = "exits_at_import"
