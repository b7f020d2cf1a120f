"""Fuzz target: a drop's metadata file, as the spoke reads it from its outbox.

Input: a mode byte (its value modulo 2: 0 TOML, 1 JSON), then the file's bytes.
``parse_metadata`` decides the language by the file name, as ``spoke.outbox`` and
``spoke.checks`` call it; an accepted file goes on to the properties the sender reads
(expiry in ms, the reply's msg_id). Its contract: a DropMetadata or a ``MetadataError``
(with a Chinese text for every problem), never another exception.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["schemas", "world"]):
    from schemas.metadata import MetadataError, parse_metadata

NAMES = ("drop.meta.toml", "drop.meta.json")


def test_one_input(data: bytes) -> None:
    if not data:
        return
    try:
        meta = parse_metadata(data[1:], source=NAMES[data[0] % 2])
    except MetadataError as exc:
        _ = exc.text_zh
        return
    _ = meta.expires_ms, meta.in_reply_to_bytes


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
