"""The interactive terminal: a person at a keyboard, a kernel in real time.

The kernel's event loop runs on a background thread in realtime mode.  This
(main) thread owns the keyboard:

* when the shell asks for a line, prompt_toolkit reads one with line editing
  and history, and Ctrl-P prints the process list (xv6's procdump);
* while a program runs in the foreground, the terminal is in cbreak mode:
  Ctrl-C raises SIGINT here and becomes a tty interrupt, which the console
  server turns into SIGINT for the foreground task — the kernel runs on;
  Ctrl-P prints the process list.

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

from kernel import Kernel

CTRL_P = "\x10"


def run_interactive(k: Kernel) -> int:
    """Drive a booted-in-realtime kernel from this terminal until poweroff."""
    prompts: queue.Queue[str] = queue.Queue()
    k.tty.on_prompt = prompts.put
    k.tty.echo_input = False  # prompt_toolkit already shows what was typed
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
            line = session.prompt(prompt)
        except KeyboardInterrupt:
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
                    ch = os.read(fd, 1).decode(errors="ignore")
                    if ch == CTRL_P:
                        k.tty.procdump()
            except KeyboardInterrupt:
                k.tty.interrupt()
        return None
    finally:
        if saved is not None:
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)
