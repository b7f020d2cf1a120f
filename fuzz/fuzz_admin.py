"""Fuzz target: a line on the hub's admin socket, as the hub and hubctl read it.

Input: a mode byte (its value modulo 2), then the line without its newline.

- 0, a request: ``parse_request`` as ``hubd.admin.server`` calls it on a line a local
  client sent; a request it accepts must encode again (``encode_request``) as hubctl would.
- 1, an answer: ``parse_answer`` as hubctl calls it on the hub's line.

The documented failures are ``ProtocolError`` and, for an answer, ``HubRefusedError``
(both ``XchgError``); anything else escaping is a crash.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["schemas", "hubd"]):
    from hubd.admin.protocol import parse_answer, parse_request
    from schemas.errors import XchgError


def test_one_input(data: bytes) -> None:
    if not data:
        return
    line = data[1:]
    try:
        if data[0] % 2 == 0:
            parse_request(line)
        else:
            parse_answer(line)
    except XchgError:
        pass


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
