"""Evidence files built and verified with the project's code (the independent verifier is
tests/evidence/)."""

from __future__ import annotations

import hashlib
import json

import pytest

from schemas import evidence, merkle
from schemas.keys import SigningKey
from schemas.labels import Classification
from schemas.ledger import Checkpoint, Entry, cosign, read_checkpoint, sign_checkpoint
from schemas.receipts import ReceiptEntry, ReceiptStatus, sign_receipts

HUB = SigningKey(b"\x01" * 32)
RECIPIENT = SigningKey(b"\x04" * 32)
MSG = bytes(range(16))
FRAME_SHA = hashlib.sha256(b"the envelope frame").digest()


def _ledger() -> tuple[list[Entry], bytes, bytes]:
    """Ten entries, three of them about MSG, and the recipient's DELIVERED batch."""
    delivered = sign_receipts(
        "jl.cc",
        RECIPIENT,
        [
            ReceiptEntry(
                msg_id=MSG, recipient="jl.cc", status=ReceiptStatus.DELIVERED, at=5,
                subject=FRAME_SHA, classification=Classification.INTERNAL, reason=None, detail=None,
                retriable=False,
            )
        ],
        at=5,
    )  # fmt: skip
    batch = hashlib.sha256(delivered).hexdigest()
    entries = [Entry(i + 1, i, "directory.loaded", None, "hub", "{}") for i in range(10)]
    entries[3] = Entry(
        4, 3, "message.accepted", MSG, "jl.gov", json.dumps({"frame_sha256": FRAME_SHA.hex()})
    )
    entries[6] = Entry(7, 6, "delivery.sent", MSG, "jl.cc", "{}")
    entries[8] = Entry(9, 8, "receipt.delivered", MSG, "jl.cc", json.dumps({"batch_sha256": batch}))
    tree = merkle.Frontier()
    for e in entries:
        tree.append(e.leaf_hash())
    ckpt = sign_checkpoint(Checkpoint("hub", 10, tree.root(), 20), HUB)
    return entries, ckpt, delivered


def _doc() -> dict[str, object]:
    entries, ckpt, delivered = _ledger()
    hashes = [e.leaf_hash() for e in entries]

    def node(level: int, index: int) -> bytes:
        return merkle.root_of(hashes[index << level : (index + 1) << level])

    ours = [e for e in entries if e.msg_id == MSG]
    accepted = sign_receipts(
        "hub",
        HUB,
        [
            ReceiptEntry(
                msg_id=MSG, recipient=None, status=ReceiptStatus.ACCEPTED, at=3,
                subject=FRAME_SHA, classification=Classification.INTERNAL, reason=None, detail=None,
                retriable=False,
            )
        ],
        at=3,
    )  # fmt: skip
    return evidence.build(
        msg_id=MSG,
        made_by="jl.gov",
        made_at=30,
        hub_id="hub",
        hub_keys=[(HUB.kid, HUB.public)],
        checkpoint=ckpt,
        entries=[(e.leaf(), merkle.inclusion_proof(e.index, 10, node)) for e in ours],
        receipts=[accepted, delivered],
        keys={"jl.cc": [(RECIPIENT.kid, RECIPIENT.public)]},
    )


def test_evidence_of_an_accepted_and_delivered_message_verifies_and_ties_each_receipt() -> None:
    report = evidence.verify(evidence.loads(evidence.dumps(_doc())), trusted_hub_keys=[HUB.public])
    assert report.ok, report.problems
    assert [e.event for e in report.entries] == [
        "message.accepted", "delivery.sent", "receipt.delivered"
    ]  # fmt: skip
    assert {(r.status, r.entry_seq) for r in report.receipts} == {
        (ReceiptStatus.ACCEPTED, 4),
        (ReceiptStatus.DELIVERED, 9),
    }


def test_an_edited_entry_no_longer_verifies() -> None:
    doc = _doc()
    entries = doc["entries"]
    assert isinstance(entries, list)
    entry = Entry.from_leaf(evidence._unb64(entries[1]["leaf"], "leaf"))
    forged = Entry(entry.seq, entry.at, "delivery.dead", entry.msg_id, entry.org, entry.detail)
    entries[1]["leaf"] = evidence._b64(forged.leaf())
    report = evidence.verify(doc, trusted_hub_keys=None)
    assert not report.ok
    assert "not proven to be in the ledger" in report.problems[0]


def test_a_checkpoint_signed_by_a_key_the_verifier_does_not_trust_is_reported() -> None:
    report = evidence.verify(_doc(), trusted_hub_keys=[RECIPIENT.public])
    assert any("not the hub key you trust" in p for p in report.problems)


def test_a_receipt_without_its_ledger_entry_is_reported() -> None:
    doc = _doc()
    entries = doc["entries"]
    assert isinstance(entries, list)
    del entries[2]  # the receipt.delivered entry
    report = evidence.verify(doc, trusted_hub_keys=None)
    assert any("DELIVERED for jl.cc" in p and "no ledger entry" in p for p in report.problems)


def test_a_receipt_under_a_key_the_file_made_up_is_reported_against_the_directory() -> None:
    """A hub operator forging SIGNED_FOR lists a key of their own for the recipient."""
    doc = _doc()
    forger = SigningKey(b"\x09" * 32)
    keys = doc["keys"]
    assert isinstance(keys, dict)
    keys["jl.cc"] = [{"kid": forger.kid, "public": evidence._b64(forger.public)}]
    receipts = doc["receipts"]
    assert isinstance(receipts, list)
    receipts[1] = evidence._b64(
        sign_receipts(
            "jl.cc",
            forger,
            [
                ReceiptEntry(
                    msg_id=MSG, recipient="jl.cc", status=ReceiptStatus.DELIVERED, at=5,
                    subject=FRAME_SHA, classification=Classification.INTERNAL, reason=None,
                    detail=None, retriable=False,
                )
            ],
            at=5,
        )
    )  # fmt: skip
    trusting_the_file = evidence.verify(doc, trusted_hub_keys=[HUB.public])
    assert not any("directory you trust" in p for p in trusting_the_file.problems)
    report = evidence.verify(
        doc, trusted_hub_keys=[HUB.public], trusted_keys={"jl.cc": {RECIPIENT.public}}
    )
    assert any("not a key of jl.cc in the directory you trust" in p for p in report.problems)


def test_a_cosignature_under_a_key_the_directory_does_not_give_is_reported() -> None:
    _entries, ckpt, _ = _ledger()
    doc = _doc()
    forger = SigningKey(b"\x09" * 32)
    signed = read_checkpoint(ckpt)
    doc["cosignatures"] = [
        {
            "org": "jl.cc",
            "kid": forger.kid,
            "public": evidence._b64(forger.public),
            "sig": evidence._b64(cosign(signed, forger)),
        }
    ]
    assert evidence.verify(doc, trusted_hub_keys=[HUB.public]).cosigners == ["jl.cc"]
    report = evidence.verify(
        doc, trusted_hub_keys=[HUB.public], trusted_keys={"jl.cc": {RECIPIENT.public}}
    )
    assert report.cosigners == []
    assert any("does not give it" in p for p in report.problems)


def test_a_path_of_hashes_that_are_not_32_bytes_is_refused() -> None:
    doc = _doc()
    entries = doc["entries"]
    assert isinstance(entries, list)
    entries[0]["path"] = [*entries[0]["path"], evidence._b64(b"short")]
    report = evidence.verify(doc, trusted_hub_keys=[HUB.public])
    assert any("a path is at most 64 hashes of 32 bytes" in p for p in report.problems)


@pytest.mark.parametrize(
    "text", ["[]", '{"format": "other"}', "[" * 100_000, '{"format": "govxchg-evidence/1"']
)
def test_what_is_not_an_evidence_file_is_refused_in_one_sentence(text: str) -> None:
    with pytest.raises(evidence.EvidenceError):
        evidence.loads(text)
