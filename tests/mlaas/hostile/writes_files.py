"""Hostile: tries to create files in /tmp and in its own directory, at its top level.

`export_state` reports each attempt: the exception's name, or "written"."""

import os

from kernel.mlaas import MemoryAdvisor

TARGETS = {
    "tmp": "/tmp/mlaas-hostile-written",
    "own directory": os.path.join(os.path.dirname(__file__), "written-by-hostile"),
}


def attempt(path: str) -> str:
    try:
        with open(path, "w") as f:
            f.write("pwned")
    except OSError as exc:
        return type(exc).__name__
    return "written"


RESULTS = {where: attempt(path) for where, path in TARGETS.items()}


class WritesFiles(MemoryAdvisor):
    name = "writes_files"

    def export_state(self):
        return RESULTS
