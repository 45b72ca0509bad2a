"""Errors a system call can return to its caller.

A trap that fails raises one of these *inside the calling task* (the kernel
throws it into the task's generator).  A task that does not catch it dies
with a line in dmesg; the kernel itself never fails because of a task.
"""

from __future__ import annotations


class SyscallError(Exception):
    """Base of every error a trap can return.  `errno` names the kind."""

    errno = "EINVAL"

    def __str__(self) -> str:
        msg = super().__str__()
        return f"{self.errno}: {msg}" if msg else self.errno


class InvalidArgument(SyscallError):
    errno = "EINVAL"


class CapabilityError(SyscallError):
    """The cap slot is empty, or the cap lacks the right the trap needs."""

    errno = "ECAP"


class NoSuchTask(SyscallError):
    errno = "ESRCH"


class PeerDied(SyscallError):
    """The task at the other end of an IPC died or the object was revoked."""

    errno = "EPIPE"


class WouldBlock(SyscallError):
    errno = "EAGAIN"


class OutOfMemory(SyscallError):
    errno = "ENOMEM"


class SegmentationFault(SyscallError):
    errno = "EFAULT"


class NotSupported(SyscallError):
    """The kernel has no such service (a `VmControl` on a kernel without VMs)."""

    errno = "ENOSYS"


class UnknownTrap(SyscallError):
    errno = "ENOSYS"
