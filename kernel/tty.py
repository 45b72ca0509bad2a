"""The kernel's end of a terminal: lines in, text out, and an interrupt line.

A `Tty` is a device object.  The console driver (a server task holding a cap
to it) reads lines and writes text; the host side (the interactive terminal,
a headless script, or `Kernel.shell`) feeds lines and Ctrl-C.  Input raises
the tty's IRQ: a `Notification` that the console server has bound to itself.

The host side may live on another thread (the interactive terminal), so
every host-side call goes through `_post`, which hands the work to the event
loop, in the order the keys were typed.  Every key typed is kept: a line
editor on the host (prompt_toolkit) holds the keyboard only while a reader
waits and nothing typed ahead answers it (`claim_prompt`, decided on the
loop, after every key posted before); otherwise keys go to `type_key`.

While `vm console NAME` is attached (`attach`), this host tty routes the
console's control keys to the guest's tty: Ctrl-C interrupts the guest's
foreground program, Ctrl-P prints the guest's process list, and Ctrl-]
(`escape`) comes back to the host.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kernel.kernel import Kernel

IRQ_INPUT = 1  # badge bits on the IRQ notification
IRQ_INTERRUPT = 2

#: The line a reader gets when Ctrl-] leaves an attached VM console (no typed
#: line holds it: the line discipline drops control characters).
CONSOLE_ESCAPE = "\x1d"
_ESCAPE_SEQUENCE_MAX = 32  # an unfinished escape sequence longer than this is given up on


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
        #: as they come): a program may read them (`top` quits on q); what is
        #: left is typed ahead for the shell, whole lines first; an unfinished
        #: line is where the host's line editor starts (`claim_prompt`).
        self.typed = ""
        self._escape_sequence = ""  # an arrow key, a paste bracket, ... being typed: dropped
        self.interactive = False  # a person is at the keyboard (image/terminal.py)
        #: The guest tty an attached `vm console` routes Ctrl-C and Ctrl-P to,
        #: and what Ctrl-] calls to leave it (set by the hypervisor).
        self.attached: Tty | None = None
        self._on_escape: Callable[[], None] | None = None
        self.escaped = False  # Ctrl-] left the console: its reader gets CONSOLE_ESCAPE

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
        if self.escaped:
            self.escaped = False
            self.waiting_prompt = None
            return CONSOLE_ESCAPE
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

    # -- an attached VM console (the hypervisor, on the loop) ---------------------------------

    def attach(self, guest: Tty, on_escape: Callable[[], None]) -> None:
        """Route Ctrl-C and Ctrl-P to `guest` until Ctrl-] (which calls
        `on_escape`) or `detach`."""
        self.attached, self._on_escape, self.escaped = guest, on_escape, False

    def detach(self) -> None:
        self.attached, self._on_escape, self.escaped = None, None, False

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

    def escape(self) -> None:
        """Ctrl-]: leave an attached VM console (nothing when none is)."""
        self._post(self._escape, None)

    def claim_prompt(self) -> tuple[str, str] | None:
        """The host's line editor asks to take the keyboard: the waiting
        reader's prompt and the unfinished line typed ahead (the editor starts
        from it), or None when no reader waits for the editor (none waits, or
        what was typed ahead answers it).  Decided on the loop, after every key
        posted before, so no key falls between the two readers."""
        if not self.kernel.threaded:
            return self._claim_prompt()
        answer: Future[tuple[str, str] | None] = Future()
        self._post(lambda future: future.set_result(self._claim_prompt()), answer)
        while not self.kernel.halted:
            try:
                return answer.result(timeout=0.05)
            except FutureTimeout:
                pass
        return None

    def _post(self, fn: Callable[[Any], None], arg: Any) -> None:
        if self.kernel.threaded:
            self.kernel.loop.call_soon_threadsafe(fn, arg)
        else:
            fn(arg)

    # What reaches the kernel from the keyboard is told to its journal first.

    def _feed(self, line: str) -> None:
        if self.kernel.journal is not None:
            self.kernel.journal("line", line)
        self.lines.extend(_one_per_line(line))  # a pasted block: each of its lines runs
        self.kernel.raise_irq(self.irq, IRQ_INPUT)

    def _type_key(self, text: str) -> None:
        if self.kernel.journal is not None:
            self.kernel.journal("keys", text)
        for ch in "\n".join(_one_per_line(text)):
            if self._escape_sequence or ch == "\x1b":
                # Keys and answers that are escape sequences (arrows, a paste's
                # brackets, a late cursor report) are not text: drop them whole.
                self._escape_sequence += ch
                if _sequence_ends(self._escape_sequence):
                    self._escape_sequence = ""
            elif ch in "\x7f\b":  # backspace, typed blind
                self.typed = self.typed[:-1]
            elif ch == "\n" or ch.isprintable():
                self.typed += ch
        self.kernel.raise_irq(self.irq, IRQ_INPUT)

    def _claim_prompt(self) -> tuple[str, str] | None:
        if self.waiting_prompt is None or self.lines or self.eof or self.escaped:
            return None
        if "\n" in self.typed:
            return None  # the typed-ahead line answers the reader (its IRQ is raised)
        typed, self.typed = self.typed, ""
        return self.waiting_prompt, typed

    def _close(self, _arg: Any) -> None:
        if self.kernel.journal is not None:
            self.kernel.journal("eof")
        self.eof = True
        self.kernel.raise_irq(self.irq, IRQ_INPUT)

    def _interrupt(self, _arg: Any) -> None:
        if self.kernel.journal is not None:
            self.kernel.journal("intr")
        if self.attached is not None:
            self.attached._interrupt(None)  # the guest's foreground program
            return
        self.interrupts += 1
        self.kernel.raise_irq(self.irq, IRQ_INTERRUPT)

    def _procdump(self, _arg: Any) -> None:
        if self.kernel.journal is not None:
            self.kernel.journal("procdump")
        shown = self.attached.kernel if self.attached is not None else self.kernel
        self.write_prompt(shown.procdump())

    def _escape(self, _arg: Any) -> None:
        guest, on_escape = self.attached, self._on_escape
        if guest is None:
            return
        self.detach()
        # What was typed before Ctrl-] was typed at the guest's console: it
        # goes there, in order; what comes after is the host's.
        *whole, self.typed = _one_per_line(self.typed)
        for line in [*self.lines, *whole]:
            guest._feed(line)
        self.lines.clear()
        if self.typed:  # unfinished: the guest has it typed ahead
            guest._type_key(self.typed)
            self.typed = ""
        self.escaped = True
        if on_escape is not None:
            on_escape()
        self.kernel.raise_irq(self.irq, IRQ_INPUT)  # a reader waiting at the console's prompt


def _one_per_line(text: str) -> list[str]:
    """Lines, whatever ends them: a terminal's Enter is CR, a paste may hold CRLF."""
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def _sequence_ends(sequence: str) -> bool:
    """Whether `sequence` (ESC ...) is a whole escape sequence: CSI (ESC [
    params final byte), SS3 (ESC O x), or ESC and one character."""
    if len(sequence) < 2:
        return False
    if len(sequence) > _ESCAPE_SEQUENCE_MAX:
        return True
    if sequence[1] == "[":
        return len(sequence) > 2 and "@" <= sequence[-1] <= "~"
    if sequence[1] == "O":
        return len(sequence) > 2
    return True
