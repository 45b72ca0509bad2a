"""Hostile: writes bytes of its own: to stdout and stderr (harmless), and to the
protocol pipe, in the way `prefetch`'s vpn picks:

0: bytes that are not MessagePack; 1: a length of 4 GiB; 2: half a message,
then it exits."""

import fcntl
import os
import stat

from kernel.mlaas import MemoryAdvisor


def protocol_fd() -> int:
    """The pipe the child writes its replies to."""
    for fd in range(3, 64):
        try:
            if stat.S_ISFIFO(os.fstat(fd).st_mode) and (
                fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_WRONLY
            ):
                return fd
        except OSError:
            continue
    raise RuntimeError("no pipe found")


class GarbagePipe(MemoryAdvisor):
    name = "garbage_pipe"

    def select_victim(self, candidates):
        os.write(1, b"\xff\x00 junk on stdout\n" * 100)
        os.write(2, b"\xff\x00 junk on stderr\n" * 100)
        return candidates[-1]

    def prefetch(self, pid, vpn):
        fd = protocol_fd()
        if vpn == 0:
            os.write(fd, b"\x00\x00\x00\x08\xc1\xc1\xc1\xc1\xc1\xc1\xc1\xc1")
        elif vpn == 1:
            os.write(fd, b"\xff\xff\xff\xff")
        else:
            os.write(fd, b"\x00\x00\x01\x00\x93\x01")
            os._exit(0)
        return [vpn + 1]
