"""Signed receipt batches: who may say what, signatures, limits."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import pytest
from pydantic import ValidationError

from schemas import codec
from schemas.errors import Reason, SchemaError, SignatureError, UsageError
from schemas.ids import new_msg_id
from schemas.keys import DOMAIN_HEADER, DOMAIN_RECEIPT, SigningKey
from schemas.labels import Classification
from schemas.receipts import (
    MAX_ENTRIES,
    ReceiptEntry,
    ReceiptStatus,
    sign_receipts,
    subject_of,
    verify_receipts,
)
from tests.world import NOW, World

HUB_STATUSES = (
    ReceiptStatus.ACCEPTED,
    ReceiptStatus.REJECTED,
    ReceiptStatus.EXPIRED,
    ReceiptStatus.DEAD,
)
RECIPIENT_STATUSES = (ReceiptStatus.DELIVERED, ReceiptStatus.SIGNED_FOR)


def entry(
    status: ReceiptStatus,
    recipient: str | None,
    *,
    msg_id: bytes | None = None,
    reason: str | None = None,
    detail: str | None = None,
    retriable: bool = False,
    classification: Classification = Classification.INTERNAL,
    frame: bytes = b"an envelope frame",
) -> ReceiptEntry:
    return ReceiptEntry(
        msg_id=new_msg_id() if msg_id is None else msg_id,
        recipient=recipient,
        status=status,
        at=NOW,
        subject=subject_of(frame),
        classification=classification,
        reason=reason,
        detail=detail,
        retriable=retriable,
    )


def hub_entry(status: ReceiptStatus, n: int = 0) -> ReceiptEntry:
    if status is ReceiptStatus.REJECTED:
        return entry(
            status,
            None,
            reason=Reason.SIG_KEY_REVOKED.value,
            detail=f"key {n:016x} of jl.cc is revoked in directory version 1; "
            "the owner must sign with a new key",
        )
    if status is ReceiptStatus.DEAD:
        return entry(status, "jl.jl", reason="delivery.gave_up", detail="gave up after 20 tries")
    return entry(status, "jl.jl" if status is ReceiptStatus.EXPIRED else None)


def hub_frame(world: World, entries: Sequence[ReceiptEntry]) -> bytes:
    return sign_receipts(world.directory.hub_id, world.hub_key, entries, at=NOW)


def spoke_frame(world: World, issuer: str, entries: Sequence[ReceiptEntry]) -> bytes:
    return sign_receipts(issuer, world.keys[issuer].signing, entries, at=NOW)


def raw_frame(issuer: str, key: SigningKey, body: bytes, domain: bytes = DOMAIN_RECEIPT) -> bytes:
    sig = key.sign(domain, body)
    return codec.encode({"v": 1, "from": issuer, "kid": key.kid, "rcpt": body, "sig": sig})


def raw_body(issuer: str, key: SigningKey, entries: Sequence[ReceiptEntry]) -> bytes:
    """Version 2 when an entry needs it (as sign_receipts chooses), else version 1."""
    v = 2 if any(e.status.flow or e.note is not None for e in entries) else 1
    wire = [e.to_wire() for e in entries]
    if v == 1:
        for item in wire:
            del item["note"]
    return codec.encode(
        {"v": v, "issuer": issuer, "issuer_kid": key.kid, "at": NOW, "entries": wire}
    )


def forged_frame(issuer: str, key: SigningKey, entries: Sequence[ReceiptEntry]) -> bytes:
    """A validly signed batch that sign_receipts itself would refuse to make."""
    return raw_frame(issuer, key, raw_body(issuer, key, entries))


def refusal(frame: bytes, world: World, expected_issuer: str | None = None) -> SignatureError:
    with pytest.raises(SignatureError) as info:
        verify_receipts(frame, world.directory, expected_issuer=expected_issuer)
    return info.value


# ---------------------------------------------------------------- round trips


def test_hub_batch_with_every_hub_status_round_trips(world: World) -> None:
    entries = [hub_entry(status, n) for n in range(3) for status in HUB_STATUSES]
    frame = hub_frame(world, entries)

    verified = verify_receipts(frame, world.directory, expected_issuer=world.directory.hub_id)

    assert verified.frame == frame
    assert verified.batch.issuer == world.directory.hub_id
    assert verified.batch.issuer_kid == world.hub_key.kid
    assert verified.batch.at == NOW
    assert verified.batch.entries == tuple(entries)


def test_recipient_batch_with_every_recipient_status_round_trips(world: World) -> None:
    entries = [entry(status, "jl.cc") for _ in range(3) for status in RECIPIENT_STATUSES]
    frame = spoke_frame(world, "jl.cc", entries)

    verified = verify_receipts(frame, world.directory, expected_issuer="jl.cc")

    assert verified.batch.issuer == "jl.cc"
    assert verified.batch.entries == tuple(entries)
    assert [e.status for e in verified.batch.entries] == [*RECIPIENT_STATUSES] * 3


def test_rejected_entry_carries_reason_code_and_detail_sentence(world: World) -> None:
    detail = "key 0123456789abcdef of jl.cc is revoked; the owner must sign with a new key"
    sent = entry(
        ReceiptStatus.REJECTED,
        None,
        reason=Reason.SIG_KEY_REVOKED.value,
        detail=detail,
        retriable=False,
    )

    (got,) = verify_receipts(hub_frame(world, [sent]), world.directory).batch.entries

    assert got.status is ReceiptStatus.REJECTED
    assert got.reason is not None
    assert Reason(got.reason) is Reason.SIG_KEY_REVOKED
    assert got.detail == detail


def test_retriable_rejection_keeps_its_flag(world: World) -> None:
    sent = entry(
        ReceiptStatus.REJECTED,
        None,
        reason="store.busy",
        detail="the hub's store is busy; send the message again later.",
        retriable=True,
    )

    (got,) = verify_receipts(hub_frame(world, [sent]), world.directory).batch.entries

    assert got.retriable is True


def test_entry_without_msg_id_for_undecodable_input_is_allowed(world: World) -> None:
    sent = ReceiptEntry(
        msg_id=None,
        recipient=None,
        status=ReceiptStatus.REJECTED,
        at=NOW,
        subject=subject_of(b"\xc1 not msgpack"),
        classification=Classification.PUBLIC,
        reason=Reason.DECODE_MALFORMED.value,
        detail="envelope frame is not valid msgpack",
        retriable=False,
    )

    (got,) = verify_receipts(hub_frame(world, [sent]), world.directory).batch.entries

    assert got.msg_id is None
    assert got.subject == hashlib.sha256(b"\xc1 not msgpack").digest()


def test_subject_is_sha256_of_the_exact_frame() -> None:
    frame = b"\x85\xa1v\x01 some envelope frame bytes"

    assert subject_of(frame) == hashlib.sha256(frame).digest()
    assert subject_of(frame + b"\x00") != subject_of(frame)


# ---------------------------------------------------------------- who may say what


@pytest.mark.parametrize("status", HUB_STATUSES, ids=str)
def test_spoke_issuing_a_hub_status_is_the_wrong_issuer(
    world: World, status: ReceiptStatus
) -> None:
    frame = forged_frame(
        "jl.cc",
        world.keys["jl.cc"].signing,
        [
            entry(ReceiptStatus.DELIVERED, "jl.cc"),
            entry(status, "jl.cc", reason="delivery.gave_up", detail="a sentence"),
        ],
    )

    error = refusal(frame, world)

    assert error.reason is Reason.RCPT_WRONG_ISSUER
    assert "jl.cc" in error.message


@pytest.mark.parametrize("status", RECIPIENT_STATUSES, ids=str)
def test_hub_issuing_a_recipient_status_is_the_wrong_issuer(
    world: World, status: ReceiptStatus
) -> None:
    frame = forged_frame(
        world.directory.hub_id,
        world.hub_key,
        [hub_entry(ReceiptStatus.ACCEPTED), entry(status, "jl.cc")],
    )

    assert refusal(frame, world).reason is Reason.RCPT_WRONG_ISSUER


@pytest.mark.parametrize("recipient", ["jl.jl", None])
def test_recipient_speaking_for_another_recipient_is_the_wrong_issuer(
    world: World, recipient: str | None
) -> None:
    entries = [entry(ReceiptStatus.DELIVERED, "jl.cc"), entry(ReceiptStatus.DELIVERED, recipient)]
    frame = forged_frame("jl.cc", world.keys["jl.cc"].signing, entries)

    assert refusal(frame, world).reason is Reason.RCPT_WRONG_ISSUER
    with pytest.raises(UsageError, match="cannot sign DELIVERED"):
        spoke_frame(world, "jl.cc", entries)


def test_receipts_from_another_issuer_than_expected_are_the_wrong_issuer(world: World) -> None:
    frame = spoke_frame(world, "jl.cc", [entry(ReceiptStatus.DELIVERED, "jl.cc")])

    error = refusal(frame, world, expected_issuer="jl.jl")

    assert error.reason is Reason.RCPT_WRONG_ISSUER
    assert "jl.jl" in error.message


def test_signed_issuer_differing_from_the_frame_is_the_wrong_issuer(world: World) -> None:
    key = world.keys["jl.cc"].signing
    body = raw_body("jl.jl", key, [entry(ReceiptStatus.DELIVERED, "jl.jl")])

    assert refusal(raw_frame("jl.cc", key, body), world).reason is Reason.RCPT_WRONG_ISSUER


# ---------------------------------------------------------------- signatures and keys


def test_flipped_byte_in_receipt_body_is_a_bad_signature(world: World) -> None:
    frame = spoke_frame(world, "jl.cc", [entry(ReceiptStatus.DELIVERED, "jl.cc")])
    outer = codec.decode_map(frame, codec.RECEIPT_FRAME_LIMITS)
    body = bytearray(outer["rcpt"])
    body[len(body) // 2] ^= 0x01

    error = refusal(codec.encode({**outer, "rcpt": bytes(body)}), world)

    assert error.reason is Reason.RCPT_BAD_SIGNATURE


def test_signature_by_another_key_under_the_issuers_kid_is_a_bad_signature(world: World) -> None:
    genuine = spoke_frame(world, "jl.cc", [entry(ReceiptStatus.DELIVERED, "jl.cc")])
    outer = codec.decode_map(genuine, codec.RECEIPT_FRAME_LIMITS)
    forged = SigningKey.generate().sign(DOMAIN_RECEIPT, outer["rcpt"])

    error = refusal(codec.encode({**outer, "sig": forged}), world)

    assert error.reason is Reason.RCPT_BAD_SIGNATURE


def test_signature_made_for_another_domain_is_a_bad_signature(world: World) -> None:
    key = world.keys["jl.cc"].signing
    body = raw_body("jl.cc", key, [entry(ReceiptStatus.DELIVERED, "jl.cc")])

    error = refusal(raw_frame("jl.cc", key, body, domain=DOMAIN_HEADER), world)

    assert error.reason is Reason.RCPT_BAD_SIGNATURE


def test_receipts_signed_with_a_revoked_key_are_refused(world: World) -> None:
    kid = world.keys["jl.cc"].signing.kid
    directory = world.rebuild(version=2, revoked=[kid])
    frame = spoke_frame(world, "jl.cc", [entry(ReceiptStatus.DELIVERED, "jl.cc")])

    with pytest.raises(SignatureError) as info:
        verify_receipts(frame, directory)

    assert info.value.reason is Reason.SIG_KEY_REVOKED


def test_receipts_signed_after_the_key_expired_are_refused(world: World) -> None:
    directory = world.rebuild(version=2, not_after=NOW)
    frame = spoke_frame(world, "jl.cc", [entry(ReceiptStatus.DELIVERED, "jl.cc")])

    with pytest.raises(SignatureError) as info:
        verify_receipts(frame, directory)

    assert info.value.reason is Reason.SIG_KEY_EXPIRED


def test_receipts_from_an_unknown_issuer_are_refused(world: World) -> None:
    frame = sign_receipts(
        "jl.ghost", SigningKey.generate(), [entry(ReceiptStatus.DELIVERED, "jl.ghost")], at=NOW
    )

    assert refusal(frame, world).reason is Reason.SIG_UNKNOWN_SENDER


# ---------------------------------------------------------------- batch size


def test_verifying_an_empty_batch_is_a_schema_error(world: World) -> None:
    key = world.keys["jl.cc"].signing
    frame = raw_frame("jl.cc", key, raw_body("jl.cc", key, []))

    with pytest.raises(SchemaError) as info:
        verify_receipts(frame, world.directory)

    assert "entries" in info.value.message


def test_verifying_a_batch_over_max_entries_is_a_schema_error(world: World) -> None:
    key = world.keys["jl.cc"].signing
    one = entry(ReceiptStatus.DELIVERED, "jl.cc")
    frame = raw_frame("jl.cc", key, raw_body("jl.cc", key, [one] * (MAX_ENTRIES + 1)))

    with pytest.raises(SchemaError) as info:
        verify_receipts(frame, world.directory)

    assert "entries" in info.value.message


def test_batch_of_exactly_max_entries_verifies(world: World) -> None:
    one = entry(ReceiptStatus.DELIVERED, "jl.cc")
    frame = spoke_frame(world, "jl.cc", [one] * MAX_ENTRIES)

    assert len(verify_receipts(frame, world.directory).batch.entries) == MAX_ENTRIES


def test_signing_an_empty_batch_is_refused_as_our_own_misuse(world: World) -> None:
    with pytest.raises(UsageError, match="at least 1"):
        spoke_frame(world, "jl.cc", [])


def test_signing_a_batch_over_max_entries_is_refused_as_our_own_misuse(world: World) -> None:
    one = entry(ReceiptStatus.DELIVERED, "jl.cc")

    with pytest.raises(UsageError, match="at most 5000"):
        spoke_frame(world, "jl.cc", [one] * (MAX_ENTRIES + 1))


@pytest.mark.parametrize("status", [ReceiptStatus.REJECTED, ReceiptStatus.DEAD], ids=str)
def test_refusal_receipt_without_reason_and_sentence_cannot_be_made(status: ReceiptStatus) -> None:
    with pytest.raises(ValidationError, match="reason code and a sentence"):
        entry(status, None)


def test_reason_must_look_like_a_reason_code(world: World) -> None:
    with pytest.raises(ValidationError):
        entry(ReceiptStatus.REJECTED, None, reason="Bad Reason!", detail="a sentence")
