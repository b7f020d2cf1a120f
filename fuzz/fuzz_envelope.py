"""Fuzz target: the envelope frame, as the hub and a recipient verify it.

Input: a mode byte (its value modulo 3), then bytes.

- 0, a frame off the wire: ``verify_envelope`` as the hub calls it (the topic's owner
  jl.gov expected) and as a recipient does (no expected sender). Reaches the frame
  decode, the ids, the key lookup and the signature check; Ed25519 cannot be forged by a
  fuzzer, so nothing after the signature is reached this way.
- 1, the signed header ``hdr``: the target signs it with jl.gov's fixture key and frames
  it, so the decode of hdr and core, the Header model, the sender match, the key window,
  ``check_header`` and the recipient keys are reached.
- 2, the header core: placed in ``hdr`` beside a fixed body descriptor, signed as in 1.

A verified envelope goes on as the hub takes it (``router.decide``, ``check_freshness``,
the document rules without the store) and as the recipient jl.cc opens it (``Opener``
unseals its file key). A refusal must become the REJECTED receipt the hub signs for it.
The documented failure is an ``XchgError``; anything else escaping is a crash.
"""

from __future__ import annotations

import contextlib
import sys

import atheris

with atheris.instrument_imports(include=["schemas", "hubd", "world"]):
    import world

    from hubd.core.admit import Facts, Path, admit
    from schemas import codec
    from schemas.envelope import encode_frame, verify_envelope
    from schemas.errors import PeerError, XchgError
    from schemas.keys import DOMAIN_HEADER
    from schemas.seal import Opener

DIRECTORY = world.load_directory().directory
SENDER = world.signing_key("jl.gov")
RECIPIENT = world.encryption_key("jl.cc")
BODY = {"chunk": 65536, "sha256": bytes(32), "size": 100}


def frame_of(mode: int, data: bytes) -> bytes:
    if mode == 0:
        return data
    hdr = data if mode == 1 else codec.encode({"core": data, "body": BODY})
    return encode_frame("jl.gov", SENDER.kid, hdr, SENDER.sign(DOMAIN_HEADER, hdr))


def test_one_input(data: bytes) -> None:
    if not data:
        return
    frame = frame_of(data[0] % 3, data[1:])
    try:
        envelope = verify_envelope(frame, DIRECTORY, expected_sender="jl.gov")
    except PeerError as exc:
        world.refusal_receipt(exc, frame)
        return
    header = envelope.header
    # the hub's decision on every path, the store having answered "nothing stored"
    for path in Path:
        admit(
            Facts(
                envelope,
                path,
                "govnet",
                DIRECTORY,
                now_ms=header.created_at,
                max_skew_ms=300_000,
                body=b"" if path is Path.INLINE else None,
                stored=None,
                request=None,
            )
        )
    verify_envelope(frame, DIRECTORY)  # the recipient's view: no topic owner to compare
    if "jl.cc" in header.keys:
        with contextlib.suppress(XchgError):
            Opener(envelope, "jl.cc", RECIPIENT)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
