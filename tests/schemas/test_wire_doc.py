"""docs/wire-format.md against the code: the decode limits of section 2 are the code's,
and the worked example (section 10) is what its command prints.

The example's command is run as the document writes it. What is fixed (key ids, the
directory frame and its record, the inner record, isig, the key files of section 8) must
match byte for byte; what is random by design (the sealed box and everything that hashes
or signs it) must match in every size, offset and field, with only its bytes left to
differ.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys

import pytest

from schemas import codec, dirtree, ledger, slots, transport
from tests.world import REPO

DOC = REPO / "docs" / "wire-format.md"
COMMAND = re.compile(r"`(\.venv/bin/python docs/examples/make_wire_examples\.py)`")
# Runs of hex bytes ("a3 64 69 …") and long hex strings (keys, digests, signatures).
HEX = re.compile(r"\b[0-9a-f]{2}(?: [0-9a-f]{2})+\b|\b[0-9a-f]{16,}\b")
NUMBERED = re.compile(r"^## \d", re.MULTILINE)
FIXED_SECTIONS = ("## Key ids", "### Directory frame", "### dir ", "### inner ")
FIXED_BODY_LINES = ("body.size", "chunk_count", "plaintext", "isig")
AMOUNT = re.compile(r"(\d[\d ]*?) ?(KiB|MiB)?")  # 512 KiB, 8 MiB, 10 000, 1024
UNITS = {"": 1, "KiB": 1024, "MiB": 1024 * 1024}


def section(heading: str, text: str) -> str:
    """From a numbered heading to the next one (code blocks hold "## " lines too)."""
    start = text.index(heading)
    following = NUMBERED.search(text, start + 1)
    return text[start : following.start() if following else len(text)]


def fenced(text: str, opening: str) -> str:
    """The first fenced block that starts with ``opening``, without its fences."""
    start = text.index(opening) + len(opening)
    return text[start : text.index("```\n", start)]


def sections(example: str) -> dict[str, list[str]]:
    """The example's lines under each heading (## or ###)."""
    found: dict[str, list[str]] = {}
    current = ""
    for line in example.splitlines():
        if line.startswith("#"):
            current = line
            found[current] = []
        elif line:
            found[current].append(line)
    return found


def amount(cell: str) -> int:
    """``512 KiB``, ``8 MiB``, ``10 000``, ``1024`` as a number."""
    found = AMOUNT.fullmatch(cell)
    assert found, cell
    return int(found[1].replace(" ", "")) * UNITS[found[2] or ""]


@pytest.fixture(scope="module")
def doc() -> str:
    return DOC.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def printed(doc: str) -> str:
    """What the command prints, run from the repository root as the document says."""
    (command,) = COMMAND.findall(section("## 10. Worked example", doc))
    argv = [sys.executable, *shlex.split(command)[1:]]
    done = subprocess.run(  # noqa: S603 - the document's own command
        argv, cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_worked_example_has_the_printed_sizes_offsets_and_fields(
    doc: str, printed: str
) -> None:
    shown = fenced(section("## 10. Worked example", doc), "```text\n")
    run = printed.split("\n## Key files\n", maxsplit=1)[0]

    assert [HEX.sub("…", line) for line in shown.strip().splitlines()] == [
        HEX.sub("…", line) for line in run.strip().splitlines()
    ]


def test_the_fixed_parts_of_the_worked_example_are_byte_for_byte_what_is_printed(
    doc: str, printed: str
) -> None:
    shown = sections(fenced(section("## 10. Worked example", doc), "```text\n"))
    run = sections(printed)
    fixed = [h for h in shown if h.startswith(FIXED_SECTIONS)]

    assert len(fixed) == len(FIXED_SECTIONS), "every fixed part is in the document"
    assert "### Directory frame (1145 bytes)" in fixed, "the directory is shown, not announced"
    for heading in fixed:
        assert shown[heading] == run[heading], heading
    body = [h for h in shown if h.startswith("### Body")]
    assert body
    for heading in body:
        assert [ln for ln in shown[heading] if ln.startswith(FIXED_BODY_LINES)] == [
            ln for ln in run[heading] if ln.startswith(FIXED_BODY_LINES)
        ]


def test_the_key_file_examples_are_what_the_example_prints(doc: str, printed: str) -> None:
    shown = fenced(section("## 8. Key files on disk", doc), "```json\n")

    assert shown == printed.split("\n## Key files\n\n")[1]


def test_the_decode_limits_table_is_the_codes(doc: str) -> None:
    rows = [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in section("## 2. Canonical msgpack", doc).splitlines()
        if line.startswith("| `") and "_LIMITS`" in line
    ]
    documented = {row[0].strip("`"): tuple(amount(cell) for cell in row[2:8]) for row in rows}
    in_code = {
        name: (limits.max_size, limits.max_str, limits.max_bin, limits.max_array,
               limits.max_map, limits.max_depth)
        for module in (codec, transport, ledger, dirtree, slots)
        for name, limits in vars(module).items()
        if name.endswith("_LIMITS") and isinstance(limits, codec.Limits)
    }  # fmt: skip

    assert documented == in_code
