"""Hostile: tries to reach past its own process: signal the kernel and every
process, lift its own limits, raise its priority, unset the signal that kills
it with the kernel, make System V shared memory (which would outlive it).

`export_state` reports each attempt: the exception's name, or "done".
(Signal 0 only checks the permission to signal: nothing is delivered.)"""

import ctypes
import os
import resource

from kernel.mlaas import MemoryAdvisor


def attempt(act) -> str:
    try:
        act()
    except (OSError, ValueError) as exc:
        return type(exc).__name__
    return "done"


def _outlive_the_kernel():
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(1, 0, 0, 0, 0) != 0:  # PR_SET_PDEATHSIG: none
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))


def _shared_memory():
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.shmget(0, 1 << 20, 0o1600) < 0:  # IPC_PRIVATE, IPC_CREAT | 0600
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))


UNLIMITED = (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
ATTEMPTS = {
    "signal the kernel": lambda: os.kill(os.getppid(), 0),
    "signal every process": lambda: os.kill(-1, 0),
    "lift the memory limit": lambda: resource.setrlimit(resource.RLIMIT_AS, UNLIMITED),
    "lift the CPU limit": lambda: resource.setrlimit(resource.RLIMIT_CPU, UNLIMITED),
    "raise its priority": lambda: os.nice(-5),
    "outlive the kernel": _outlive_the_kernel,
    "keep shared memory": _shared_memory,
    "signal itself": lambda: os.kill(os.getpid(), 0),
}


class Escapes(MemoryAdvisor):
    name = "escapes"

    def export_state(self):
        return {what: attempt(act) for what, act in ATTEMPTS.items()}
