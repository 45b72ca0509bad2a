"""Hostile: says through ``ctx.log`` what a person must never see raw.

Each `select_next` logs one line chosen by the ``attack`` parameter, then
answers like round robin would (the first candidate):

* ``kernel_fields`` — sets the kernel's own fields (``t_ns="boom"`` and the like);
* ``empty_lists`` — a field of ``items`` empty lists (a million: 1 MB as msgpack);
* ``escapes`` — terminal escape sequences: clear screen, window title, clipboard;
* ``flood`` — ``lines`` short lines a call;
* ``hostile_values`` — an event and values whose every method goes off, and
  an object whose type's name is a control sequence.

Its budget is the largest a module may have: only what it logs is on trial.
"""

from kernel.mlaas import SchedAdvisor

ESCAPES = "hello\x1b[2J\x1b]0;PWNED\x07"
CLIPBOARD = "\x1b]52;c;cHduZWQ=\x07"


def _goes_off(self, *args):
    raise SystemExit("the kernel ran a method of what the module logged")


_METHODS = (
    "__str__", "__repr__", "__format__", "__index__", "__int__", "__float__", "__hash__",
    "__eq__", "__len__", "__iter__", "__getitem__", "isprintable", "isascii", "isidentifier",
)  # fmt: skip
LoudStr = type("LoudStr", (str,), dict.fromkeys(_METHODS, _goes_off))
LoudInt = type("LoudInt", (int,), dict.fromkeys(_METHODS, _goes_off))
LoudFloat = type("LoudFloat", (float,), dict.fromkeys(_METHODS, _goes_off))


class Masked:
    """Named by a control sequence, in a str subclass that goes off when read."""


Masked.__qualname__ = LoudStr("Mask\x1b[2J")


class LoudLog(SchedAdvisor):
    name = "loud_log"
    params = {"attack": "kernel_fields", "lines": 1, "items": 1_000_000}
    budget_us = 100_000

    def select_next(self, candidates, cpu):
        attack = self.ctx.params["attack"]
        log = self.ctx.log
        if attack == "kernel_fields":
            log.info("x", t_ns="boom")
            log.info("y", subsystem=["not", "a", "name"], level=7, kernel=None, module="kernel")
        elif attack == "empty_lists":
            log.info("lists", junk=[[] for _ in range(self.ctx.params["items"])])
        elif attack == "escapes":
            log.warning(ESCAPES, note=CLIPBOARD)
        elif attack == "flood":
            for n in range(self.ctx.params["lines"]):
                log.info("flood", n=n)
        elif attack == "hostile_values":
            log.info(
                LoudStr("ev\x1b[2J"), n=LoudInt(7), f=LoudFloat(2.5), s=LoudStr("s\x07"),
                obj=Masked(), nested=[LoudInt(1), (LoudStr("t"),)],
            )  # fmt: skip
        return candidates[0]
