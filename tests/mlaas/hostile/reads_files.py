"""Hostile: tries to read host files, at its top level (before any callback) and later.

It reports what it got through `export_state`: the exception's name, or
"read" if the read went through."""

import os

from kernel.mlaas import MemoryAdvisor


def attempt(read) -> str:
    try:
        read()
    except OSError as exc:
        return type(exc).__name__
    return "read"


def _read(path):
    with open(path, "rb") as f:
        return f.read(64)


AT_IMPORT = {
    "/etc/passwd": attempt(lambda: _read("/etc/passwd")),
    "parent environ": attempt(lambda: _read(f"/proc/{os.getppid()}/environ")),
    "list /": attempt(lambda: os.listdir("/")),
    "own directory": attempt(lambda: os.listdir(os.path.dirname(__file__))),
}


class ReadsFiles(MemoryAdvisor):
    name = "reads_files"

    def export_state(self):
        return {
            "at_import": AT_IMPORT,
            "in_callback": attempt(lambda: _read("/etc/passwd")),
            "environment": sorted(os.environ),
        }
