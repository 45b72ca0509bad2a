"""The interactive terminal: a person at a keyboard, a kernel in real time.

The kernel's event loop runs on a background thread in realtime mode.  This
(main) thread owns the keyboard:

* when the shell asks for a line, prompt_toolkit reads one with line editing
  and history, and Ctrl-P prints the process list (xv6's procdump); a
  bracketed paste of several lines runs each;
* otherwise (a program runs in the foreground, or the shell has not asked
  yet) this thread reads the keys itself, the terminal in a mode without
  echo, line editing or signals, so that nothing the terminal driver does
  (a flush, a signal) drops a key: Ctrl-C becomes a tty interrupt, which the
  console server turns into SIGINT for the foreground task — the kernel runs
  on; Ctrl-P prints the process list; other keys go to the tty
  (`Tty.type_key`): a program may read them (`top` quits on q), and the rest
  is typed ahead — whole lines run after the program, an unfinished one is
  where the next prompt's line editor starts;
* the two hand over without losing a key: keys prompt_toolkit read past the
  Enter (its typeahead) follow the line to the tty, and it takes the
  keyboard again only when the tty says a reader waits that nothing typed
  ahead answers (`Tty.claim_prompt`);
* in `vm console NAME`, Ctrl-C and Ctrl-P reach the guest, and Ctrl-] (or
  Ctrl-D at its prompt) comes back to the host;
* what background jobs print while the prompt is shown goes above it, and
  the prompt is drawn again below with the partly typed line
  (prompt_toolkit's `patch_stdout`), so it never lands on the prompt line.

Everything crosses to the kernel thread through `Tty`, which posts onto the
event loop with `call_soon_threadsafe`.
"""

from __future__ import annotations

import codecs
import os
import queue
import select
import sys
import termios
import threading

from prompt_toolkit import PromptSession
from prompt_toolkit.filters import Condition
from prompt_toolkit.history import InMemoryHistory
from prompt_toolkit.input.typeahead import get_typeahead
from prompt_toolkit.key_binding import KeyBindings
from prompt_toolkit.keys import Keys
from prompt_toolkit.patch_stdout import patch_stdout

from kernel import Kernel

CTRL_C, CTRL_P, CTRL_ESCAPE = "\x03", "\x10", "\x1d"  # Ctrl-] leaves a VM console
CONTROL_KEYS = (CTRL_C, CTRL_P, CTRL_ESCAPE)


class ConsoleEscape(Exception):
    """Ctrl-] at the prompt of an attached VM console."""


def run_interactive(k: Kernel) -> int:
    """Drive a booted-in-realtime kernel from this terminal until poweroff."""
    wakeups: queue.Queue[str] = queue.Queue()  # the tty asked for a line
    k.tty.on_prompt = wakeups.put
    k.tty.echo_input = False  # prompt_toolkit already shows what was typed
    k.tty.interactive = True
    worker = threading.Thread(target=_run_kernel, args=(k,), name="malvos-kernel", daemon=True)
    worker.start()

    pasted: list[str] = []  # the lines of a paste after its first
    session: PromptSession[str] = PromptSession(
        history=InMemoryHistory(), key_bindings=_key_bindings(k, pasted)
    )
    while not k.halted:
        claim = _read_keys_until_prompt(k, wakeups)
        if claim is None:
            break
        prompt, typed = claim
        k.log.echo_level = 30  # booted: from now on the console shows warnings only
        try:
            with patch_stdout(raw=True):  # the kernel thread's output goes above the prompt
                line = session.prompt(prompt, default=typed)
        except KeyboardInterrupt:
            wakeups.put(prompt)  # Ctrl-C at the prompt: a fresh prompt
        except EOFError:  # Ctrl-D: leave the VM console, or close the host's
            (k.tty.escape if k.tty.attached is not None else k.tty.close)()
        except ConsoleEscape:
            k.tty.escape()
        else:
            k.tty.feed(line)
        # What was typed after the Enter, that prompt_toolkit read with it,
        # follows the line, in order.
        if pasted:
            k.tty.type_key(pasted.pop())
        _keys_typed(k, "".join(key.data for key in get_typeahead(session.input)))
    worker.join(timeout=5)
    return 0 if k.halt_reason.startswith("poweroff") else 1


def _key_bindings(k: Kernel, pasted: list[str]) -> KeyBindings:
    bindings = KeyBindings()

    @bindings.add("c-p")
    def _procdump(event) -> None:
        k.tty.procdump()

    # eager: at once, not as the start of emacs's Ctrl-] CHAR (search for CHAR)
    @bindings.add("c-]", filter=Condition(lambda: k.tty.attached is not None), eager=True)
    def _leave_console(event) -> None:
        event.app.exit(exception=ConsoleEscape())

    @bindings.add(Keys.BracketedPaste)
    def _paste(event) -> None:
        """A paste arrives as typed: its first line ends this one, the rest
        is typed ahead (each whole line runs)."""
        text = event.data.replace("\r\n", "\n").replace("\r", "\n")
        first, newline, rest = text.partition("\n")
        event.current_buffer.insert_text(first)
        if newline:
            pasted.append(rest)
            event.current_buffer.validate_and_handle()

    return bindings


def _run_kernel(k: Kernel) -> None:
    try:
        k.machine.run()
    finally:
        k.halt(k.halt_reason or "the event loop stopped")


def _keys_typed(k: Kernel, keys: str) -> None:
    """Keys typed while no prompt is shown, in order: Ctrl-C interrupts,
    Ctrl-P prints the process list, Ctrl-] leaves a VM console; the rest
    goes to the tty."""
    start = 0
    for i, ch in enumerate(keys):
        if ch in CONTROL_KEYS:
            if i > start:
                k.tty.type_key(keys[start:i])
            {CTRL_C: k.tty.interrupt, CTRL_P: k.tty.procdump, CTRL_ESCAPE: k.tty.escape}[ch]()
            start = i + 1
    if start < len(keys):
        k.tty.type_key(keys[start:])


def _read_keys_until_prompt(k: Kernel, wakeups: queue.Queue[str]) -> tuple[str, str] | None:
    """Read the keys until a reader waits for the line editor: its prompt
    and the unfinished line to start from.  Returns None when the kernel
    halts."""
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd) if os.isatty(fd) else None
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    reading = True
    try:
        if saved is not None:
            _keys_mode(fd, saved)
        while not k.halted:
            if _drained(wakeups):
                claim = k.tty.claim_prompt()
                if claim is not None:
                    return claim
            try:
                ready, _, _ = select.select([fd] if reading else [], [], [], 0.03)
                if ready:
                    data = os.read(fd, 4096)
                    if not data:  # the terminal is gone: end of input
                        reading = False
                        k.tty.close()
                    _keys_typed(k, decoder.decode(data))
            except KeyboardInterrupt:  # a SIGINT sent from elsewhere: as Ctrl-C
                k.tty.interrupt()
        return None
    finally:
        if saved is not None:
            termios.tcsetattr(fd, termios.TCSANOW, saved)


def _keys_mode(fd: int, saved: list) -> None:
    """Keys one by one, not echoed, control keys as bytes (no SIGINT: the
    driver would flush what was typed ahead).  TCSANOW: TCSAFLUSH, what
    `tty.setcbreak` uses, would drop the keys typed since the Enter."""
    mode = termios.tcgetattr(fd)
    mode[3] &= ~(termios.ECHO | termios.ICANON | termios.ISIG | termios.IEXTEN)
    mode[6][termios.VMIN], mode[6][termios.VTIME] = 1, 0
    termios.tcsetattr(fd, termios.TCSANOW, mode)


def _drained(wakeups: queue.Queue[str]) -> bool:
    """Whether the tty asked for a line since the last look."""
    asked = False
    while True:
        try:
            wakeups.get_nowait()
        except queue.Empty:
            return asked
        asked = True
