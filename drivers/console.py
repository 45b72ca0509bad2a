"""The console server: the task that owns the terminal.

It maps the tty device, binds the tty's interrupt notification to itself, and
serves these requests on its endpoint:

| label        | kind | payload        | answer                          |
| ------------ | ---- | -------------- | ------------------------------- |
| `write`      | Send | text           | -                               |
| `readline`   | Call | prompt         | `line` (text) or `eof`          |
| `foreground` | Send | pid (0: none)  | -                               |
| `status`     | Call | -              | `status` with True at end of input |
| `keys`       | Call | -              | `keys` (typed text, a person is there) |

Ctrl-C from the terminal arrives as an interrupt and kills the foreground
task with SIGINT; at the prompt there is nothing to interrupt.
"""

from __future__ import annotations

from kernel.errors import NoSuchTask
from kernel.traps import (
    BindNotification,
    Kill,
    MapDevice,
    Message,
    Recv,
    Reply,
)
from kernel.tty import IRQ_INTERRUPT


def console_server(proc):
    ep = proc.caps["endpoint"]
    tty = yield MapDevice(proc.caps["tty"])
    yield BindNotification(proc.caps["irq"])
    reader: tuple[int, str] | None = None  # (reply cap, prompt) of a blocked readline
    foreground = 0
    while True:
        r = yield Recv(ep)
        label, payload = r.msg.label, r.msg.payload
        if label == "notification":
            if r.badge & IRQ_INTERRUPT and tty.take_interrupts() and foreground:
                try:
                    yield Kill(foreground, "INT")
                except NoSuchTask:
                    pass
            if reader is not None:
                reader = yield from _answer_reader(tty, *reader)
        elif label == "write":
            tty.write(str(payload))
        elif label == "readline":
            reader = yield from _answer_reader(tty, r.reply, str(payload or ""))
        elif label == "foreground":
            foreground = payload if isinstance(payload, int) else 0
        elif label == "keys":
            yield Reply(r.reply, Message("keys", (tty.take_typed(), tty.interactive)))
        elif label == "status":
            yield Reply(r.reply, Message("status", tty.eof and not tty.lines))
        elif r.reply is not None:
            yield Reply(r.reply, Message("error", f"console: unknown request {label!r}"))


def _answer_reader(tty, reply: int, prompt: str):
    """Answer a blocked readline if input is there; else keep waiting."""
    if not tty.lines and tty.eof:
        yield Reply(reply, Message("eof"))
        return None
    line = tty.want_line(prompt)
    if line is None:
        return (reply, prompt)
    yield Reply(reply, Message("line", line))
    return None
