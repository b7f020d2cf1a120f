"""The hub's layout as docs/architecture.md draws it, held against the code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
GUIDE = REPO / "docs" / "architecture.md"
MAX_LINES = 600


def _rooms() -> dict[str, list[str]]:
    text = GUIDE.read_text(encoding="utf-8")
    section = text[text.index("## The hub in rooms") : text.index("## The pure core")]
    rooms = {}
    for line in section.splitlines():
        match = re.match(r"\| `(hubd/[^`]+/)` \|", line)
        if match:
            rooms[match.group(1)] = re.findall(r"`([\w]+\.py|[\w]+/)`", line)
    return rooms


def test_no_module_of_the_hub_is_over_600_lines() -> None:
    long = {
        str(path.relative_to(REPO)): n
        for path in (REPO / "hubd").rglob("*.py")
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, f"split these modules (more than {MAX_LINES} lines): {long}"


def test_the_guide_names_every_room_of_the_hub() -> None:
    folders = {
        f"{p.relative_to(REPO)}/"
        for p in (REPO / "hubd").iterdir()
        if p.is_dir() and (p / "__init__.py").is_file()
    }
    assert set(_rooms()) == folders


@pytest.mark.parametrize("room", sorted(_rooms()))
def test_the_guide_lists_exactly_the_modules_of_each_room(room: str) -> None:
    listed = set(_rooms()[room])
    there = {p.name for p in (REPO / room).glob("*.py") if p.name != "__init__.py"}
    folders = {
        f"{p.name}/" for p in (REPO / room).iterdir() if p.is_dir() and p.name != "__pycache__"
    }
    assert listed == there | folders
