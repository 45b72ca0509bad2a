"""The README stays short, its Quick start keeps its two commands, and its links into docs/
resolve (on GitHub as on disk)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def test_the_readme_is_at_most_250_lines():
    assert len(README.splitlines()) <= 250


def test_the_quick_start_holds_the_install_and_test_commands():
    quick_start = README[README.index("## Quick start") :]
    assert "python3 -m pip install -e '.[ray]' && malv boot\npython3 -m pytest\n" in quick_start


def test_every_relative_link_of_the_readme_resolves():
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README)
    relative = [link for link in links if "://" not in link]
    assert relative, "the README links into docs/"
    for link in relative:
        assert (ROOT / link).exists(), link
    assert any(link.startswith("docs/") and link.endswith(".md") for link in relative)
