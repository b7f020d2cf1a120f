"""Fuzz target: a signed receipt batch, as the hub and a spoke verify it.

Input: a mode byte (its value modulo 3), then bytes.

- 0, a receipt frame off the wire: ``verify_receipts`` as the hub calls it (the topic's
  owner jl.cc expected) and as a spoke does. Reaches the frame decode, the ids, the key
  lookup and the signature check, not beyond (Ed25519 cannot be forged by a fuzzer).
- 1, the signed body ``rcpt`` of a hub batch: signed with the fixture hub key and framed,
  so the batch decode, the ReceiptBatch and ReceiptEntry models, the issuer match, the key
  window and the rules on who may issue which status are reached (the spoke's view).
- 2, the body of a recipient's batch: signed with jl.cc's fixture key (the hub's view).

A refusal of the hub's must become the REJECTED receipt the hub signs for it.
The documented failure is an ``XchgError``; anything else escaping is a crash.
"""

from __future__ import annotations

import contextlib
import sys

import atheris

with atheris.instrument_imports(include=["schemas", "hubd", "world"]):
    import world

    from schemas import codec
    from schemas.errors import PeerError, XchgError
    from schemas.keys import DOMAIN_RECEIPT
    from schemas.receipts import verify_receipts

DIRECTORY = world.load_directory().directory
SIGNERS = {
    1: (DIRECTORY.hub_id, world.signing_key(world.HUB)),
    2: ("jl.cc", world.signing_key("jl.cc")),
}


def frame_of(mode: int, data: bytes) -> bytes:
    if mode == 0:
        return data
    issuer, key = SIGNERS[mode]
    sig = key.sign(DOMAIN_RECEIPT, data)
    return codec.encode({"v": 1, "from": issuer, "kid": key.kid, "rcpt": data, "sig": sig})


def test_one_input(data: bytes) -> None:
    if not data:
        return
    frame = frame_of(data[0] % 3, data[1:])
    try:
        verify_receipts(frame, DIRECTORY, expected_issuer="jl.cc")
    except PeerError as exc:
        world.refusal_receipt(exc, frame)
    with contextlib.suppress(XchgError):
        verify_receipts(frame, DIRECTORY)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
