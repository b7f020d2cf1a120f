"""Fuzz target: an evidence file, as ``spoke check-evidence`` and ``hubctl audit
check-evidence`` read one that someone hands over.

Input: the file's bytes. ``evidence.loads`` (size limit, JSON, the format), then
``evidence.verify`` twice: trusting the fixture directory's hub key and organisations'
keys, and trusting the file's own keys (as the commands do without a directory). The
seed is a real file (``evidence.build`` over the captured checkpoint, entries, proofs,
receipts and a countersignature). The signatures in it stop verifying once mutated, but
``verify`` reports that as a problem and reads on, so the entries, proofs, receipt
batches and countersignatures are all reached.
The documented failure is an ``EvidenceError`` (an ``XchgError``); a report with
problems is an outcome, not a failure; anything else escaping is a crash.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["schemas", "world"]):
    import world

    from schemas import evidence
    from schemas.errors import XchgError

DIRECTORY = world.load_directory().directory
HUB_KEYS = [key.public for key in DIRECTORY.hub_keys]
ORG_KEYS = evidence.organisation_keys(DIRECTORY)


def test_one_input(data: bytes) -> None:
    try:
        doc = evidence.loads(data)
        evidence.verify(doc, trusted_hub_keys=HUB_KEYS, trusted_keys=ORG_KEYS)
        evidence.verify(doc, trusted_hub_keys=None)
    except XchgError:
        pass


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
