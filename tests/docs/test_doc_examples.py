"""The collector of the docs' shell examples (tests/docs/doc_examples.py) reads blocks as
the docs mean them: commands, shown output, comments and annotations."""

from __future__ import annotations

from pathlib import Path

import pytest
from doc_examples import Example, _attributes, _strip_comment, examples, runs
from hypothesis import given
from hypothesis import strategies as st

PAGE = """# A page

<!-- example: slow exit=1 unchecked="grading" -->
```console
$ malv lab grade sched     # a comment
== lab sched: grading /tmp/x.py
...
lab sched: 30/100
```

```sh
malv exp sched --quick \\
    --out sched   # continued
# a comment line
python3 course.pyz lab list
```

<!-- example: malvos-shell -->
```console
$ insmod lru
insmod: lru attached as the memory advisor
```

```python
print("not an example")
```
"""


@pytest.fixture
def page(tmp_path: Path) -> list[Example]:
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text(PAGE)
    return examples(tmp_path)


def test_console_blocks_are_commands_and_the_lines_they_print(page):
    grade = page[0]
    assert (grade.language, grade.slow, grade.exit, grade.unchecked) == (
        "console",
        True,
        1,
        "grading",
    )
    assert [c.line for c in grade.commands] == ["malv lab grade sched"]
    assert grade.commands[0].shown == ("== lab sched: grading /tmp/x.py", "lab sched: 30/100")


def test_sh_blocks_are_one_script_with_continuations_joined_and_comments_dropped(page):
    script, shown = runs(page[1], "PY")[0]
    assert script.splitlines() == [
        "set -e",
        "PY -m image.cli exp sched --quick --out sched",
        "PY course.pyz lab list",
    ]
    assert shown == ()


def test_a_malvos_shell_block_is_one_headless_boot_that_powers_off(page):
    [(script, shown)] = runs(page[2], "PY")
    assert script == "PY -m image.cli boot --headless --run 'insmod lru; poweroff'"
    assert shown == ("insmod: lru attached as the memory advisor",)


def test_other_languages_are_not_examples(page):
    assert len(page) == 3


def test_an_unknown_annotation_is_refused():
    with pytest.raises(ValueError, match="unknown example attribute"):
        _attributes("fast")


@given(st.text(alphabet=st.sampled_from("abc -'\"=;&"), max_size=40))
def test_a_command_without_a_hash_is_kept_as_it_is(command):
    assert _strip_comment(command) == command.rstrip()


@given(st.text(alphabet=st.sampled_from("abc -="), min_size=1, max_size=20))
def test_a_hash_inside_quotes_is_not_a_comment(word):
    line = f'malv boot --run "echo {word} #1"'
    assert _strip_comment(line + "  # why") == line
