"""Fuzz target: the directory as spokes take it (schemas.dirtree, wire format section 7a).

Input: a mode byte (its value modulo 7), then bytes. The fixture is what the hub serves of
the captured directory (``world.served``: version 1, and version 2 with its change).

- 0, a retained ``dirroot`` publication: ``read_publication``, then its root frame through
  ``verify_root`` (pinned key, rollback and equivocation against version 1, freshness) and
  its change frame through ``verify_delta``. Reaches the frame decodes and the signature
  checks, not beyond.
- 1, a root body: signed with the fixture hub key and framed, so the ``DirRoot`` model,
  rollback, equivocation, freshness and ``check_consistent`` are reached; then the hub's
  real answer for every key is verified against it and ``materialise`` builds on it.
- 2, a change body: signed likewise, verified against version 2's root (``verify_delta``).
- 3, a leaf: ``read_leaf``; its key must be one a spoke may ask for (``check_key``), and
  ``materialise`` takes it.
- 4, a request's keys, as the hub reads them: ``DirectoryDesk.answer_now`` (``read_ask``,
  then the tree's answer, the budget, the transport message); the answer must verify
  against the root and account for every asked key, present or proven absent, or be the
  ``directory.bad_request`` refusal when ``read_ask`` refuses the keys.
- 5, an answer: ``verify_answer`` against version 1's root (proofs, absences, leaves).
- 6, a forged answer built from the input: real leaves and proofs at chosen indices, some
  replaced, cut or moved, absences claimed for chosen keys between chosen neighbours.

In modes 5 and 6 what ``verify_answer`` accepts must be true of the tree: an entry taken
is the tree's entry for that key, a key taken as absent is not in the tree. The documented
failure is an ``XchgError`` (``ValueError`` from ``read_ask``, which the hub answers as
``directory.bad_request``); anything else escaping is a crash.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import sys
from collections.abc import Iterable
from typing import Any, cast

import atheris
import structlog

with atheris.instrument_imports(include=["schemas", "hubd", "world"]):
    import world

    from hubd.engine.arrival import Arrival
    from hubd.engine.dirdesk import BAD_REQUEST, DirectoryDesk
    from hubd.engine.dispatch import Publish
    from schemas import codec, dirtree, transport
    from schemas.errors import XchgError

structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))

HUB = world.signing_key(world.HUB)
FIRST, FOLLOWING = world.served()
TREE = FIRST.tree
ROOT = dirtree.verify_root(FIRST.root_frame, HUB.public, now=None)
NEXT_ROOT = dirtree.verify_root(FOLLOWING.root_frame, HUB.public, now=None)
NOW = ROOT.root.issued_at + 1000
INDEX = {key: i for i, key in enumerate(TREE.keys)}
ENTRIES = [dirtree.read_leaf(leaf) for leaf in TREE.leaves]
EVERY_ENTRY = dirtree.encode_answer(ROOT.version, None, *TREE.answer(TREE.keys))

SENT: list[bytes] = []
DESK = DirectoryDesk(
    send=cast("Publish", lambda _channel, _org, payload: SENT.append(payload)),  # unawaited
    monotonic=itertools.count().__next__,  # a second between asks: never over the rate
)
DESK.served = FIRST
ASKER = Arrival("govnet", "jl.cc", b"", 0, 0)


def signed(domain: bytes, name: str, body: bytes) -> bytes:
    sig = HUB.sign(domain, body)
    return codec.encode({"v": 1, "kid": HUB.kid, name: body, "sig": sig})


def same(data: bytes, again: bytes, what: str) -> None:
    """A record a decoder accepted encodes back to the bytes it came from (one encoding per
    value: the codec's rule, which a reader that coerces would break)."""
    if again != data:
        raise AssertionError(f"{what} accepted as {again!r:.120}, decoded from {data!r:.120}")


def publication(data: bytes) -> None:
    root_frame, delta_frame = dirtree.read_publication(data)
    same(data, dirtree.publication(root_frame, delta_frame), "a publication")
    with contextlib.suppress(XchgError):
        dirtree.verify_root(root_frame, HUB.public, now=NOW, last_seen=(ROOT.version, ROOT.digest))
    try:
        held = dirtree.verify_root(root_frame, HUB.public, now=None)
    except XchgError:
        held = NEXT_ROOT
    if delta_frame is not None:
        dirtree.verify_delta(delta_frame, HUB.public, held)


def root(body: bytes) -> None:
    frame = signed(dirtree.DOMAIN_DIR_ROOT, "root", body)
    with contextlib.suppress(XchgError):
        dirtree.verify_root(frame, HUB.public, now=NOW, last_seen=(ROOT.version, ROOT.digest))
    verified = dirtree.verify_root(frame, HUB.public, now=None)
    same(body, codec.encode(verified.root.to_wire()), "a root")
    dirtree.materialise(verified.root, ENTRIES)
    dirtree.verify_answer(EVERY_ENTRY, verified, TREE.keys)


def leaf(data: bytes) -> None:
    entry = dirtree.read_leaf(data)
    key = dirtree.entry_key(entry)
    try:
        dirtree.check_key(key)
    except ValueError as exc:
        raise AssertionError(f"a valid entry's key {key!r} cannot be asked for: {exc}") from exc
    same(data, dirtree.leaf_bytes(entry), "a leaf")
    dirtree.materialise(ROOT.root, [entry])


def ask(data: bytes) -> None:
    keys: list[str] | None = None
    with contextlib.suppress(ValueError):  # documented: the hub answers bad_request
        keys = dirtree.read_ask(data)
        same(data, dirtree.encode_ask(keys), "a request")
    DESK.answer_now(ASKER, transport.DirGetMsg(0, ROOT.version, data))
    message = transport.decode(SENT.pop())
    if not isinstance(message, transport.DirEntriesMsg):
        raise AssertionError(f"the hub answered a dir-get with {message!r:.200}")
    answer = dirtree.verify_answer(message.answer, ROOT, keys or [])
    if keys is None:
        if answer.refusal != BAD_REQUEST or answer.entries or answer.absent:
            raise AssertionError(f"keys read_ask refuses were answered: {answer!r:.200}")
        return
    taken = set(answer.entries) | answer.absent
    if answer.refusal is not None or taken != set(keys):
        raise AssertionError(f"asked {keys!r:.200}, the answer accounts for {taken!r:.200}")
    check_sound(answer)


def check_sound(answer: dirtree.Answer) -> None:
    """What a verified answer claims is true of the tree."""
    for key, entry in answer.entries.items():
        if key not in INDEX or ENTRIES[INDEX[key]] != entry:
            raise AssertionError(f"an entry the tree does not hold was taken for {key!r:.80}")
    for key in answer.absent:
        if key in INDEX:
            raise AssertionError(f"{key!r:.80} was taken as absent; the tree holds it")


def verify(data: bytes, asked: Iterable[str]) -> None:
    answer = dirtree.verify_answer(data, ROOT, asked)
    version, root_frame, refusal, outer = dirtree.read_answer(data)
    if isinstance(outer["found"], tuple) and isinstance(outer["absent"], tuple):
        again = dirtree.encode_answer(
            version, root_frame, outer["found"], outer["absent"], refusal, delta=outer["delta"]
        )
        same(data, again, "an answer")
    if answer.version == ROOT.version:
        check_sound(answer)


def answer_keys(data: bytes) -> list[str]:
    """Every key an answer names as absent (so that all it claims is taken and checked)."""
    try:
        _, _, _, outer = dirtree.read_answer(data)
    except XchgError:
        return []
    absent = outer["absent"] if isinstance(outer["absent"], tuple) else ()
    return [a["key"] for a in absent if isinstance(a, dict) and isinstance(a.get("key"), str)]


def forge_item(fdp: atheris.FuzzedDataProvider) -> dict[str, Any] | None:
    if fdp.ConsumeIntInRange(0, 7) == 0:
        return None
    claimed = fdp.ConsumeIntInRange(-1, TREE.size)
    source = fdp.ConsumeIntInRange(0, TREE.size - 1) if fdp.ConsumeBool() else claimed
    source = min(max(source, 0), TREE.size - 1)
    item: dict[str, Any] = {"i": claimed, "leaf": TREE.leaves[source], "path": TREE.proof(source)}
    change = fdp.ConsumeIntInRange(0, 5)
    if change == 1:
        item["leaf"] = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 400))
    elif change == 2:
        item["path"] = item["path"][: fdp.ConsumeIntInRange(0, len(item["path"]))]
    elif change == 3:
        item["path"] = [*item["path"], fdp.ConsumeBytes(32).ljust(32, b"\0")]
    elif change == 4:
        item["path"] = TREE.proof(fdp.ConsumeIntInRange(0, TREE.size - 1))
    return item


def forge_key(fdp: atheris.FuzzedDataProvider) -> str:
    known: str = TREE.keys[fdp.ConsumeIntInRange(0, TREE.size - 1)]
    change = fdp.ConsumeIntInRange(0, 4)
    if change == 0:
        return known
    if change == 1:
        return known + str(fdp.ConsumeUnicodeNoSurrogates(4))
    if change == 2:
        return known[: fdp.ConsumeIntInRange(0, len(known))]
    return str(fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 24)))


def forged(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    found: list[Any] = [forge_item(fdp) for _ in range(fdp.ConsumeIntInRange(0, 3))]
    keys: list[str] = []
    absent: list[dict[str, Any]] = []
    for _ in range(fdp.ConsumeIntInRange(0, 3)):
        keys.append(forge_key(fdp))
        absent.append({"key": keys[-1], "below": forge_item(fdp), "above": forge_item(fdp)})
    version = ROOT.version if fdp.ConsumeIntInRange(0, 7) else fdp.ConsumeIntInRange(0, 3)
    answer = dirtree.encode_answer(version, None, found, absent)
    verify(answer, [*TREE.keys, *keys])


def test_one_input(data: bytes) -> None:
    if not data:
        return
    mode, rest = data[0] % 7, data[1:]
    try:
        if mode == 0:
            publication(rest)
        elif mode == 1:
            root(rest)
        elif mode == 2:
            frame = signed(dirtree.DOMAIN_DIR_DELTA, "delta", rest)
            delta = dirtree.verify_delta(frame, HUB.public, NEXT_ROOT)
            same(rest, codec.encode(delta.to_wire()), "a change")
        elif mode == 3:
            leaf(rest)
        elif mode == 4:
            ask(rest)
        elif mode == 5:
            verify(rest, [*TREE.keys, *answer_keys(rest)])
        else:
            forged(rest)
    except XchgError:
        pass


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
