"""Fuzz target: a signed directory, as a spoke takes it from its retained topic.

Input: a mode byte (its value modulo 2), then bytes.

- 0, a directory frame off the wire: ``verify_directory`` against the pinned fixture hub
  key, with the spoke's clock and the version it holds (rollback and equivocation
  checks). Reaches the frame decode, the key id and the signature check, not beyond.
- 1, the signed directory body: signed with the fixture hub key and framed, so the
  decode (8 MiB limits), the Directory model and everything in it, freshness, rollback,
  equivocation and ``check_consistent`` are reached, and then the look-ups the hub and
  the spokes make on a directory (groups, keys, channels, ancestry).

The documented failure is an ``XchgError``; anything else escaping is a crash.
"""

from __future__ import annotations

import contextlib
import sys

import atheris

with atheris.instrument_imports(include=["schemas", "hubd", "world"]):
    import world

    from schemas import codec
    from schemas.directory import delivery_channel, verify_directory
    from schemas.errors import XchgError
    from schemas.keys import DOMAIN_DIRECTORY
    from schemas.labels import Classification

HELD = world.load_directory()
NOW = world.now_of(HELD.directory)
HUB = world.signing_key(world.HUB)


def frame_of(mode: int, data: bytes) -> bytes:
    if mode == 0:
        return data
    sig = HUB.sign(DOMAIN_DIRECTORY, data)
    return codec.encode({"v": 1, "kid": HUB.kid, "dir": data, "sig": sig})


def test_one_input(data: bytes) -> None:
    if not data:
        return
    frame = frame_of(data[0] % 2, data[1:])
    with contextlib.suppress(XchgError):
        verify_directory(frame, HUB.public, now=NOW, last_seen=(HELD.version, HELD.digest))
    try:
        verified = verify_directory(frame, HUB.public, now=None)
    except XchgError:
        return
    directory = verified.directory
    for org in directory.orgs[:4]:
        directory.ancestors(org.id)
        with contextlib.suppress(ValueError):  # documented: a group naming a stranger
            directory.addressees([f"@{g.id}" for g in directory.groups[:4]], [], sender=org.id)
        for other in directory.orgs[:4]:
            delivery_channel(directory, org, other, Classification.INTERNAL)
        for key in org.sign_keys[:2]:
            with contextlib.suppress(XchgError):
                directory.signing_key(org.id, key.kid, key.not_before)
        with contextlib.suppress(XchgError):
            directory.encryption_key(org.id, NOW)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
