"""Text a peer chose is made safe before a log line or a receipt's detail shows it."""

from __future__ import annotations

import json

import pytest
import structlog

from runtime.startup import configure
from schemas.untrusted import MAX_TEXT, untrusted_text


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("jl.gov\x00\x07\x08", "jl.gov\\x00\\x07\\x08"),  # C0
        ("a\nforged log line\r\tb", "a\\x0aforged log line\\x0d\\x09b"),
        ("\x7f\x85\x9b31m", "\\x7f\\x85\\x9b31m"),  # DEL, C1 NEL and CSI
        ("\x1b[31mred\x1b[0m \x1b]0;title\x07", "\\x1b[31mred\\x1b[0m \\x1b]0;title\\x07"),
        ("abc\u202egro.vog", "abc\\u202egro.vog"),  # right-to-left override
        ("\u2066x\u2069\u200f\u200b\ufeff", "\\u2066x\\u2069\\u200f\\u200b\\ufeff"),
        ("\U000e0041tag", "\\U000e0041tag"),
        ("\ud800lone", "\\ud800lone"),
        ("吉林省人民政府 jl.gov 1号", "吉林省人民政府 jl.gov 1号"),  # safe text as it was
    ],
)
def test_control_and_direction_characters_become_visible_escapes(raw: str, shown: str) -> None:
    assert untrusted_text(raw) == shown


def test_overlong_text_is_cut_to_the_limit_and_says_so() -> None:
    cut = untrusted_text("x" * 10_000)
    assert len(cut) == MAX_TEXT
    assert cut.endswith("…")
    assert untrusted_text("\x1b" * 1000) == ("\\x1b" * 500)[: MAX_TEXT - 1] + "…"
    assert untrusted_text("y" * MAX_TEXT) == "y" * MAX_TEXT  # at the limit: whole


def test_a_log_event_never_carries_a_peers_control_characters(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure("json")
    try:
        structlog.get_logger("test").warning(
            "message.rejected",
            detail="unknown org '\x1b[2J\u202eevil'\nfake=1",
            rules=["a\x00b"],
            topic="x" * 5000,
        )
    finally:
        structlog.reset_defaults()
    line = capsys.readouterr().out.strip()
    assert "\n" not in line
    event = json.loads(line)
    assert event["detail"] == "unknown org '\\x1b[2J\\u202eevil'\\x0afake=1"
    assert event["rules"] == ["a\\x00b"]
    assert len(event["topic"]) == MAX_TEXT
