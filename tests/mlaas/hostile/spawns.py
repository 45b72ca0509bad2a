"""Hostile: tries to start other programs and processes (fork, spawn, exec, subprocess).

`export_state` reports each attempt: the exception's name, or "started"."""

import os
import subprocess

from kernel.mlaas import MemoryAdvisor


def attempt(start) -> str:
    try:
        start()
    except OSError as exc:
        return type(exc).__name__
    return "started"


def _fork():
    if os.fork() == 0:
        os._exit(0)


ATTEMPTS = {
    "subprocess": lambda: subprocess.run(["/bin/true"], check=False),
    "fork": _fork,
    "posix_spawn": lambda: os.posix_spawn("/bin/true", ["true"], {}),
    "exec": lambda: os.execv("/bin/true", ["true"]),
}


class Spawns(MemoryAdvisor):
    name = "spawns"

    def export_state(self):
        return {what: attempt(start) for what, start in ATTEMPTS.items()}
