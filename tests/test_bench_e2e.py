"""bench/e2e.py's precomputed load (issue 15): what it prepares before the clock starts is
what a real recipient would sign, and covers every document exactly once (the bench itself
is run by hand; no timing is asserted here)."""

from __future__ import annotations

import hashlib

from bench.e2e import RECIPIENTS, SENDERS, _blob, prepare, unverified_receipts
from schemas import transport
from schemas.envelope import verify_envelope
from schemas.receipts import ReceiptStatus, verify_receipts
from tests.hubproc import live_directory
from tests.world import make_world


def test_precomputed_answers_cover_every_document_once_with_batches_the_hub_accepts() -> None:
    world = make_world()
    directory = live_directory(world)
    senders, recipients = SENDERS[:2], RECIPIENTS[:2]
    sent, answers = prepare(_blob(world, directory), senders, recipients, 9, 4)

    frames: dict[str, set[bytes]] = {org: set() for org in recipients}  # digests per recipient
    for org in senders:
        assert len(sent[org]) == 9
        for msg_id, payload in sent[org]:
            msg = transport.decode(payload)
            assert isinstance(msg, transport.EnvelopeMsg)
            envelope = verify_envelope(msg.frame, directory, expected_sender=org)
            assert envelope.header.msg_id == msg_id
            (recipient,) = envelope.header.to
            frames[recipient].add(envelope.digest)
    for org in recipients:
        mine = answers[org]
        assert set(mine.batch_of) == frames[org]  # every delivered frame answers, no other
        assert sum(mine.sizes) == len(frames[org])
        covered: list[bytes] = []
        for index, payload in enumerate(mine.payloads):
            msg = transport.decode(payload)
            assert isinstance(msg, transport.ReceiptsMsg)
            batch = verify_receipts(msg.frame, directory, expected_issuer=org).batch
            assert unverified_receipts(msg.frame) == batch
            assert len(batch.entries) == mine.sizes[index] <= 4
            assert {e.status for e in batch.entries} == {ReceiptStatus.DELIVERED}
            assert len({e.msg_id for e in batch.entries}) == len(batch.entries)
            for entry in batch.entries:
                assert mine.batch_of[entry.subject] == index
                covered.append(entry.subject)
        assert sorted(covered) == sorted(frames[org])
        assert all(len(d) == len(hashlib.sha256().digest()) for d in covered)
