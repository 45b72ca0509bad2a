"""The sandbox of an isolated MLaaS module's process: rlimits, Landlock, capabilities, seccomp.

`kernel.mlaas.child` calls `apply` once, after its own imports and before the
module's first line (its top level) runs.  Every limit is for the life of the
process: none can be lifted from inside, so a module's own code, its threads
included, lives under all of them.

=============  ================================================================
limit          what it guarantees
=============  ================================================================
rlimits        ``RLIMIT_AS`` caps the address space (an allocation past it is
               a ``MemoryError``); ``RLIMIT_CPU`` caps the CPU time of the
               whole process (SIGXCPU, then SIGKILL a second later); no core
               dumps; ``RLIMIT_FSIZE`` bounds what reaches its stderr file;
               ``RLIMIT_NOFILE`` bounds its descriptors.
Landlock       Files are read-only, and only beneath the directories Python
               imports from and the module's own directory (`readable`).
               Every write, create, rename or delete, anywhere, is denied.
capabilities   The process drops every capability, so running as root gives a
               module nothing that an ordinary user lacks.
seccomp        No new process (fork, vfork, execve; clone only with
               CLONE_THREAD, that is a thread), no socket, no signal to any
               other process, no ptrace or access to another process's memory,
               no System V IPC or message queue (memory that would outlive
               it), no raising its own rlimits or priority, no unsetting its
               death signal, and none of the administrative calls (mount,
               namespaces, modules, bpf, ...).
               A denied call fails with EPERM (Python: PermissionError), so a
               module that tries one sees an error rather than a kill.
=============  ================================================================

The libraries are `landlock` (the Landlock syscalls) and `pyseccomp`
(libseccomp's filter compiler); only `capset` and `prctl`, which neither
covers, are called through ctypes.  Landlock needs Linux 5.13 and seccomp
needs libseccomp: where either is missing, `apply` raises `SandboxError` and
the module is not loaded (the sandbox never silently weakens).
"""

from __future__ import annotations

import ctypes
import errno
import os
import resource
import signal
from collections.abc import Iterable

#: What the module's stderr may grow to (Python's own fatal errors land there).
STDERR_BYTES = 1 << 20
#: Descriptors the process may hold.
MAX_OPEN_FILES = 64

_PR_SET_PDEATHSIG = 1
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_CLONE_THREAD = 0x00010000
_UNKNOWN_SYSCALL = -1  # libseccomp's __NR_SCMP_ERROR

#: Calls denied outright (EPERM).  Names that this libseccomp does not know
#: are skipped: the kernel it was built for does not have them either.
DENIED_SYSCALLS = (
    # new processes and programs (clone is filtered by its flags below)
    "fork", "vfork", "execve", "execveat",
    # network: the control pipes are the process's only channel
    "socket", "socketpair", "connect", "bind", "listen", "accept", "accept4",
    # other processes: signals by descriptor, tracing, their memory
    "tkill", "pidfd_open", "pidfd_send_signal", "pidfd_getfd", "ptrace",
    "process_vm_readv", "process_vm_writev", "process_madvise", "kcmp",
    # memory that outlives the process: System V IPC and POSIX message queues
    "shmget", "shmat", "shmctl", "msgget", "msgsnd", "msgrcv", "msgctl", "semget", "semop",
    "semctl", "semtimedop", "mq_open", "mq_unlink", "mq_timedsend", "mq_timedreceive",
    "mq_notify", "mq_getsetattr",
    # its own limits and priority
    "setrlimit", "setpriority", "sched_setscheduler", "sched_setparam", "sched_setattr",
    "ioprio_set",
    # administration
    "mount", "umount2", "pivot_root", "chroot", "unshare", "setns", "fsopen", "fsmount",
    "fsconfig", "fspick", "move_mount", "open_tree", "mount_setattr", "reboot", "kexec_load",
    "kexec_file_load", "init_module", "finit_module", "delete_module", "bpf",
    "perf_event_open", "userfaultfd", "keyctl", "add_key", "request_key", "swapon", "swapoff",
    "syslog", "acct", "quotactl", "iopl", "ioperm", "settimeofday", "clock_settime",
    "clock_adjtime", "adjtimex", "sethostname", "setdomainname", "open_by_handle_at",
    "name_to_handle_at", "io_uring_setup", "io_uring_enter", "io_uring_register",
    "fanotify_init", "mknod", "mknodat", "vhangup",
)  # fmt: skip

#: Calls allowed only when their first argument is the process itself.
OWN_PID_SYSCALLS = ("kill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo")


class SandboxError(Exception):
    """The sandbox could not be applied; the module must not run."""


def apply(*, memory_bytes: int, cpu_s: int, readable: Iterable[str]) -> None:
    """Confine this process for good (see the module docstring)."""
    try:
        # Both libraries look for their C side when imported, which needs what
        # the sandbox forbids (pyseccomp runs ldconfig): import them first.
        import landlock  # noqa: F401
        import pyseccomp  # noqa: F401

        limit_resources(memory_bytes, cpu_s)
        restrict_files(readable)
        drop_capabilities()
        filter_syscalls(os.getpid())
    except SandboxError:
        raise
    except Exception as exc:
        raise SandboxError(f"{type(exc).__name__}: {exc}") from None


def die_with_parent() -> None:
    """SIGKILL this process when its parent (the kernel) dies, so none is left behind."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
        raise SandboxError(f"prctl(PR_SET_PDEATHSIG): {os.strerror(ctypes.get_errno())}")


def limit_resources(memory_bytes: int, cpu_s: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    # The soft limit sends SIGXCPU; a module that catches it is killed a second later.
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_FSIZE, (STDERR_BYTES, STDERR_BYTES))
    resource.setrlimit(resource.RLIMIT_NOFILE, (MAX_OPEN_FILES, MAX_OPEN_FILES))


def restrict_files(readable: Iterable[str]) -> None:
    """Landlock: handle every file-system right the kernel knows, grant only reading."""
    import landlock
    from landlock import FSAccess

    if landlock.landlock_abi_version() < 1:
        raise SandboxError("this kernel has no Landlock")
    ruleset = landlock.Ruleset()  # handles every access right of the running ABI
    for path in sorted(set(readable)):
        if os.path.isdir(path):
            ruleset.allow(path, rules=FSAccess.READ_FILE | FSAccess.READ_DIR)
        elif os.path.isfile(path):
            ruleset.allow(path, rules=FSAccess.READ_FILE)
    ruleset.apply()  # sets no_new_privs too, which seccomp needs
    # The ruleset's descriptor is of no more use; a module must not find it open.
    os.close(ruleset._fd)


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def drop_capabilities() -> None:
    """capset(2) with empty sets: root without capabilities is an ordinary user to
    every permission check that is not about file ownership."""
    libc = ctypes.CDLL(None, use_errno=True)
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()  # zeros: no capability, effective, permitted or inheritable
    if libc.capset(ctypes.byref(header), data) != 0:
        raise SandboxError(f"capset: {os.strerror(ctypes.get_errno())}")


def filter_syscalls(own_pid: int) -> None:
    """seccomp: allow by default, deny the calls above with EPERM."""
    import pyseccomp as seccomp

    deny = seccomp.ERRNO(errno.EPERM)
    f = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
    for name in DENIED_SYSCALLS:
        if seccomp.resolve_syscall(seccomp.Arch.NATIVE, name) != _UNKNOWN_SYSCALL:
            f.add_rule(deny, name)
    # clone makes threads (CLONE_THREAD set) and processes (not set): only threads.
    f.add_rule(deny, "clone", seccomp.Arg(0, seccomp.MASKED_EQ, _CLONE_THREAD, 0))
    # clone3 passes its flags in memory, where seccomp cannot look; ENOSYS makes
    # the C library fall back to clone.
    f.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")
    for name in OWN_PID_SYSCALLS:
        f.add_rule(deny, name, seccomp.Arg(0, seccomp.NE, own_pid))
    # prlimit64 with a new limit sets one; without, it only reads.
    f.add_rule(deny, "prlimit64", seccomp.Arg(2, seccomp.NE, 0))
    # The process must die with the kernel (`die_with_parent`): that stays set.
    f.add_rule(deny, "prctl", seccomp.Arg(0, seccomp.EQ, _PR_SET_PDEATHSIG))
    f.load()
