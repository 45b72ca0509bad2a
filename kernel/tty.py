"""The kernel's end of a terminal: lines in, text out, and an interrupt line.

A `Tty` is a device object.  The console driver (a server task holding a cap
to it) reads lines and writes text; the host side (the interactive terminal,
a headless script, or `Kernel.shell`) feeds lines and Ctrl-C.  Input raises
the tty's IRQ: a `Notification` that the console server has bound to itself.

The host side may live on another thread (the interactive terminal), so
every host-side call goes through `_post`, which hands the work to the event
loop.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kernel.kernel import Kernel

IRQ_INPUT = 1  # badge bits on the IRQ notification
IRQ_INTERRUPT = 2


class Tty:
    def __init__(
        self, kernel: Kernel, sink: Callable[[str], None] | None = None, echo_input: bool = True
    ) -> None:
        self.kernel = kernel
        self.lines: deque[str] = deque()
        self.eof = False
        self.interrupts = 0
        self.sink = sink  # where output goes (stdout, a buffer, ...)
        self.echo_input = echo_input  # write "prompt + line" when a scripted line is read
        self.transcript: list[str] = []
        self.capture: list[str] | None = None  # Kernel.shell collects here
        self.irq: Any = None  # the Notification, set by the kernel at boot
        self.waiting_prompt: str | None = None  # a reader is blocked with this prompt
        self.on_prompt: Callable[[str], None] | None = None  # host hook: input wanted
        #: Keys typed while a program ran (the interactive terminal sends them
        #: one by one): a program may read them (`top` quits on q); what is
        #: left is typed ahead for the shell, whole lines first.
        self.typed = ""
        #: The unfinished typed-ahead line handed to the host with the last
        #: prompt, for its line editor to start from.
        self.typed_for_prompt = ""
        self.interactive = False  # a person is at the keyboard (image/terminal.py)

    # -- device side (the console server) -----------------------------------------------

    def write(self, text: str) -> None:
        self.transcript.append(text)
        if self.capture is not None:
            self.capture.append(text)
        if self.sink is not None:
            self.sink(text)

    def write_prompt(self, text: str) -> None:
        """Output that is not a program's (prompts, echoed input): not captured."""
        self.transcript.append(text)
        if self.sink is not None:
            self.sink(text)

    def want_line(self, prompt: str) -> str | None:
        """A reader asks for a line: return one if queued, else remember the prompt."""
        if self.lines:
            line = self.lines.popleft()
            self.waiting_prompt = None
            if self.echo_input:
                self.write_prompt(f"{prompt}{line}\n")
            return line
        if "\n" in self.typed:
            line, _, self.typed = self.typed.partition("\n")
            self.waiting_prompt = None
            self.write_prompt(f"{prompt}{line}\n")  # typed blind: show what runs
            return line
        self.typed_for_prompt, self.typed = self.typed, ""
        self.waiting_prompt = prompt
        if self.on_prompt is not None:
            self.on_prompt(prompt)
        return None

    def take_typed(self) -> str:
        """A program reads the keys typed so far (they are no longer typed ahead)."""
        typed, self.typed = self.typed, ""
        return typed

    def take_interrupts(self) -> int:
        n, self.interrupts = self.interrupts, 0
        return n

    # -- host side --------------------------------------------------------------------------

    def feed(self, line: str) -> None:
        self._post(self._feed, line)

    def type_key(self, text: str) -> None:
        """Keys typed while a program runs in the foreground."""
        self._post(self._type_key, text)

    def close(self) -> None:
        """End of input (Ctrl-D, or the end of a headless script)."""
        self._post(self._close, None)

    def interrupt(self) -> None:
        """Ctrl-C: the console server interrupts the foreground program."""
        self._post(self._interrupt, None)

    def procdump(self) -> None:
        """Ctrl-P: print the process list, from the kernel, as xv6 does."""
        self._post(self._procdump, None)

    def _post(self, fn: Callable[[Any], None], arg: Any) -> None:
        if self.kernel.threaded:
            self.kernel.loop.call_soon_threadsafe(fn, arg)
        else:
            fn(arg)

    # What reaches the kernel from the keyboard is told to its journal first.

    def _feed(self, line: str) -> None:
        if self.kernel.journal is not None:
            self.kernel.journal("line", line)
        self.lines.append(line)
        self.kernel.raise_irq(self.irq, IRQ_INPUT)

    def _type_key(self, text: str) -> None:
        if self.kernel.journal is not None:
            self.kernel.journal("keys", text)
        for ch in text.replace("\r", "\n"):
            if ch in "\x7f\b":  # backspace, typed blind
                self.typed = self.typed[:-1]
            elif ch == "\n" or ch.isprintable():
                self.typed += ch
        self.kernel.raise_irq(self.irq, IRQ_INPUT)

    def _close(self, _arg: Any) -> None:
        if self.kernel.journal is not None:
            self.kernel.journal("eof")
        self.eof = True
        self.kernel.raise_irq(self.irq, IRQ_INPUT)

    def _interrupt(self, _arg: Any) -> None:
        if self.kernel.journal is not None:
            self.kernel.journal("intr")
        self.interrupts += 1
        self.kernel.raise_irq(self.irq, IRQ_INTERRUPT)

    def _procdump(self, _arg: Any) -> None:
        if self.kernel.journal is not None:
            self.kernel.journal("procdump")
        self.write_prompt(self.kernel.procdump())
