"""Fuzz target: one MQTT payload on an up or down topic, as the hub and a spoke read it.

Input: the payload. ``transport.decode`` first, as both daemons do for every message; a
refusal must become the REJECTED receipt the hub signs for unreadable bytes. Then what
each message leads to that needs no I/O: an envelope frame is verified with the slots
beside it (the hub's view, topic owner jl.gov; the directory has the counties a large
group goes to), a receipt batch is verified as the hub does (issuer jl.cc) and as a spoke
does, and the ledger's messages are read as the spoke's witness and prover read
them (checkpoint frames, proofs, leaves, proof entries); a directory request's keys are
read as the hub reads them and a directory answer is verified against the fixture's root
(schemas.dirtree; fuzz_dirtree goes further). Signatures are not satisfied
here (fuzz_envelope, fuzz_receipts and fuzz_ledger sign what they fuzz).
The documented failure is an ``XchgError``; anything else escaping is a crash.
"""

from __future__ import annotations

import contextlib
import sys

import atheris

with atheris.instrument_imports(include=["schemas", "hubd", "world"]):
    import world

    from schemas import dirtree, transport
    from schemas.envelope import verify_envelope
    from schemas.errors import PeerError, XchgError
    from schemas.ledger import Entry, read_checkpoint, unpack_path
    from schemas.receipts import verify_receipts

DIRECTORY = world.crowded_directory()  # the captured one and the counties slots go to
HUB = world.signing_key(world.HUB)
SERVED, _ = world.served()
ROOT = dirtree.verify_root(SERVED.root_frame, HUB.public, now=None)


def follow(message: transport.TransportMsg) -> None:
    match message:
        case transport.EnvelopeMsg(frame, _body, slots):
            verify_envelope(frame, DIRECTORY, expected_sender="jl.gov", slots=slots)
        case transport.ReceiptsMsg(frame, _seq):
            try:
                verify_receipts(frame, DIRECTORY, expected_issuer="jl.cc")
            finally:
                verify_receipts(frame, DIRECTORY)
        case transport.CheckpointMsg(frame, _prev, proof):
            try:
                read_checkpoint(frame)
            finally:
                unpack_path(proof)
        case transport.ConsistencyMsg(_old, _new, proof, leaf, path):
            if proof is not None:
                unpack_path(proof)
            if leaf is not None and path is not None:
                Entry.from_leaf(leaf).details()
                unpack_path(path)
        case transport.ProofMsg(_msg_id, checkpoint, entries, _more, _refusal):
            if checkpoint is not None:
                read_checkpoint(checkpoint)
            if entries is not None:
                for leaf, path in transport.decode_proof_entries(entries):
                    Entry.from_leaf(leaf).details()
                    unpack_path(path)
        case transport.DirGetMsg(_ask, _version, keys):
            with contextlib.suppress(ValueError):  # documented: the hub answers bad_request
                dirtree.read_ask(keys)
        case transport.DirEntriesMsg(_ask, answer):
            dirtree.verify_answer(answer, ROOT, SERVED.tree.keys)


def test_one_input(data: bytes) -> None:
    try:
        message = transport.decode(data)
    except PeerError as exc:
        world.refusal_receipt(exc, data)
        return
    if transport.encode(message) != data:
        raise AssertionError(f"decode accepted bytes encode does not give back: {message!r:.200}")
    try:
        follow(message)
    except PeerError as exc:
        world.refusal_receipt(exc, data)
    except XchgError:
        pass


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
