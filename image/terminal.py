"""The interactive terminal: a person at a keyboard, a kernel in real time.

The kernel's event loop runs on a background thread in realtime mode.  This
(main) thread owns the keyboard:

* when the shell asks for a line, prompt_toolkit reads one with line editing
  and history, and Ctrl-P prints the process list (xv6's procdump);
* while a program runs in the foreground, the terminal is in cbreak mode:
  Ctrl-C raises SIGINT here and becomes a tty interrupt, which the console
  server turns into SIGINT for the foreground task — the kernel runs on;
  Ctrl-P prints the process list; other keys go to the tty (`Tty.type_key`):
  a program may read them (`top` quits on q), and the rest is typed ahead —
  whole lines run after the program, an unfinished one is where the next
  prompt's line editor starts;
* what background jobs print while the prompt is shown goes above it, and
  the prompt is drawn again below with the partly typed line
  (prompt_toolkit's `patch_stdout`), so it never lands on the prompt line.

Everything crosses to the kernel thread through `Tty`, which posts onto the
event loop with `call_soon_threadsafe`.
"""

from __future__ import annotations

import os
import queue
import select
import sys
import termios
import threading
import tty as termtty

from prompt_toolkit import PromptSession
from prompt_toolkit.history import InMemoryHistory
from prompt_toolkit.key_binding import KeyBindings
from prompt_toolkit.patch_stdout import patch_stdout

from kernel import Kernel

CTRL_P = "\x10"


def run_interactive(k: Kernel) -> int:
    """Drive a booted-in-realtime kernel from this terminal until poweroff."""
    prompts: queue.Queue[str] = queue.Queue()
    k.tty.on_prompt = prompts.put
    k.tty.echo_input = False  # prompt_toolkit already shows what was typed
    k.tty.interactive = True
    worker = threading.Thread(target=_run_kernel, args=(k,), name="malvos-kernel", daemon=True)
    worker.start()

    bindings = KeyBindings()

    @bindings.add("c-p")
    def _procdump(event) -> None:
        k.tty.procdump()

    session: PromptSession[str] = PromptSession(history=InMemoryHistory(), key_bindings=bindings)
    while not k.halted:
        prompt = _wait_for_prompt(k, prompts)
        if prompt is None:
            break
        k.log.echo_level = 30  # booted: from now on the console shows warnings only
        try:
            with patch_stdout(raw=True):  # the kernel thread's output goes above the prompt
                line = session.prompt(prompt, default=k.tty.typed_for_prompt)
        except KeyboardInterrupt:
            k.tty.typed_for_prompt = ""
            prompts.put(prompt)  # Ctrl-C at the prompt: a fresh prompt
            continue
        except EOFError:
            k.tty.close()
            continue
        k.tty.feed(line)
    worker.join(timeout=5)
    return 0 if k.halt_reason.startswith("poweroff") else 1


def _run_kernel(k: Kernel) -> None:
    try:
        k.machine.run()
    finally:
        k.halt(k.halt_reason or "the event loop stopped")


def _keys_typed(k: Kernel, keys: str) -> None:
    """Keys typed while a program runs: Ctrl-P prints the process list, the
    rest goes to the tty."""
    if CTRL_P in keys:
        k.tty.procdump()
        keys = keys.replace(CTRL_P, "")
    if keys:
        k.tty.type_key(keys)


def _wait_for_prompt(k: Kernel, prompts: queue.Queue[str]) -> str | None:
    """Wait until the shell wants a line, handling Ctrl-C and Ctrl-P while a
    foreground program runs.  Returns None when the kernel halts."""
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd) if os.isatty(fd) else None
    try:
        if saved is not None:
            termtty.setcbreak(fd)  # keys arrive one by one; ISIG keeps Ctrl-C a signal
        while not k.halted:
            try:
                return prompts.get(timeout=0.02)
            except queue.Empty:
                pass
            except KeyboardInterrupt:
                k.tty.interrupt()
                continue
            try:
                ready, _, _ = select.select([fd], [], [], 0.03)
                if ready:
                    _keys_typed(k, os.read(fd, 64).decode(errors="ignore"))
            except KeyboardInterrupt:
                k.tty.interrupt()
        return None
    finally:
        if saved is not None:
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)
