"""Fuzz target: a large group's recipients in slots (schemas.slots, wire format section 4a).

Input: a mode byte (its value modulo 5), then bytes. The fixture is the envelope with slots
capture.py sealed (``world.load_slots``: jl.gov to jl.cc and 18 counties, jl.cc.nongan in
cc), verified against ``world.crowded_directory()``, and its signed ``{root, count}``.

- 0, every slot as the hub receives it: ``Recipients.read`` against the fixture's ref and
  ``verify_envelope(frame, ..., expected_sender="jl.gov", slots=blob)``.
- 1, a recipient's part: the first byte picks the reader (a recipient, or cn.gov, which
  is none), the rest is its part: ``read_part`` and ``verify_envelope(frame, ...,
  recipient=me, slots=part)``.
- 2, a part forged from the input: a real slot and proof with the index changed, the proof
  cut, extended, its hashes swapped or replaced by another slot's, the slot's bytes another
  recipient's or fuzzed; read by a chosen reader.
- 3, every slot forged from the input: the real ones dropped, repeated, swapped, replaced
  or altered, each a chosen number of times; read as the hub reads them.
- 4, a part the hub stored: ``stored_slot`` (decode only).

What each reader accepts must be true of the fixture: the hub's slots hash to the signed
root, are strictly sorted and are exactly the fixture's (nothing else proves in); a
recipient's part is its own true slot; a forged part or set is accepted only if it is the
real one; a decoded slot encodes back to its bytes. The documented failure is an
``XchgError``; anything else escaping is a crash.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["schemas", "world"]):
    import world

    from schemas import codec
    from schemas.envelope import VerifiedEnvelope, verify_envelope
    from schemas.errors import XchgError
    from schemas.merkle import HASH_SIZE
    from schemas.slots import (
        PART_LIMITS,
        Recipients,
        SlotsRef,
        read_part,
        slot_bytes,
        stored_slot,
    )

DIRECTORY = world.crowded_directory()
MESSAGE = world.load_slots()
FRAME = MESSAGE.frame
HUB_VIEW = verify_envelope(FRAME, DIRECTORY, expected_sender="jl.gov", slots=MESSAGE.slots)


def fixture() -> tuple[Recipients, SlotsRef]:
    """Every slot of the fixture envelope, and the root and count its header signs."""
    if HUB_VIEW.slots is None or HUB_VIEW.header.slots is None:
        raise SystemExit(f"{world.SLOTS_MESSAGE} holds no envelope with slots: run capture.py")
    return HUB_VIEW.slots, HUB_VIEW.header.slots


REAL, REF = fixture()
ORGS = tuple(slot.org for slot in REAL.slots)
READERS = (*ORGS, "cn.gov")  # cn.gov is in the directory and not a recipient
PARTS = {org: REAL.part(org) for org in ORGS}
PROOFS = tuple(REAL.tree.proof(i) for i in range(len(ORGS)))
NODES = tuple(node for level in REAL.tree.levels for node in level)  # every hash of the tree


def hub(blob: bytes) -> None:
    """Every slot, as the hub reads them: what is taken is exactly the fixture's."""
    try:
        taken = Recipients.read(blob, REF)
    except XchgError:
        taken = None
    if taken is not None:
        if taken.raw != REAL.raw or taken.slots != REAL.slots or taken.tree.root() != REF.root:
            raise AssertionError(f"slots other than the signed ones were taken: {blob!r:.200}")
        if list(taken.raw) != [slot_bytes(s) for s in taken.slots]:
            raise AssertionError("a slot the hub took does not encode back to its bytes")
    envelope = verify_envelope(FRAME, DIRECTORY, expected_sender="jl.gov", slots=blob)
    if taken is None or envelope.slots is None or envelope.slots.raw != REAL.raw:
        raise AssertionError(f"verify_envelope took slots Recipients.read did not: {blob!r:.200}")
    same_recipients(envelope, HUB_VIEW)


def same_recipients(
    seen: VerifiedEnvelope, truth: VerifiedEnvelope, only: str | None = None
) -> None:
    """The header a reader was given names the fixture's recipients (or ``only``'s part)."""
    header, real = seen.header, truth.header
    pick = (lambda org: org == only) if only is not None else (lambda _org: True)
    expected = (
        tuple(o for o in real.to if pick(o)),
        tuple(o for o in real.cc if pick(o)),
        {o: (k.kid, k.box) for o, k in real.keys.items() if pick(o)},
        {o: n for o, n in real.copy_numbers.items() if pick(o)},
    )
    given = (
        header.to,
        header.cc,
        {o: (k.kid, k.box) for o, k in header.keys.items()},
        header.copy_numbers,
    )
    if given != expected:
        raise AssertionError(f"the header read {given!r:.300}, the fixture says {expected!r:.300}")


def recipient(me: str, part: bytes) -> None:
    """A recipient's part: taken only if it is ``me``'s true slot."""
    try:
        slot = read_part(part, REF, me)
    except XchgError:
        slot = None
    if slot is not None and (me not in PARTS or slot != REAL.slots[ORGS.index(me)]):
        raise AssertionError(f"{me} took a slot that is not its own: {slot!r:.200}")
    envelope = verify_envelope(FRAME, DIRECTORY, recipient=me, slots=part)
    if slot is None:
        raise AssertionError(f"verify_envelope took a part read_part did not: {part!r:.200}")
    same_recipients(envelope, HUB_VIEW, only=me)


def forged_part(fdp: atheris.FuzzedDataProvider) -> None:
    """A real part changed as an attacker would; accepted only if it is the real one."""
    me = READERS[fdp.ConsumeIntInRange(0, len(READERS) - 1)]
    source = fdp.ConsumeIntInRange(0, len(ORGS) - 1)
    index = source
    raw = REAL.raw[source]
    proof = list(PROOFS[source])
    for _ in range(fdp.ConsumeIntInRange(1, 3)):
        change = fdp.ConsumeIntInRange(0, 8)
        if change == 0:
            index = fdp.ConsumeIntInRange(-1, len(ORGS) + 1)
        elif change == 1:
            proof = proof[: fdp.ConsumeIntInRange(0, len(proof))]
        elif change == 2:
            proof.append(fdp.ConsumeBytes(HASH_SIZE).ljust(HASH_SIZE, b"\0"))
        elif change == 3 and len(proof) > 1:
            i, j = (
                fdp.ConsumeIntInRange(0, len(proof) - 1),
                fdp.ConsumeIntInRange(0, len(proof) - 1),
            )
            proof[i], proof[j] = proof[j], proof[i]
        elif change == 4:
            proof = list(PROOFS[fdp.ConsumeIntInRange(0, len(ORGS) - 1)])
        elif change == 5:
            raw = REAL.raw[fdp.ConsumeIntInRange(0, len(ORGS) - 1)]
        elif change == 6 and raw:
            at = fdp.ConsumeIntInRange(0, len(raw) - 1)
            raw = raw[:at] + bytes([raw[at] ^ (fdp.ConsumeIntInRange(1, 255))]) + raw[at + 1 :]
        elif change == 7:
            raw = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 260))
        elif change == 8 and proof:
            at = fdp.ConsumeIntInRange(0, len(proof) - 1)
            proof[at] = NODES[fdp.ConsumeIntInRange(0, len(NODES) - 1)]
    part = codec.encode([index, raw, b"".join(proof)])
    try:
        read_part(part, REF, me)
    except XchgError:
        return
    if part != PARTS.get(me):
        raise AssertionError(f"a forged part for {me} was taken: {index}, {raw!r:.120}")


def forged_blob(fdp: atheris.FuzzedDataProvider) -> None:
    """The real slots changed as a sender or a man in the middle would; the hub takes them
    only if they are the real ones."""
    raw = list(REAL.raw)
    for _ in range(fdp.ConsumeIntInRange(1, 3)):
        change = fdp.ConsumeIntInRange(0, 5)
        at = fdp.ConsumeIntInRange(0, len(raw) - 1) if raw else 0
        if change == 0 and raw:
            del raw[at]
        elif change == 1 and raw:
            raw.insert(fdp.ConsumeIntInRange(0, len(raw)), raw[at])
        elif change == 2 and raw:
            other = fdp.ConsumeIntInRange(0, len(raw) - 1)
            raw[at], raw[other] = raw[other], raw[at]
        elif change == 3 and raw:
            raw[at] = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 260))
        elif change == 4 and raw and raw[at]:
            i = fdp.ConsumeIntInRange(0, len(raw[at]) - 1)
            raw[at] = (
                raw[at][:i] + bytes([raw[at][i] ^ fdp.ConsumeIntInRange(1, 255)]) + raw[at][i + 1 :]
            )
        else:
            raw.insert(at, REAL.raw[fdp.ConsumeIntInRange(0, len(REAL.raw) - 1)])
    blob = codec.encode(raw)
    try:
        Recipients.read(blob, REF)
    except XchgError:
        return
    if tuple(raw) != REAL.raw:
        raise AssertionError(f"forged slots were taken: {len(raw)} of them")


def stored(part: bytes) -> None:
    slot = stored_slot(part)
    raw = codec.decode(part, PART_LIMITS)[1]
    if slot_bytes(slot) != raw:
        raise AssertionError(f"a stored slot does not encode back to its bytes: {raw!r:.200}")


def test_one_input(data: bytes) -> None:
    if not data:
        return
    mode, rest = data[0] % 5, data[1:]
    try:
        if mode == 0:
            hub(rest)
        elif mode == 1 and rest:
            recipient(READERS[rest[0] % len(READERS)], rest[1:])
        elif mode == 2:
            forged_part(atheris.FuzzedDataProvider(rest))
        elif mode == 3:
            forged_blob(atheris.FuzzedDataProvider(rest))
        elif mode == 4:
            stored(rest)
    except XchgError:
        pass


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
