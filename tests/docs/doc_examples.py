"""The shell examples of README.md and docs/: found, and turned into commands to run.

An example is a fenced block whose language is `sh` or `console`:

* `sh`: every line is a command (a trailing `\\` continues it; `# ...` is a comment);
* `console`: lines starting with `$ ` are commands, the lines after one are what it
  prints; each shown line must appear in its output (`...` stands for lines left out).

A comment on the line before the fence changes how an example runs:
``<!-- example: slow exit=124 malvos-shell needs=../shared/workloads unchecked="grading" -->``

* `slow`: the example runs under the pytest marker `slow` (a full experiment, a serve run);
* `exit=N`: the exit status of its last command (default 0; the others must exit 0);
* `malvos-shell`: the commands are typed into malvos's own shell, run headless as one
  `malv boot --headless --run "cmd; cmd; poweroff"`;
* `needs=PATH`: the example reads PATH (relative to the working directory); without it
  there the example is skipped, saying so;
* `unchecked="TEXT"`: shown lines containing TEXT are not checked (a path that differs
  from one machine to the next);
* `setup`: not run: installing malvos, or running the test suite itself (README's Quick
  start and Getting started only).

Examples run from a fresh temporary directory that holds links to the repository's
`image/` and `exp/` (which the examples name by relative path), beside a link `../shared`
to the repository's sibling `shared/` where there is one. `malv` is run as
`python -m image.cli`, from this checkout.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import attrs

ROOT = Path(__file__).resolve().parents[2]
LANGUAGES = ("sh", "console")
_FENCE = re.compile(r"^```(\S*)\s*$")
_ANNOTATION = re.compile(r"^<!--\s*example:(.*?)-->\s*$")


@attrs.frozen
class Command:
    line: str  # as the docs show it
    shown: tuple[str, ...] = ()  # the output lines the docs show under it


@attrs.frozen
class Example:
    path: str  # relative to the repository root
    line: int  # of the opening fence, 1-based
    language: str
    commands: tuple[Command, ...]
    slow: bool = False
    exit: int = 0
    malvos_shell: bool = False
    needs: str | None = None
    unchecked: str | None = None
    setup: bool = False

    @property
    def id(self) -> str:
        return f"{self.path}:{self.line}"


def doc_files(root: Path = ROOT) -> list[Path]:
    """README.md and every page of docs/, in a stable order."""
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


def blocks(text: str) -> list[tuple[int, str, str | None, list[str]]]:
    """Every fenced block: (line of its fence, language, annotation, its lines)."""
    found = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        start, language = i, m.group(1)
        j = i + 1
        while j < len(lines) and not lines[j].startswith("```"):
            j += 1
        ann = _ANNOTATION.match(lines[start - 1]) if start else None
        found.append((start + 1, language, ann.group(1) if ann else None, lines[start + 1 : j]))
        i = j + 1
    return found


def _sh_commands(lines: list[str]) -> list[Command]:
    commands, pending = [], ""
    for raw in lines:
        line = raw.rstrip()
        if pending:  # a continued line: its indentation is layout
            line = line.lstrip()
        if line.endswith("\\"):
            pending += line[:-1].rstrip() + " "
            continue
        line = pending + line
        pending = ""
        if line.strip() and not line.lstrip().startswith("#"):
            commands.append(Command(_strip_comment(line)))
    return commands


def _console_commands(lines: list[str]) -> list[Command]:
    commands: list[Command] = []
    for raw in lines:
        line = raw.rstrip()
        if line.startswith("$ "):
            commands.append(Command(_strip_comment(line[2:])))
        elif commands and line.strip() and line.strip() != "...":
            last = commands[-1]
            commands[-1] = Command(last.line, (*last.shown, line))
    return commands


def _strip_comment(line: str) -> str:
    """A command without its trailing `# comment` (outside quotes)."""
    in_quote = None
    for i, ch in enumerate(line):
        if in_quote:
            if ch == in_quote:
                in_quote = None
        elif ch in "'\"":
            in_quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def _attributes(annotation: str | None) -> dict:
    if annotation is None:
        return {}
    attributes: dict = {}
    for word in shlex.split(annotation):
        key, _, value = word.partition("=")
        key = key.replace("-", "_")
        if key in ("slow", "malvos_shell", "setup"):
            attributes[key] = True
        elif key == "exit":
            attributes[key] = int(value)
        elif key in ("needs", "unchecked"):
            attributes[key] = value
        else:
            raise ValueError(f"unknown example attribute {key!r} in {annotation!r}")
    return attributes


def examples(root: Path = ROOT) -> list[Example]:
    """Every shell example of the docs, in reading order."""
    found = []
    for path in doc_files(root):
        for line, language, annotation, lines in blocks(path.read_text()):
            if language not in LANGUAGES:
                continue
            commands = _sh_commands(lines) if language == "sh" else _console_commands(lines)
            found.append(
                Example(
                    str(path.relative_to(root)),
                    line,
                    language,
                    tuple(commands),
                    **_attributes(annotation),
                )
            )
    return found


def unlabelled_commands(root: Path = ROOT) -> list[str]:
    """Lines of fenced blocks with no language (or `text`) that look like shell commands: an
    example that would escape the collector. A recipe's transcripts (docs/recipes/) are
    exempt: the test that walks the recipe through runs them, after the recipe's edits."""
    bad = []
    for path in doc_files(root):
        if path.parent.name == "recipes":
            continue
        for line, language, _, lines in blocks(path.read_text()):
            if language not in ("", "text"):
                continue
            for text in lines:
                if text.startswith(("$ ", "python3 ", "pip ")) or _MALV_COMMAND.match(text):
                    bad.append(f"{path.relative_to(root)}:{line}: {text}")
    return bad


_MALV_COMMAND = re.compile(r"malv [a-z-]+(\s|$)")  # not "malv build: ..." (a message)
_MALV = re.compile(r"(^|[;&|]\s*|--\s+)malv(?=\s)", re.M)
_PYTHON = re.compile(r"(^|[;&|]\s*)python3(?=\s)", re.M)


def runs(example: Example, python: str) -> list[tuple[str, tuple[str, ...]]]:
    """What running `example` takes: bash scripts, each with the lines it must print.

    A `sh` example is one script (`set -e`: it stops at the first command that fails); a
    `console` example is a script per command, each checked against the lines shown under
    it; a `malvos-shell` example is one headless boot that types every command. `malv` is
    replaced by this checkout's CLI, `python3` by `python`."""
    cli = f"{shlex.quote(python)} -m image.cli"
    if example.malvos_shell:
        script = "; ".join(c.line for c in example.commands)
        if not script.rstrip().endswith("poweroff"):
            script += "; poweroff"
        shown = tuple(s for c in example.commands for s in c.shown)
        return [(f"{cli} boot --headless --run {shlex.quote(script)}", shown)]

    def local(text: str) -> str:
        text = _MALV.sub(lambda m: m.group(1) + cli, text)
        return _PYTHON.sub(lambda m: m.group(1) + shlex.quote(python), text)

    if example.language == "sh":
        return [("set -e\n" + local("\n".join(c.line for c in example.commands)), ())]
    return [(local(c.line), c.shown) for c in example.commands]
