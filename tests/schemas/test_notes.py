"""Notes on flow statements (schemas.notes): readable with the document's note key only,
bound to their document, status and issuer; and the version 2 receipt batches that carry
them (schemas.receipts)."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from schemas import codec
from schemas.errors import PeerError, SchemaError, UsageError
from schemas.keys import DOMAIN_RECEIPT
from schemas.notes import MAX_CHARS, note_key, open_note, seal_note
from schemas.receipts import ReceiptEntry, ReceiptStatus, sign_receipts, verify_receipts
from tests.world import World

KEY = note_key(b"\x01" * 32)
MSG = bytes(range(16))
NOW = 1_795_000_000_000


def test_a_note_opens_with_its_documents_key_and_reads_as_written() -> None:
    note = seal_note(
        KEY, "附件有误，请删除。\nWrong attachment.", msg_id=MSG, status="RECALL", issuer="jl.gov"
    )
    assert open_note(KEY, note, msg_id=MSG, status="RECALL", issuer="jl.gov") == (
        "附件有误，请删除。\nWrong attachment."
    )
    assert b"\xe9\x99\x84" not in note, "the words do not travel in clear"


@pytest.mark.parametrize(
    "change",
    [
        {"key": note_key(b"\x02" * 32)},
        {"msg_id": bytes(16)},
        {"status": "RETURNED"},
        {"issuer": "jl.cc"},
    ],
    ids=["another document's key", "another msg_id", "another status", "another issuer"],
)
def test_a_note_moved_to_another_document_status_or_issuer_does_not_open(
    change: dict[str, object],
) -> None:
    note = seal_note(KEY, "理由", msg_id=MSG, status="RECALL", issuer="jl.gov")
    args: dict[str, object] = {"msg_id": MSG, "status": "RECALL", "issuer": "jl.gov"} | change
    key = args.pop("key", KEY)
    with pytest.raises(PeerError) as caught:
        open_note(key, note, **args)  # type: ignore[arg-type]
    assert caught.value.reason.value == "flow.bad_note"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("x" * (MAX_CHARS + 1), "at most 2000"),
        ("a\x07b", "U+0007"),
    ],
)
def test_a_note_that_says_nothing_or_too_much_is_refused_before_sealing(
    text: str, problem: str
) -> None:
    with pytest.raises(UsageError, match=re.escape(problem)):
        seal_note(KEY, text, msg_id=MSG, status="RECALL", issuer="jl.gov")


def entry(status: ReceiptStatus, recipient: str | None, note: bytes | None = None) -> ReceiptEntry:
    return ReceiptEntry(
        msg_id=MSG,
        recipient=recipient,
        status=status,
        at=NOW,
        subject=bytes(32),
        classification="INTERNAL",  # type: ignore[arg-type]
        reason=None,
        detail=None,
        retriable=False,
        note=note,
    )


def test_a_transport_batch_stays_version_1_and_a_flow_statement_is_version_2(world: World) -> None:
    keys = world.keys["jl.cc"].signing
    plain = sign_receipts("jl.cc", keys, [entry(ReceiptStatus.DELIVERED, "jl.cc")], at=NOW)
    rcpt = codec.decode_map(
        codec.decode_map(plain, codec.RECEIPT_FRAME_LIMITS)["rcpt"], codec.RECEIPT_LIMITS
    )
    assert rcpt["v"] == 1
    assert "note" not in rcpt["entries"][0]
    note = seal_note(KEY, "非我单位", msg_id=MSG, status="RETURNED", issuer="jl.cc")
    flow = sign_receipts("jl.cc", keys, [entry(ReceiptStatus.RETURNED, "jl.cc", note)], at=NOW)
    verified = verify_receipts(flow, world.directory)
    assert verified.batch.v == 2
    assert verified.batch.entries[0].note == note


def test_a_sender_recalls_for_the_document_as_a_whole_and_only_alone(world: World) -> None:
    keys = world.keys["jl.gov"].signing
    recall = sign_receipts("jl.gov", keys, [entry(ReceiptStatus.RECALL, None)], at=NOW)
    assert verify_receipts(recall, world.directory).batch.entries[0].recipient is None
    with pytest.raises(ValidationError, match="no recipient"):
        entry(ReceiptStatus.RECALL, "jl.cc")
    two = [entry(ReceiptStatus.RECALL, None), entry(ReceiptStatus.DELIVERED, "jl.gov")]
    with pytest.raises(UsageError, match="alone"):
        sign_receipts("jl.gov", keys, two, at=NOW)


def test_a_note_on_a_transport_status_is_refused() -> None:
    note = seal_note(KEY, "x", msg_id=MSG, status="DELIVERED", issuer="jl.cc")
    with pytest.raises(ValidationError, match="carries no note"):
        entry(ReceiptStatus.DELIVERED, "jl.cc", note)


def test_a_version_1_batch_with_a_flow_status_or_a_note_key_is_refused(world: World) -> None:
    key = world.keys["jl.cc"].signing

    def signed(v: int, item: dict[str, object]) -> bytes:
        body = codec.encode(
            {"v": v, "issuer": "jl.cc", "issuer_kid": key.kid, "at": NOW, "entries": [item]}
        )
        return codec.encode(
            {
                "v": 1,
                "from": "jl.cc",
                "kid": key.kid,
                "rcpt": body,
                "sig": key.sign(DOMAIN_RECEIPT, body),
            }
        )

    returned = entry(ReceiptStatus.RETURNED, "jl.cc").to_wire()
    del returned["note"]
    with pytest.raises(SchemaError, match="version 2"):
        verify_receipts(signed(1, returned), world.directory)
    delivered = entry(ReceiptStatus.DELIVERED, "jl.cc").to_wire()
    with pytest.raises(SchemaError, match="version 1 batch's none"):
        verify_receipts(signed(1, delivered), world.directory)
    del delivered["note"]
    with pytest.raises(SchemaError, match="carry a note"):
        verify_receipts(signed(2, delivered), world.directory)
    delivered["note"] = None  # what version 1 can say is never sent as version 2
    with pytest.raises(SchemaError, match="is version 1"):
        verify_receipts(signed(2, delivered), world.directory)
