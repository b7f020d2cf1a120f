"""Text a peer chose, made safe to show: one line, no control or direction characters,
bounded length.

The hub and the spoke copy such text (a refused header's value quoted in an error sentence,
a topic, a key id) into receipt details and log lines, which end up on terminals, in
journald and on the status page. A raw ESC would drive the operator's terminal (ANSI
escapes), a bidi override would make ``abc.gov`` read as something else, a newline would
forge a log line. Every such character becomes a visible escape (``\\x1b``, ``\\u202e``),
so nothing is lost for the investigator and nothing acts on the reader. Pure.
"""

from __future__ import annotations

import re
from typing import Final

MAX_TEXT: Final = 2000  # characters: a receipt's detail holds at most this many
ELLIPSIS: Final = "…"

# C0 (tab, newline and carriage return included), DEL, C1; and the invisible characters of
# category Cf that change what a reader sees: soft hyphen, Arabic letter mark, Mongolian
# vowel separator, zero-width ones, LRM/RLM, line/paragraph separators, the bidi embeddings
# and overrides (U+202A-U+202E) and isolates (U+2066-U+2069), word joiner and invisible
# operators, BOM, interlinear annotation marks, tag characters; and lone surrogates.
_UNSAFE: Final = re.compile(
    "[\x00-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f"
    "\ufeff\ufff9-\ufffb\ud800-\udfff\U000e0000-\U000e007f]"
)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def untrusted_text(text: str, limit: int = MAX_TEXT) -> str:
    """``text`` with every unsafe character escaped, cut to ``limit`` characters (the last
    of them ``…`` when it was cut). Safe text comes back unchanged."""
    if _UNSAFE.search(text) is not None:
        text = _UNSAFE.sub(_escape, text)
    if len(text) > limit:
        text = text[: limit - 1] + ELLIPSIS
    return text
