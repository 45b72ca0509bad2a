"""The isolated child's sandbox is default-deny (kernel/mlaas/sandbox.py): a
hostile module tries every call that changes a host file without writing to
it, and more processes, threads and descriptors; each gets an error, the
host's file is untouched, and the kernel goes on.  The MLaaS design page's table of
limits is the code's."""

from __future__ import annotations

import os
import shutil
import stat

import pyseccomp
import pytest

from kernel import Kernel
from kernel.mlaas import faults, isolated, sandbox
from kernel.mlaas.isolated import Limits, limits_table, start

HERE = os.path.dirname(__file__)
README = os.path.join(os.path.dirname(os.path.dirname(HERE)), "docs", "design", "mlaas.md")

#: The raw calls the hostile module makes, by their native numbers.
METADATA_CALLS = (
    "chmod", "fchmod", "fchmodat", "fchmodat2", "chown", "fchown", "lchown", "fchownat",
    "utime", "utimes", "futimesat", "utimensat", "setxattr", "lsetxattr", "fsetxattr",
    "removexattr", "lremovexattr", "fremovexattr", "link", "linkat", "symlink", "symlinkat",
    "truncate", "ftruncate", "mknod", "mknodat", "rename", "renameat", "renameat2", "unlink",
    "unlinkat", "clone3",
)  # fmt: skip


class QuietHost:
    def now_ns(self) -> int:
        return 0

    def log(self, level: str, event: str, fields: dict) -> None:
        pass

    def query(self, view: str, method: str, args: tuple):
        raise LookupError(view)


def _native_numbers() -> str:
    numbers = {n: pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, n) for n in METADATA_CALLS}
    return ",".join(f"{n}:{nr}" for n, nr in numbers.items() if nr >= 0)


def _fingerprint(path: str) -> tuple:
    st = os.lstat(path)
    return (st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_nlink, st.st_atime_ns,
            st.st_mtime_ns, os.listxattr(path))  # fmt: skip


@pytest.fixture
def victim(tmp_path):
    """The hostile module, copied beside a host file it may read: (module, file)."""
    module = tmp_path / "touches_metadata.py"
    shutil.copy(os.path.join(HERE, "hostile", "touches_metadata.py"), module)
    target = tmp_path / "victim.txt"
    target.write_text("the host's data\n")
    os.chmod(target, 0o640)
    os.utime(target, ns=(1_000_000_000, 2_000_000_000))
    return str(module), str(target)


def test_metadata_calls_processes_threads_and_files_are_denied_and_the_file_is_untouched(victim):
    module, target = victim
    before, listing = _fingerprint(target), sorted(os.listdir(os.path.dirname(target)))
    params = {"target": target, "syscalls": _native_numbers()}
    m = start(module, params, seed=0, host=QuietHost())
    try:
        report = m.advisor.export_state()
    finally:
        m.close()
    assert len(report["raw"]) >= 25  # every call of this architecture was made
    assert report["raw"] == dict.fromkeys(report["raw"], "EPERM")
    assert report["library"] == {
        "os.chmod": "EPERM", "os.chown": "EPERM", "os.utime": "EPERM", "os.setxattr": "EPERM",
        "os.link": "EPERM", "os.symlink": "EPERM", "os.truncate": "EPERM", "os.mknod": "EPERM",
        "os.rename": "EPERM", "os.fork": "EPERM", "thread": "RuntimeError",
        "write a file": "EACCES",  # Landlock's answer: open for writing is not a metadata call
    }  # fmt: skip
    # Descriptors run out below the limit, counting the pipes and stdio already open.
    assert report["open many"]["error"] == "EMFILE"
    assert 0 < report["open many"]["opened"] < sandbox.MAX_OPEN_FILES
    assert report["limits"] == {
        "RLIMIT_NOFILE": [sandbox.MAX_OPEN_FILES] * 2,
        "RLIMIT_NPROC": [sandbox.MAX_PROCESSES] * 2,
        "RLIMIT_FSIZE": [sandbox.MAX_FILE_BYTES] * 2,
    }
    assert _fingerprint(target) == before
    assert sorted(os.listdir(os.path.dirname(target))) == listing


def test_a_module_that_tries_them_in_a_booted_kernel_is_refused_not_the_kernel(victim):
    module, target = victim
    before = _fingerprint(target)
    k = Kernel(seed=0, cpus=1, frames=64)
    try:
        params = {"target": target, "syscalls": _native_numbers()}
        rec = k.mlaas.insmod(module, params, isolated=True)
        report = k.mlaas.ask(rec, rec.methods["export_state"])  # through the guard
        assert rec.state == "live" and set(report["raw"].values()) == {"EPERM"}
        k.mlaas.rmmod(rec.name)
        assert k.mlaas.insmod("rr", isolated=True).state == "live"  # the kernel goes on
    finally:
        k.shutdown()
    assert _fingerprint(target) == before


def test_every_allowed_call_is_known_to_this_libseccomp():
    known = [n for n in sandbox.ALLOWED_SYSCALLS
             if pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, n) >= 0]  # fmt: skip
    # A few are of other architectures' tables only; the core of the list is here.
    assert {"read", "write", "mmap", "openat", "futex", "exit_group", "rt_sigreturn"} <= set(known)
    denied = {"chmod", "fchmodat", "chown", "utimensat", "setxattr", "link", "symlink",
              "truncate", "ftruncate", "mknod", "rename", "clone", "clone3", "fork", "execve",
              "socket", "ptrace", "unlink", "mkdir"}  # fmt: skip
    assert not denied & set(sandbox.ALLOWED_SYSCALLS)
    assert not denied & set(sandbox._allowed_if(os.getpid()))


# -- the design page's limits are the code's -------------------------------------------------


def test_the_docs_table_of_isolated_limits_is_generated_from_the_code():
    with open(README, encoding="utf-8") as f:
        text = f.read()
    table = limits_table()
    assert table in text, (
        "docs/design/mlaas.md's isolated limits table is stale; it should read:\n" + table
    )


def test_the_limits_the_table_shows_are_the_ones_insmod_gives(tmp_path):
    k = Kernel(seed=0, cpus=1, frames=64)
    try:
        rec = k.mlaas.insmod("rr", isolated=True)
        assert rec.isolated.limits == Limits()
        with open(f"/proc/{rec.isolated.pid}/limits") as f:
            limits = {line[:26].strip(): line[26:].split()[:2] for line in f.readlines()[1:]}
    finally:
        k.shutdown()
    d = Limits()
    assert limits["Max cpu time"] == [str(d.cpu_s), str(d.cpu_s + 1)]
    assert limits["Max address space"] == [str(d.memory_bytes)] * 2
    assert limits["Max open files"] == [str(sandbox.MAX_OPEN_FILES)] * 2
    assert limits["Max processes"] == [str(sandbox.MAX_PROCESSES)] * 2
    assert limits["Max file size"] == [str(sandbox.MAX_FILE_BYTES)] * 2
    # The child's hang limit ends a question before the in-process watchdog's.
    assert d.hang_s < faults.HANG_LIMIT_NS / 1e9
    assert d.deadline_s < d.hang_s and d.deadline_s == faults.MIN_HARD_LIMIT_NS / 1e9
    assert "| `hang_s` |" in limits_table() and f"| {d.hang_s:g} s |" in limits_table()
    assert isolated.MISS_STRIKES == faults.OVERRUN_STRIKES


def test_stderr_is_a_pipe_and_a_module_that_floods_it_still_answers(tmp_path):
    path = tmp_path / "shouts.py"
    path.write_text(
        "import os\n"
        "from kernel.mlaas import MemoryAdvisor\n"
        "class Shouts(MemoryAdvisor):\n"
        "    name = 'shouts'\n"
        "    def select_victim(self, candidates):\n"
        "        written = 0\n"
        "        try:\n"
        "            while written < 1 << 22:\n"
        "                written += os.write(2, b'x' * 4096)\n"
        "        except BlockingIOError:\n"
        "            pass\n"
        "        return written\n"
    )
    m = start(str(path), None, seed=0, host=QuietHost())
    try:
        written = m.advisor.select_victim([1])
        mode = os.stat(f"/proc/{m.pid}/fd/2").st_mode
    finally:
        m.close()
    assert stat.S_ISFIFO(mode)
    assert 0 < written < 1 << 22  # the pipe filled, and the write failed rather than blocked


def test_a_refusal_still_quotes_the_childs_last_words_on_stderr(tmp_path):
    path = tmp_path / "mutters.py"
    path.write_text(
        "import os\nos.write(2, b'noise\\n' * 1000 + b'my last words\\n')\nos._exit(3)\n"
    )
    with pytest.raises(
        faults.ModuleError, match="exited with status 3 while loading: my last words"
    ):
        start(str(path), None, seed=0, host=QuietHost())
