"""Fuzz target: the key files an organisation hands over and the hub key a spoke pins.

Input: a mode byte (its value modulo 3), then the file's bytes.

- 0, ``ORG.pub.json``: ``PublicKeys.load``, as ``hubctl directory build`` reads what
  organisations send the hub operator;
- 1, ``hub.pub.json``: ``HubPublicKey.load``, as a spoke and hubctl read the pinned key;
- 2, a secret key file: ``load_secret_key`` (a file on the machine itself, but one an
  operator may have edited or truncated).

Their documented failure is a ``ValueError`` naming the file; anything else is a crash.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["schemas"]):
    from schemas.keys import HubPublicKey, PublicKeys, load_secret_key


def test_one_input(data: bytes) -> None:
    if not data:
        return
    mode, rest = data[0] % 3, data[1:]
    try:
        if mode == 0:
            keys = PublicKeys.load(rest, source="jl.cc.pub.json")
            if PublicKeys.load(keys.dump(), source="again") != keys:
                raise AssertionError("a loaded public key file does not load again as itself")
        elif mode == 1:
            HubPublicKey.load(rest, source="hub.pub.json")
        else:
            load_secret_key(rest, source="jl.cc.sign.key")
    except ValueError:
        pass


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
