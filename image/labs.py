"""`malv lab`: graded labs for OS courses, in the manner of xv6's `make grade`.

A lab is a directory of `image/lab_files/`, package data found through
`importlib.resources` (so an installed wheel and a course image carry it):

* ``README.md``   — the goal, what to implement, how it is graded, hints;
                    its first line is ``# Lab NAME: one-line summary``;
* the starter     — the one other ``*.py`` file: what the student edits;
* ``grade_NAME.py`` — the grader, a pytest file whose tests carry points
                    (``@pytest.mark.points(20)``) and take the student's file
                    from the `lab_file` fixture.

Reference solutions are not shipped: they live with malvos's own tests.

**Who can touch a grade.**  Three processes take part.  The CLI (`grade`)
starts the grader, a child pytest that loads this module as its plugin
(``-p image.labs``), and reads one line per graded test from a pipe; it adds
up the score itself.  The grader never imports the student's code: an
advisor is loaded with ``insmod --isolated`` (the MLaaS sandboxed child, see
`kernel.mlaas.isolated`) and a program runs in a sandboxed process of its own
(`SandboxedProgram`), whose traps the grader's kernel carries out.  Neither
sandbox can write a file, signal or trace another process, or read outside
Python's import path and the student's directory, and neither is handed the
report pipe; so an ``atexit`` hook, a write to a report file, a patched
grader or a peek at the reference solution earns nothing.

**Limits.**  The student's code must load within `LOAD_LIMIT_S` (checked once,
before any test runs, so a top level that loops forever costs one limit, not
one per test), a program must yield each trap within `STEP_LIMIT_S` and make
at most `MAX_PROGRAM_TRAPS` in a run, and the whole grade ends at
`GRADE_LIMIT_S`.  Each finished test is printed as it
comes; ^C stops the grader and prints one line.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import attrs

try:  # the grader's plugin needs pytest; `lab list` and `lab start` (in an image too) do not
    import pytest
except ImportError:  # pragma: no cover - pytest is a dependency of malvos
    pytest = None  # type: ignore[assignment]

FILE_ENV = "MALV_LAB_FILE"  # the student's file, for the grader
REPORT_FD_ENV = "MALV_LAB_REPORT_FD"  # the pipe the grader's plugin writes one line per test to
LIMITS_ENV = "MALV_LAB_LIMITS"  # LOAD_LIMIT_S and STEP_LIMIT_S, for the grader
#: Host seconds the student's code has to load (a module's top level, say).
LOAD_LIMIT_S = 10.0
#: Host seconds a sandboxed program has to yield its next trap.
STEP_LIMIT_S = 2.0
#: Host seconds a whole grade may take (a grade takes a few; this is the safety net).
GRADE_LIMIT_S = 300.0
#: Traps a sandboxed program may make in one run: a lab's program makes tens;
#: one that loops over traps forever is stopped here, whatever the host's speed.
MAX_PROGRAM_TRAPS = 10_000
#: What a sandboxed program's process may use.
PROGRAM_MEMORY_BYTES = 1 << 30
PROGRAM_CPU_S = 60


class LabError(ValueError):
    """Bad input to `malv lab`: the message is the one line the user sees."""


@attrs.frozen
class Lab:
    name: str
    directory: Traversable  # a Path in an installed malvos, a zip's path in an image
    summary: str
    starter: str  # the file name the student edits

    @property
    def grader(self) -> Traversable:
        return self.directory / f"grade_{self.name}.py"

    @property
    def readme_copy(self) -> str:
        """The README's name in a student's directory (labs may share one)."""
        return f"README-{self.name}.md"


@attrs.frozen
class Case:
    """One graded test: its title, its points, and how it went."""

    title: str
    points: int
    outcome: str  # "passed", "failed", "error" or "skipped"
    message: str = ""

    @property
    def earned(self) -> int:
        return self.points if self.outcome == "passed" else 0


@attrs.frozen
class Grade:
    lab: str
    file: Path
    cases: tuple[Case, ...]

    @property
    def score(self) -> int:
        return sum(c.earned for c in self.cases)

    @property
    def total(self) -> int:
        return sum(c.points for c in self.cases)

    @property
    def passed(self) -> bool:
        return bool(self.cases) and self.score == self.total


# -- the labs ---------------------------------------------------------------------------


def labs_root() -> Traversable:
    return resources.files("image") / "lab_files"


def _load(directory: Traversable) -> Lab:
    title = (directory / "README.md").read_text().splitlines()[0]
    summary = title.split(":", 1)[1].strip() if ":" in title else title.lstrip("# ")
    starters = [
        p.name
        for p in directory.iterdir()
        if p.name.endswith(".py") and not p.name.startswith(("grade_", "conftest", "_"))
    ]
    if len(starters) != 1:
        raise LabError(f"lab {directory.name}: expected one starter file, found {starters}")
    return Lab(directory.name, directory, summary, starters[0])


def list_labs() -> list[Lab]:
    found = [d for d in labs_root().iterdir() if (d / "README.md").is_file()]
    return [_load(d) for d in sorted(found, key=lambda d: d.name)]


def find_lab(name: str) -> Lab:
    labs = {lab.name: lab for lab in list_labs()}
    if name not in labs:
        raise LabError(f"no lab named {name!r}; choose from {', '.join(labs)}")
    return labs[name]


def start(name: str, directory: Path) -> list[Path]:
    """Copy the lab's starter and README into `directory`; refuse to overwrite."""
    lab = find_lab(name)
    copies = {
        lab.directory / lab.starter: directory / lab.starter,
        lab.directory / "README.md": directory / lab.readme_copy,
    }
    for target in copies.values():
        if target.exists():
            raise LabError(f"{target} exists already; not overwriting it")
    for source, target in copies.items():
        target.write_bytes(source.read_bytes())
    return list(copies.values())


def student_file(lab: Lab, where: Path) -> Path:
    """The student's file: `where` itself, or the starter's name in it."""
    path = where if where.is_file() else where / lab.starter
    if not path.is_file():
        raise LabError(f"no {lab.starter} in {where} (run `malv lab start {lab.name}` first)")
    return path.resolve()


# -- grading (the CLI's side) ------------------------------------------------------------------


def grade(name: str, where: Path, on_case: Callable[[str], None] | None = None) -> Grade:
    """Run lab `name`'s grader on the student's file at `where` (a file or a
    directory); `on_case` gets each test's line (`case_line`) as it comes."""
    lab = find_lab(name)
    path = student_file(lab, where)
    _check_gradable(lab)
    cases = tuple(_run_grader(lab, path, on_case or (lambda case: None)))
    if not cases:
        raise LabError(f"the {name} grader collected no tests")
    return Grade(name, path, cases)


def _check_gradable(lab: Lab) -> None:
    if not isinstance(lab.grader, Path):  # a course image's labs, in its zip
        raise LabError(
            "grading needs malvos installed (pip install malvos); "
            f"then run `malv lab grade {lab.name}` in this directory"
        )


def _run_grader(lab: Lab, path: Path, on_case: Callable[[str], None]) -> list[Case]:
    report_read, report_write = os.pipe()
    # The child imports this malvos, whatever else is installed.
    root = str(Path(__file__).resolve().parent.parent)
    env = {
        **os.environ,
        FILE_ENV: str(path),
        REPORT_FD_ENV: str(report_write),
        LIMITS_ENV: json.dumps([LOAD_LIMIT_S, STEP_LIMIT_S]),
        "PYTHONPATH": os.pathsep.join(filter(None, (root, os.environ.get("PYTHONPATH")))),
        "PYTHONDONTWRITEBYTECODE": "1",  # nothing written beside the labs or the student's file
    }
    # -P: the student's directory (the cwd) is not on the grader's import path.
    command = [sys.executable, "-P", "-m", "pytest", str(lab.grader), "-q", "-p", "image.labs"]
    command += ["-p", "no:cacheprovider", "--rootdir", str(lab.directory), "-c", os.devnull]
    with tempfile.TemporaryFile() as output:
        try:
            child = subprocess.Popen(
                command, cwd=path.parent, env=env, stdin=subprocess.DEVNULL, stdout=output,
                stderr=subprocess.STDOUT, pass_fds=(report_write,),
                start_new_session=True,  # ^C is the CLI's to handle: it stops the grader
            )  # fmt: skip
        finally:
            os.close(report_write)
        try:
            cases = _read_report(report_read, on_case)
        finally:
            os.close(report_read)
            _stop(child)
        if cases is None:
            output.seek(0)
            tail = output.read().decode(errors="replace").strip().splitlines()[-3:]
            raise LabError(f"the {lab.name} grader did not run: {' / '.join(tail)}")
        return cases


def _read_report(fd: int, on_case: Callable[[str], None]) -> list[Case] | None:
    """The grader's lines: ``["collected", [[title, points], ...]]``, then one
    ``["case", index, outcome, message]`` per test run.  None if nothing was
    collected."""
    deadline = time.monotonic() + GRADE_LIMIT_S
    titles: list[tuple[str, int]] | None = None
    width = 0
    done: dict[int, Case] = {}
    for line in _lines(fd, deadline):
        record = json.loads(line)
        if record[0] == "collected":
            titles = [(str(t), int(p)) for t, p in record[1]]
            width = max((len(t) + 4 for t, _ in titles), default=0)
        elif record[0] == "case" and titles is not None and 0 <= record[1] < len(titles):
            done[record[1]] = Case(*titles[record[1]], str(record[2]), str(record[3]))
            on_case(case_line(done[record[1]], width))
    late = time.monotonic() >= deadline
    why = f"the grade ran past {GRADE_LIMIT_S:g} s" if late else "the grader stopped"
    if titles is None:
        if late:
            raise LabError(f"{why} before its first test")
        return None
    for i, (title, points) in enumerate(titles):
        if i not in done:
            done[i] = Case(title, points, "error", f"{why} before this test finished")
            on_case(case_line(done[i], width))
    return [done[i] for i in range(len(titles))]


def _lines(fd: int, deadline: float) -> Iterator[bytes]:
    pending = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return
        data = os.read(fd, 65536)
        if not data:
            return
        *lines, pending = (pending + data).split(b"\n")
        yield from lines


def _stop(child: subprocess.Popen) -> None:
    if child.poll() is None:
        os.killpg(child.pid, signal.SIGKILL)  # the grader and what it started
    child.wait()


def case_line(c: Case, width: int) -> str:
    """One test's line, as xv6's grade scripts print them, and its message."""
    verdict = "OK" if c.outcome == "passed" else c.outcome.upper()
    line = f"{c.title} {'.' * (width - len(c.title))} {verdict:<6} {c.earned:>3}/{c.points}"
    return line + (f"\n    {c.message}" if c.message else "")


def format_grade(g: Grade) -> str:
    """A per-test breakdown and the score."""
    width = max(len(c.title) for c in g.cases) + 4
    lines = [f"== lab {g.lab}: grading {g.file}"]
    lines += [case_line(c, width) for c in g.cases]
    lines.append(f"lab {g.lab}: {g.score}/{g.total}")
    return "\n".join(lines) + "\n"


# -- the CLI -----------------------------------------------------------------------------------


def main(action: str | None, name: str | None, where: str | None) -> int:
    """`malv lab list|start NAME|grade NAME [DIR]`: 0 all passed, 1 not, 2 bad
    input, 130 interrupted."""
    try:
        return _dispatch(action, name, where)
    except LabError as exc:
        print(f"malv lab: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        fresh_line = "\n" if sys.stderr.isatty() else ""  # after the terminal's ^C
        print(f"{fresh_line}malv lab: interrupted; nothing was graded", file=sys.stderr)
        return 130


def _dispatch(action: str | None, name: str | None, where: str | None) -> int:
    if action == "list" and name is None:
        for lab in list_labs():
            print(f"{lab.name:<8} {lab.summary}")
        return 0
    if action == "start" and name is not None and where is None:
        for path in start(name, Path.cwd()):
            print(f"wrote {path.name}")
        return 0
    if action == "grade" and name is not None:
        lab = find_lab(name)
        path = student_file(lab, Path(where) if where else Path.cwd())
        _check_gradable(lab)
        print(f"== lab {name}: grading {path}", flush=True)
        g = grade(name, path, lambda line: print(line, flush=True))
        print(f"lab {g.lab}: {g.score}/{g.total}")
        return 0 if g.passed else 1
    raise LabError("usage: malv lab list | start NAME | grade NAME [DIR]")


# -- the grader's side: the pytest plugin ------------------------------------------------------


def limits() -> tuple[float, float]:
    """(LOAD_LIMIT_S, STEP_LIMIT_S), as the CLI that started this grader set them."""
    raw = os.environ.get(LIMITS_ENV)
    load_s, step_s = json.loads(raw) if raw else (LOAD_LIMIT_S, STEP_LIMIT_S)
    return float(load_s), float(step_s)


def pytest_configure(config: Any) -> None:
    config.addinivalue_line("markers", "points(n): what a grader's test is worth")


if pytest is not None:

    @pytest.fixture
    def lab_file() -> Path:
        """The student's file being graded."""
        path = os.environ.get(FILE_ENV)
        if not path:
            pytest.fail(f"{FILE_ENV} is not set: run graders with `malv lab grade`")
        return Path(path)


_INDEX: dict[str, int] = {}  # a test's node id -> its place in the grade
_OUTCOMES: dict[str, list[str]] = {}  # node id -> [outcome, message]
_REFUSED: list[str] = []  # why the student's code does not load, if it does not


def _report(record: list[Any]) -> None:
    fd = os.environ.get(REPORT_FD_ENV)
    if fd:
        os.write(int(fd), (json.dumps(record) + "\n").encode())


def pytest_collection_modifyitems(items: list[Any]) -> None:
    titles = []
    for i, item in enumerate(items):
        marker = item.get_closest_marker("points")
        doc = getattr(getattr(item, "function", None), "__doc__", None) or item.name
        titles.append(
            [doc.strip().splitlines()[0].rstrip("."), int(marker.args[0]) if marker else 0]
        )
        _INDEX[item.nodeid] = i
        _OUTCOMES[item.nodeid] = ["passed", ""]
    _report(["collected", titles])
    # Once, before any test: a file that does not load fails every test at once.
    check = getattr(items[0].module, "student_code_loads", None) if items else None
    path = os.environ.get(FILE_ENV)
    if check is not None and path:
        why = check(Path(path))
        if why:
            _REFUSED.append(why)


def pytest_runtest_setup(item: Any) -> None:
    if _REFUSED:
        pytest.fail(_REFUSED[0], pytrace=False)


def pytest_runtest_logreport(report: Any) -> None:
    outcome = _OUTCOMES.get(report.nodeid)
    if outcome is None:
        return
    if outcome[0] == "passed" and not report.passed:
        if report.skipped:  # a skipped test earns nothing
            outcome[:] = ["skipped", "skipped"]
        else:
            failed = report.when == "call" or _REFUSED
            outcome[:] = ["failed" if failed else "error", _first_line(report)]
    if report.when == "teardown":
        _report(["case", _INDEX[report.nodeid], *outcome])


def _first_line(report: Any) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    text = crash.message if crash is not None else str(report.longrepr)
    line = next(iter(text.strip().splitlines()), "")
    return line.removeprefix("AssertionError: ").removeprefix("Failed: ")[:300]


# -- running the student's code out of the grader's reach ---------------------------------------


class _NoHost:
    """What an advisor loaded only to see that it loads may reach: nothing."""

    def now_ns(self) -> int:
        return 0

    def log(self, level: str, event: str, fields: dict[str, Any]) -> None:
        pass

    def query(self, view: str, method: str, args: tuple[Any, ...]) -> Any:
        raise LookupError("no kernel here")


def advisor_loads(path: Path) -> str | None:
    """None if the MLaaS module at `path` loads isolated within LOAD_LIMIT_S; else why not."""
    from kernel.mlaas import isolated
    from kernel.mlaas.faults import ModuleError

    load_s, _ = limits()
    try:
        module = isolated.start(
            str(path), None, seed=0, host=_NoHost(), limits=isolated.Limits(startup_s=load_s)
        )
    except ModuleError as exc:
        return _refusal(path, str(exc.args[0]) if exc.args else "refused", load_s)
    module.close()
    return None


def program_loads(path: Path, function: str) -> str | None:
    """None if `function` of the file at `path` loads in its sandbox within LOAD_LIMIT_S."""
    load_s, _ = limits()
    try:
        SandboxedProgram(path, function, load_s).close()
    except ProgramFailed as exc:
        return _refusal(path, str(exc), load_s)
    return None


def _refusal(path: Path, why: str, load_s: float) -> str:
    """The one line a student reads when the file does not load (no loader internals)."""
    why = re.sub(r"^[\w.<>]*exec_module raised", "its top level raised", why)
    if "within" in why:
        return (
            f"{path.name} did not finish loading within {load_s:g} s: "
            "does its top level loop forever, or wait for something?"
        )
    return f"{path.name} does not load: {why}"


class ProgramFailed(Exception):
    """The student's program raised, hung, or broke its sandbox's protocol."""


#: Traps a lab's program may make: IPC, capabilities, tasks, time (not modules or devices).
PROGRAM_TRAPS = (
    "Send", "Recv", "Call", "Reply", "ReplyRecv", "NBSend", "NBRecv", "Yield", "Signal", "Wait",
    "Poll", "NewEndpoint", "NewNotification", "NewReply", "Mint", "Copy", "Revoke", "Derived",
    "Delete", "Compute", "Sleep", "GetTime", "Spawn", "WaitPid", "Exit", "GetPid",
)  # fmt: skip


def sandboxed_program(path: Path, function: str) -> Callable[[Any], Iterator[Any]]:
    """A kernel program that runs `function(proc)` of the student's file in a
    sandboxed process (`SandboxedProgram`) and carries out its traps here."""
    from kernel.errors import SyscallError

    def program(proc: Any) -> Iterator[Any]:
        load_s, step_s = limits()
        child = SandboxedProgram(path, function, load_s)
        try:
            start = ["start", list(proc.argv), proc.pid, proc.name, dict(proc.caps)]
            reply = child.ask(start, step_s)
            for _ in range(MAX_PROGRAM_TRAPS):
                if reply[0] != "trap":
                    break
                trap = _trap_in(reply[1], reply[2])
                if trap is None:
                    denied = ["throw", "ENOSYS", f"{reply[1]} is not for this lab's programs"]
                    reply = child.ask(denied, step_s)
                    continue
                try:
                    result = yield trap
                except SyscallError as exc:
                    reply = child.ask(
                        ["throw", exc.errno, str(exc.args[0] if exc.args else "")], step_s
                    )
                else:
                    reply = child.ask(["send", _wire(result)], step_s)
            if reply[0] == "trap":
                raise ProgramFailed(
                    f"{path.name} made {MAX_PROGRAM_TRAPS} traps: does it loop forever?"
                )
            if reply[0] == "return":
                return reply[1] if type(reply[1]) is int else None
            raise ProgramFailed(f"{path.name}: {reply[1]}")
        finally:
            child.close()

    return program


class SandboxedProgram:
    """The process a student's program runs in (``python -m image.labs``),
    sandboxed as an isolated MLaaS module is (`kernel.mlaas.sandbox`) before
    the student's file is imported.  Each `ask` sends the program what its
    last trap returned (or raised) and waits for its next trap."""

    def __init__(self, path: Path, function: str, load_s: float) -> None:
        from kernel.mlaas.child import FrameReader
        from kernel.mlaas.isolated import CHILD_ENV, PASSED_ENV

        self.path = path
        to_child, request = os.pipe()
        reply, from_child = os.pipe()
        env = {k: os.environ[k] for k in PASSED_ENV if k in os.environ} | CHILD_ENV
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-P", "-B", "-m", "image.labs", str(to_child), str(from_child),
                 str(path), function],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                pass_fds=(to_child, from_child), env=env, cwd=path.parent, start_new_session=True,
            )  # fmt: skip
        finally:
            os.close(to_child)
            os.close(from_child)
        self.request, self.reply = request, reply
        self.reader = FrameReader()
        answer = self._receive(load_s, "loading")
        if answer != ["ready"]:
            self.close()
            why = answer[1] if len(answer) == 2 and type(answer[1]) is str else "refused"
            raise ProgramFailed(why[:300])

    def ask(self, message: list[Any], limit_s: float) -> list[Any]:
        from kernel.mlaas.child import encode

        try:
            os.write(self.request, encode(message))
        except (OSError, TypeError) as exc:
            raise ProgramFailed(f"{self.path.name}'s process is gone ({exc})") from None
        answer = self._receive(limit_s, "its next trap")
        if answer[0] in ("trap", "return", "raised") and len(answer) >= 2:
            return answer
        raise ProgramFailed(f"{self.path.name}'s process broke the protocol")

    def _receive(self, limit_s: float, what: str) -> list[Any]:
        from kernel.mlaas.child import ProtocolError

        deadline = time.monotonic() + limit_s
        while True:
            try:
                message = self.reader.next()
            except ProtocolError:
                raise ProgramFailed(f"{self.path.name}'s process broke the protocol") from None
            if message is not None:
                return message if type(message) is list and message else ["raised", "garbage"]
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.reply], [], [], left)[0]:
                self.close()
                raise ProgramFailed(
                    f"no {what} within {limit_s:g} s: does {self.path.name} loop forever?"
                )
            data = os.read(self.reply, 1 << 16)
            if not data:
                self.close()
                raise ProgramFailed(f"{self.path.name}'s process died")
            self.reader.feed(data)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for fd in (self.request, self.reply):
            try:
                os.close(fd)
            except OSError:
                pass
        self.request = self.reply = -1


def _wire(value: Any, depth: int = 0) -> Any:
    """A trap's field or a trap's result as plain values, tagged so tuples,
    messages and received messages come back as themselves (`_unwire`)."""
    from kernel.traps import Message, Received

    t = type(value)
    if value is None or t in (bool, int, float, str):
        return value
    if depth > 32:
        raise TypeError("nested more than 32 deep")
    if t is tuple:
        return {"t": [_wire(v, depth + 1) for v in value]}
    if t is Message:
        return {"m": [value.label, _wire(value.payload, depth + 1), list(value.caps)]}
    if t is Received:
        return {"r": [_wire(value.msg, depth + 1), value.badge, value.reply, list(value.caps)]}
    if t is dict:
        return {"d": [[_wire(k, depth + 1), _wire(v, depth + 1)] for k, v in value.items()]}
    if isinstance(value, int):  # Rights, an IntFlag
        return int(value)
    raise TypeError(f"a {t.__name__} cannot travel between the program and the kernel")


def _unwire(value: Any) -> Any:
    """`_wire`'s inverse; ValueError or TypeError for anything it would not make."""
    from kernel.traps import Message, Received

    if type(value) is not dict:
        if type(value) is list:
            raise TypeError("an untagged list")
        return value
    ((tag, items),) = value.items()
    if tag == "t":
        return tuple(_unwire(v) for v in items)
    if tag == "d":
        return {_unwire(k): _unwire(v) for k, v in items}
    if tag == "m":
        label, payload, caps = items
        return Message(label, _unwire(payload), tuple(caps))
    if tag == "r":
        msg, badge, reply, caps = items
        return Received(_unwire(msg), badge, reply, tuple(caps))
    raise ValueError(f"unknown tag {tag!r}")


def _trap_in(name: Any, fields: Any) -> Any:
    """The trap a sandboxed program asked for, built here; None if it may not make it."""
    from kernel import traps

    if name not in PROGRAM_TRAPS or type(fields) is not dict:
        return None
    try:
        return getattr(traps, name)(**{str(k): _unwire(v) for k, v in fields.items()})
    except (TypeError, ValueError) as exc:
        raise ProgramFailed(f"its {name} trap is malformed: {exc}") from None


# -- the sandboxed program's process -----------------------------------------------------------


def _program_main(argv: list[str]) -> int:
    """Sandbox this process, import the student's file, and run its program
    one trap at a time for the grader (`SandboxedProgram`)."""
    import types

    import kernel  # noqa: F401  (everything the student's file imports, before the sandbox)
    import kernel.caps  # noqa: F401
    from kernel.errors import SyscallError
    from kernel.mlaas import sandbox
    from kernel.mlaas.child import Channel, _readable

    channel = Channel(int(argv[0]), int(argv[1]))
    path, function = argv[2], argv[3]
    sandbox.die_with_parent()
    try:
        sandbox.apply(
            memory_bytes=PROGRAM_MEMORY_BYTES, cpu_s=PROGRAM_CPU_S, readable=_readable(path)
        )
    except sandbox.SandboxError as exc:
        channel.send(["refused", f"the sandbox could not be applied: {exc}"])
        return 1
    # From here on, the student's code runs.
    try:
        spec = importlib.util.spec_from_file_location("student_program", path)
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        spec.loader.exec_module(module)  # type: ignore[union-attr]
        program = getattr(module, function)
    except BaseException as exc:
        channel.send(["refused", f"{type(exc).__name__}: {exc}"[:300]])
        return 1
    channel.send(["ready"])
    start = channel.receive()
    if not start or start[0] != "start":
        return 1
    _, args, pid, name, caps = start
    errors = {c.errno: c for c in SyscallError.__subclasses__()}
    proc = types.SimpleNamespace(pid=pid, name=name, argv=tuple(args), caps=caps)
    try:
        gen = program(proc)
        if not isinstance(gen, types.GeneratorType):
            raise TypeError(f"{function}(proc) is not a program: it yields no trap")
        trap = next(gen)
        while True:
            kind = type(trap)
            if kind.__module__ != "kernel.traps" or not attrs.has(kind):
                raise TypeError(f"{function} yielded {trap!r:.60}, which is not a trap")
            fields = {f.name: _wire(getattr(trap, f.name)) for f in attrs.fields(kind)}
            channel.send(["trap", kind.__name__, fields])
            answer = channel.receive()
            if answer is None:
                return 0
            if answer[0] == "send":
                trap = gen.send(_unwire(answer[1]))
            else:
                trap = gen.throw(errors.get(answer[1], SyscallError)(answer[2]))
    except StopIteration as stop:
        channel.send(["return", stop.value if type(stop.value) is int else None])
    except BaseException as exc:
        channel.send(["raised", f"{type(exc).__name__}: {exc}"[:300]])
    return 0


if __name__ == "__main__":
    code = _program_main(sys.argv[1:])
    sys.stdout.flush()
    os._exit(code)  # no interpreter shutdown: the student's atexit hooks have nothing to say
