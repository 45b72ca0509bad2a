"""Hostile: tries every call that changes a host file without writing to it
(mode, owner, times, extended attributes, links, size, device nodes, names),
and the calls that would get it more processes, threads or descriptors.

The ``target`` parameter names a file the module may read (Landlock lets it:
it lies in the module's own directory); ``syscalls`` is ``name:number,...``,
the native numbers of the raw calls to try, each with arguments that would
change `target` if the call went through.  `export_state` reports each
attempt: the errno's name, the exception's type, or "done"."""

import ctypes
import errno
import os
import resource
import stat
import threading

from kernel.mlaas import MemoryAdvisor

AT_FDCWD = -100
_libc = ctypes.CDLL(None, use_errno=True)


def _raw(number, *args):
    words = [ctypes.c_long(a) if type(a) is int else a for a in args]  # all 64 bits set

    def call():
        if _libc.syscall(ctypes.c_long(number), *words) == -1:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))

    return call


def attempt(act) -> str:
    try:
        act()
    except OSError as exc:
        return errno.errorcode.get(exc.errno, type(exc).__name__)
    except Exception as exc:  # threading's RuntimeError, say
        return type(exc).__name__
    return "done"


def _fork():
    if os.fork() == 0:
        os._exit(0)


def _thread():
    threading.Thread(target=lambda: None).start()


def _open_many(path):
    files = []
    try:
        while len(files) < 1000:
            files.append(open(path, "rb"))  # noqa: SIM115 - held open on purpose
    except OSError as exc:
        return {"opened": len(files), "error": errno.errorcode.get(exc.errno, "?")}
    finally:
        for f in files:
            f.close()
    return {"opened": len(files), "error": None}


def _calls(target: str, fd: int):
    """name -> arguments that would change `target` (or make something beside it)."""
    p = target.encode()
    d = os.path.dirname(target).encode()
    uid, gid = os.getuid(), os.getgid()
    name, one = b"user.malvos", b"1"
    return {
        "chmod": (p, 0o777), "fchmod": (fd, 0o777), "fchmodat": (AT_FDCWD, p, 0o777, 0),
        "fchmodat2": (AT_FDCWD, p, 0o777, 0),
        "chown": (p, uid, gid), "fchown": (fd, uid, gid), "lchown": (p, uid, gid),
        "fchownat": (AT_FDCWD, p, uid, gid, 0),
        "utime": (p, None), "utimes": (p, None), "futimesat": (AT_FDCWD, p, None),
        "utimensat": (AT_FDCWD, p, None, 0),
        "setxattr": (p, name, one, 1, 0), "lsetxattr": (p, name, one, 1, 0),
        "fsetxattr": (fd, name, one, 1, 0),
        "removexattr": (p, name), "lremovexattr": (p, name), "fremovexattr": (fd, name),
        "link": (p, d + b"/hard"), "linkat": (AT_FDCWD, p, AT_FDCWD, d + b"/hard", 0),
        "symlink": (p, d + b"/soft"), "symlinkat": (p, AT_FDCWD, d + b"/soft"),
        "truncate": (p, 0), "ftruncate": (fd, 0),
        "mknod": (d + b"/node", stat.S_IFIFO | 0o600, 0),
        "mknodat": (AT_FDCWD, d + b"/node", stat.S_IFIFO | 0o600, 0),
        "rename": (p, d + b"/moved"), "renameat": (AT_FDCWD, p, AT_FDCWD, d + b"/moved"),
        "renameat2": (AT_FDCWD, p, AT_FDCWD, d + b"/moved", 0),
        "unlink": (p,), "unlinkat": (AT_FDCWD, p, 0),
        "clone3": (None, 0),
    }  # fmt: skip


class TouchesMetadata(MemoryAdvisor):
    name = "touches_metadata"
    params = {"target": "", "syscalls": ""}

    def export_state(self):
        target = self.ctx.params["target"]
        here = os.path.dirname(target)
        fd = os.open(target, os.O_RDONLY)
        try:
            calls = _calls(target, fd)
            raw = {}
            for entry in filter(None, self.ctx.params["syscalls"].split(",")):
                name, number = entry.split(":")
                raw[name] = attempt(_raw(int(number), *calls[name]))
            library = {
                "os.chmod": attempt(lambda: os.chmod(target, 0o777)),
                "os.chown": attempt(lambda: os.chown(target, os.getuid(), os.getgid())),
                "os.utime": attempt(lambda: os.utime(target, (0, 0))),
                "os.setxattr": attempt(lambda: os.setxattr(target, "user.malvos", b"1")),
                "os.link": attempt(lambda: os.link(target, os.path.join(here, "hard"))),
                "os.symlink": attempt(lambda: os.symlink(target, os.path.join(here, "soft"))),
                "os.truncate": attempt(lambda: os.truncate(target, 0)),
                "os.mknod": attempt(lambda: os.mknod(os.path.join(here, "node"), stat.S_IFIFO)),
                "os.rename": attempt(lambda: os.rename(target, os.path.join(here, "moved"))),
                "os.fork": attempt(_fork),
                "thread": attempt(_thread),
                "write a file": attempt(lambda: open(os.path.join(here, "new"), "w").close()),
            }
        finally:
            os.close(fd)
        return {
            "raw": raw,
            "library": library,
            "open many": _open_many(target),
            "limits": {
                name: list(resource.getrlimit(getattr(resource, name)))
                for name in ("RLIMIT_NOFILE", "RLIMIT_NPROC", "RLIMIT_FSIZE")
            },
        }
