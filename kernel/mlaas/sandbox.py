"""The sandbox of an isolated MLaaS module's process: rlimits, Landlock, capabilities, seccomp.

`kernel.mlaas.child` calls `apply` once, after its own imports and before the
module's first line (its top level) runs.  Every limit is for the life of the
process: none can be lifted from inside, so all of the module's code lives
under all of them.

=============  ================================================================
limit          what it guarantees
=============  ================================================================
rlimits        ``RLIMIT_AS`` caps the address space (an allocation past it is
               a ``MemoryError``); ``RLIMIT_CPU`` caps the CPU time of the
               whole process (SIGXCPU, then SIGKILL a second later); no core
               dumps; ``RLIMIT_FSIZE`` 0: no regular file grows by a byte
               (Python ignores SIGXFSZ, so a write fails with EFBIG; stderr
               is a pipe, which the limit does not count); ``RLIMIT_NOFILE``
               `MAX_OPEN_FILES`; ``RLIMIT_NPROC`` 0: no new process or thread
               (the count is the user's, and root is exempt from it, so
               seccomp's denial of ``clone`` is the guarantee and this the
               second line).
Landlock       Files are read-only, and only beneath the directories Python
               imports from and the module's own directory (`readable`).
               Every write, create, rename or delete, anywhere, is denied;
               from Landlock ABI 3 a truncation too, from ABI 5 an ioctl on
               a device.
capabilities   The process drops every capability, so running as root gives a
               module nothing that an ordinary user lacks.
seccomp        Default deny: only the calls in `ALLOWED_SYSCALLS` pass, and
               those of `_allowed_if` only with the arguments it lists.
               Landlock does not cover a file's metadata, so chmod, chown,
               utime and the xattr calls, which it would let through on a file
               the module may read, are denied here, with link, symlink,
               truncate, mknod, rename and everything else the child does not
               use: new processes and threads, sockets, signals to other
               processes, tracing, other processes' memory, System V IPC,
               raising its own limits or priority, unsetting its death
               signal, the administrative calls (mount, namespaces, modules,
               bpf, ...).  A denied call fails with EPERM (Python:
               PermissionError): a module that probes the sandbox sees an
               error, not a kill, and a library that tries an optional call
               goes on without it.  A call through another architecture's
               entry (i386's ``int 0x80``) kills the process: no Python code
               makes one.
=============  ================================================================

**How the allowlist was found.**  The child ran every shipped module, the
isolated test suite (the hostile modules included) and a module that compiles
with numba at import, under ``strace -f``; the list is what it called after
the filter was loaded, less what only the hostile modules tried, plus the few
harmless calls plain Python code reaches for (``time.sleep``, ``select``,
``os.urandom``, ``resource.getrusage``).  A call missing from the list is
an error in the module that makes it, never a wider sandbox.

The libraries are `landlock` (the Landlock syscalls) and `pyseccomp`
(libseccomp's filter compiler); only `capset` and `prctl`, which neither
covers, are called through ctypes.  Landlock needs Linux 5.13 and seccomp
needs libseccomp: where either is missing, `apply` raises `SandboxError` and
the module is not loaded (the sandbox never silently weakens).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import resource
import signal
import termios
from collections.abc import Iterable

#: Descriptors the process may hold: the pipes, stdio and a few files being
#: imported (numpy and numba's imports never hold more than three at once).
MAX_OPEN_FILES = 16
#: New processes or threads it may make (RLIMIT_NPROC).
MAX_PROCESSES = 0
#: The size a regular file may grow to (RLIMIT_FSIZE).
MAX_FILE_BYTES = 0

_PR_SET_PDEATHSIG = 1
_PR_GET_NAME = 16
_PR_CAPBSET_READ = 23
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_UNKNOWN_SYSCALL = -1  # libseccomp's __NR_SCMP_ERROR

#: The calls the child may make, whatever their arguments.  Names that this
#: libseccomp does not know are skipped: its kernel does not have them either.
ALLOWED_SYSCALLS = (
    # the protocol pipes, stdio, and reading what Landlock lets it read
    "read", "readv", "write", "writev", "pread64", "lseek", "close", "openat", "newfstatat",
    "fstat", "statx", "statfs", "fstatfs", "getdents64", "readlink", "readlinkat", "getcwd",
    "access", "faccessat", "faccessat2",
    # memory: Python's allocator, numpy's, and a JIT's code
    "brk", "mmap", "munmap", "mremap", "mprotect", "madvise", "mbind",
    # time, sleeping and waiting
    "clock_gettime", "clock_getres", "gettimeofday", "clock_nanosleep", "nanosleep", "poll",
    "ppoll", "select", "pselect6", "futex", "sched_yield",
    # its own signal handlers and mask, and the return from a handler
    "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "sigaltstack", "restart_syscall",
    # facts about itself
    "getpid", "gettid", "getppid", "getuid", "geteuid", "getgid", "getegid", "uname",
    "sched_getaffinity", "getrusage", "times", "getpriority", "getrandom",
    "exit", "exit_group",
)  # fmt: skip


def _allowed_if(own_pid: int) -> dict[str, list[tuple[tuple[int, int, int], ...]]]:
    """The calls allowed only with these arguments: name -> a list of rules,
    each a tuple of (argument, operator, value) comparisons that must all hold.
    (seccomp compares all 64 bits, so a value with stray high bits is denied.)"""
    import pyseccomp as seccomp

    eq = seccomp.EQ

    def any_of(arg: int, values: Iterable[int]) -> list[tuple[tuple[int, int, int], ...]]:
        return [((arg, eq, v),) for v in values]

    return {
        # signals to itself only (raise, abort, os.kill(os.getpid(), ...))
        "kill": [((0, eq, own_pid),)],
        "tgkill": [((0, eq, own_pid),)],
        # reading its limits (resource.getrlimit); setting one has a new limit
        "prlimit64": [((0, eq, 0), (2, eq, 0)), ((0, eq, own_pid), (2, eq, 0))],
        # descriptor flags and duplicates; no locks, leases, owners or signals
        "fcntl": any_of(1, (fcntl.F_DUPFD, fcntl.F_DUPFD_CLOEXEC, fcntl.F_GETFD, fcntl.F_SETFD,
                            fcntl.F_GETFL, fcntl.F_SETFL)),
        # isatty, the terminal's size, close-on-exec, bytes waiting; nothing else
        "ioctl": any_of(1, (termios.TCGETS, termios.TIOCGWINSZ, termios.FIOCLEX,
                            termios.FIONCLEX, termios.FIONREAD)),
        # reads that libraries make at import (libcap's probe of the bounding set)
        "prctl": any_of(0, (_PR_CAPBSET_READ, _PR_GET_NAME)),
    }  # fmt: skip


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
    resource.setrlimit(resource.RLIMIT_FSIZE, (MAX_FILE_BYTES, MAX_FILE_BYTES))
    resource.setrlimit(resource.RLIMIT_NOFILE, (MAX_OPEN_FILES, MAX_OPEN_FILES))
    resource.setrlimit(resource.RLIMIT_NPROC, (MAX_PROCESSES, MAX_PROCESSES))


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
    """seccomp: deny by default (EPERM), allow the calls above."""
    import pyseccomp as seccomp

    f = seccomp.SyscallFilter(defaction=seccomp.ERRNO(errno.EPERM))
    f.set_attr(seccomp.Attr.ACT_BADARCH, seccomp.KILL_PROCESS)
    for name in ALLOWED_SYSCALLS:
        if seccomp.resolve_syscall(seccomp.Arch.NATIVE, name) != _UNKNOWN_SYSCALL:
            f.add_rule(seccomp.ALLOW, name)
    for name, rules in _allowed_if(own_pid).items():
        for rule in rules:
            f.add_rule(seccomp.ALLOW, name, *(seccomp.Arg(*cmp) for cmp in rule))
    f.load()
