"""init: the first program.  It starts the shell on the console and restarts
it whenever it exits, until the console reaches the end of its input; then
it powers the machine off."""

from __future__ import annotations

from kernel.traps import Call, Log, Message, Poweroff, Spawn, WaitPid


def init(proc):
    con = proc.caps["console"]
    while True:
        pid = yield Spawn("sh", caps=proc.caps)  # the console, and the GPU if there is one
        status = yield WaitPid(pid)
        end = yield Call(con, Message("status"))
        if end.msg.payload:
            yield Log("console closed, powering off")
            yield Poweroff()
            return 0
        yield Log("shell exited, restarting", fields={"status": status})
