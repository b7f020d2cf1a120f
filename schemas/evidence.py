"""Evidence files: one message's ledger entries, proofs, checkpoint and receipts, in JSON.

``spoke prove`` and ``hubctl audit prove`` write them (:func:`build`, :func:`dumps`);
anyone verifies them offline (:func:`verify`; docs/wire-format.md, section 12.5, is the
procedure, short enough to implement without this code). Pure: no I/O.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from schemas import codec, merkle
from schemas.directory import Directory
from schemas.errors import PeerError, Reason, SchemaError
from schemas.keys import DOMAIN_RECEIPT, KeyKind, key_id, verify_signature
from schemas.ledger import (
    PATH_MAX,
    Entry,
    SignedCheckpoint,
    read_checkpoint,
    verify_checkpoint,
    verify_cosignature,
)
from schemas.receipts import ReceiptBatch, ReceiptEntry, ReceiptStatus

FORMAT = "govxchg-evidence/1"
MAX_BYTES = 64 * 1024 * 1024  # an evidence file is read whole: refuse anything larger

# Which ledger entry records which receipt (docs/wire-format.md, 12.4).
# An organisation's own statements (DELIVERED, SIGNED_FOR, and the flows of 6.1: RECALL by
# the sender, the recipients' answers, returns and reports) are recorded alike.
STATEMENTS = frozenset(s for s in ReceiptStatus if not s.issued_by_hub)
EVENT_OF = {
    ReceiptStatus.ACCEPTED: ("message.accepted",),
    ReceiptStatus.REJECTED: ("message.rejected", "message.quarantined"),
    ReceiptStatus.EXPIRED: ("delivery.expired",),
    ReceiptStatus.DEAD: ("delivery.dead",),
    ReceiptStatus.RECALLED: ("delivery.recalled", "receipt.recall"),
    ReceiptStatus.REFUSED: ("flow.refused",),
    ReceiptStatus.REMINDED: ("deadline.reminded",),
    **{s: (f"receipt.{s.value.lower()}",) for s in STATEMENTS},
}


class EvidenceError(SchemaError):
    """An evidence file that is not one (unreadable, wrong format, malformed values)."""

    def __init__(self, message: str) -> None:
        super().__init__(Reason.SCHEMA_INVALID, message)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise EvidenceError(f"{what} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise EvidenceError(f"{what} is not standard base64 with padding") from exc


def _keys(keys: Sequence[tuple[str, bytes]]) -> list[dict[str, str]]:
    return [{"kid": kid, "public": _b64(public)} for kid, public in keys]


def build(
    *,
    msg_id: bytes,
    made_by: str,
    made_at: int,
    hub_id: str,
    hub_keys: Sequence[tuple[str, bytes]],
    checkpoint: bytes,
    entries: Sequence[tuple[bytes, Sequence[bytes]]],
    receipts: Sequence[bytes] = (),
    keys: Mapping[str, Sequence[tuple[str, bytes]]] | None = None,
    cosignatures: Sequence[tuple[str, str, bytes, bytes]] = (),
) -> dict[str, Any]:
    """The evidence document (a JSON-ready dict) in the order of section 12.5."""
    return {
        "format": FORMAT,
        "msg_id": msg_id.hex(),
        "made_by": made_by,
        "made_at": made_at,
        "hub_id": hub_id,
        "hub_keys": _keys(hub_keys),
        "checkpoint": _b64(checkpoint),
        "entries": [
            {"leaf": _b64(leaf), "path": [_b64(p) for p in path]} for leaf, path in entries
        ],
        "receipts": [_b64(frame) for frame in dict.fromkeys(receipts)],
        "keys": {org: _keys(k) for org, k in sorted((keys or {}).items())},
        "cosignatures": [
            {"org": org, "kid": kid, "public": _b64(public), "sig": _b64(sig)}
            for org, kid, public, sig in cosignatures
        ],
    }


def dumps(doc: Mapping[str, Any]) -> str:
    return json.dumps(doc, ensure_ascii=False, indent=2) + "\n"


def loads(data: bytes | str) -> dict[str, Any]:
    """Parse an evidence file: size-limited, a JSON object of this format."""
    raw = data.encode() if isinstance(data, str) else data
    if len(raw) > MAX_BYTES:
        raise EvidenceError(
            f"the file is {len(raw)} bytes; an evidence file is at most {MAX_BYTES}"
        )
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise EvidenceError(f"not JSON: {str(exc)[:200]}") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise EvidenceError(f'not an evidence file: "format" must be "{FORMAT}"')
    return doc


def checkpoint_frame(doc: Mapping[str, Any]) -> bytes:
    """The checkpoint frame an evidence document carries (its signature not checked)."""
    frame = _unb64(doc.get("checkpoint"), "checkpoint")
    try:
        read_checkpoint(frame)
    except PeerError as exc:
        raise EvidenceError(f"checkpoint: {exc.message}") from exc
    return frame


# ---------------------------------------------------------------- verification


def organisation_keys(directory: Directory) -> dict[str, set[bytes]]:
    """Each organisation's signing keys as ``directory`` lists them (for ``trusted_keys``);
    a receipt signed before a key was revoked or rotated out still verifies under it."""
    return {org.id: {k.public for k in org.sign_keys} for org in directory.orgs}


@dataclass(frozen=True, slots=True)
class ProvenReceipt:
    issuer: str
    status: ReceiptStatus
    recipient: str | None
    at: int
    entry_seq: int | None  # the ledger entry that records it; None if the file has none


@dataclass(slots=True)
class Report:
    msg_id: bytes
    checkpoint: SignedCheckpoint
    entries: list[Entry] = field(default_factory=list)
    receipts: list[ProvenReceipt] = field(default_factory=list)
    cosigners: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _key_table(value: object, what: str) -> dict[str, bytes]:
    if not isinstance(value, list):
        raise EvidenceError(f"{what} must be a list of {{kid, public}}")
    table: dict[str, bytes] = {}
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("kid"), str):
            raise EvidenceError(f"{what}: each key is {{kid, public}}")
        public = _unb64(item.get("public"), f"{what} {item['kid']!r:.20}")
        if len(public) != 32 or key_id(KeyKind.SIGN, public) != item["kid"]:
            raise EvidenceError(f"{what}: kid {item['kid']!r:.20} does not name its public key")
        table[item["kid"]] = public
    return table


def verify(
    doc: Mapping[str, Any],
    *,
    trusted_hub_keys: Sequence[bytes] | None,
    trusted_keys: Mapping[str, Collection[bytes]] | None = None,
) -> Report:
    """Check an evidence document; ``Report.problems`` lists what does not hold.

    ``trusted_hub_keys``: the hub's public keys as the verifier knows them (the directory);
    the checkpoint and the hub's receipts must be signed by one of them, not merely by a
    key the file itself lists. None trusts the file's own ``hub_keys`` (say so to whoever
    reads the result). ``trusted_keys``: each organisation's signing keys as the verifier
    knows them; when given, a receipt or countersignature under any other key is reported.
    """
    msg_text = doc.get("msg_id")
    try:
        msg_id = bytes.fromhex(msg_text) if isinstance(msg_text, str) else b""
    except ValueError:
        msg_id = b""
    if len(msg_id) != 16:
        raise EvidenceError("msg_id must be 32 hex digits")
    hub_keys = _key_table(doc.get("hub_keys"), "hub_keys")
    frame = _unb64(doc.get("checkpoint"), "checkpoint")
    try:
        unverified = read_checkpoint(frame)
    except PeerError as exc:
        raise EvidenceError(f"checkpoint: {exc.message}") from exc
    public = hub_keys.get(unverified.kid)
    if public is None:
        raise EvidenceError(f"the checkpoint's key {unverified.kid} is not among hub_keys")
    checkpoint = unverified
    report = Report(msg_id, checkpoint)
    try:
        checkpoint = verify_checkpoint(frame, public)
    except PeerError as exc:
        report.problems.append(exc.message)
    if trusted_hub_keys is not None and public not in trusted_hub_keys:
        report.problems.append(
            f"the checkpoint is signed by key {checkpoint.kid}, which is not the hub key you trust"
        )
    if checkpoint.checkpoint.hub_id != doc.get("hub_id"):
        report.problems.append(
            f"the checkpoint is of hub {checkpoint.checkpoint.hub_id}, "
            f"the file says {doc.get('hub_id')!r:.70}"
        )
    _verify_entries(doc.get("entries"), checkpoint, report)
    receipt_hub_keys = (
        {kid: k for kid, k in hub_keys.items() if k in trusted_hub_keys}
        if trusted_hub_keys is not None
        else hub_keys
    )
    _verify_receipts(doc, receipt_hub_keys, trusted_keys, report)
    _verify_cosignatures(doc.get("cosignatures"), checkpoint, trusted_keys, report)
    return report


def _verify_entries(value: object, checkpoint: SignedCheckpoint, report: Report) -> None:
    if not isinstance(value, list) or not value:
        raise EvidenceError("entries must be a non-empty list of {leaf, path}")
    for n, item in enumerate(value, 1):
        if not isinstance(item, dict) or not isinstance(item.get("path"), list):
            raise EvidenceError(f"entries[{n}] must be {{leaf, path}}")
        leaf = _unb64(item.get("leaf"), f"entries[{n}].leaf")
        path = [_unb64(p, f"entries[{n}].path") for p in item["path"]]
        if len(path) > PATH_MAX or any(len(p) != merkle.HASH_SIZE for p in path):
            report.problems.append(
                f"entry {n}: a path is at most {PATH_MAX} hashes of {merkle.HASH_SIZE} bytes"
            )
            continue
        try:
            entry = Entry.from_leaf(leaf)
        except PeerError as exc:
            report.problems.append(f"entry {n}: {exc.message}")
            continue
        if entry.msg_id != report.msg_id:
            report.problems.append(f"entry seq {entry.seq} speaks of another message")
        if not merkle.verify_inclusion(
            entry.index, checkpoint.size, merkle.leaf_hash(leaf), path, checkpoint.root
        ):
            report.problems.append(
                f"entry seq {entry.seq} ({entry.event}) is not proven to be in the ledger of "
                f"size {checkpoint.size}: its inclusion proof does not lead to the signed root"
            )
            continue
        report.entries.append(entry)


def _verify_receipts(
    doc: Mapping[str, Any],
    hub_keys: dict[str, bytes],
    trusted_keys: Mapping[str, Collection[bytes]] | None,
    report: Report,
) -> None:
    frames = doc.get("receipts", [])
    key_map = doc.get("keys", {})
    if not isinstance(frames, list) or not isinstance(key_map, dict):
        raise EvidenceError("receipts must be a list and keys an object")
    org_keys = {org: _key_table(keys, f"keys.{org}") for org, keys in key_map.items()}
    hub_id = report.checkpoint.checkpoint.hub_id
    for n, value in enumerate(frames, 1):
        frame = _unb64(value, f"receipts[{n}]")
        try:
            outer = codec.decode_frame(
                frame,
                codec.RECEIPT_FRAME_LIMITS,
                {"from": str, "kid": str, "rcpt": bytes, "sig": bytes},
            )
            issuer, kid = outer["from"], outer["kid"]
            public = (hub_keys if issuer == hub_id else org_keys.get(issuer, {})).get(kid)
            if public is None:
                report.problems.append(f"receipt {n}: no key {kid:.20} of {issuer:.70} in the file")
                continue
            if (
                issuer != hub_id
                and trusted_keys is not None
                and public not in trusted_keys.get(issuer, ())
            ):
                report.problems.append(
                    f"receipt {n} is signed with key {kid:.20}, which is not a key of "
                    f"{issuer:.70} in the directory you trust"
                )
                continue
            if not verify_signature(public, DOMAIN_RECEIPT, outer["rcpt"], outer["sig"]):
                report.problems.append(f"receipt {n} from {issuer}: its signature does not verify")
                continue
            batch = ReceiptBatch.from_wire(
                codec.decode_map(outer["rcpt"], codec.RECEIPT_LIMITS), what="receipts"
            )
        except PeerError as exc:
            report.problems.append(f"receipt {n}: {exc.message}")
            continue
        if batch.issuer != issuer or batch.issuer_kid != kid:
            report.problems.append(f"receipt {n}: the signed issuer differs from the frame's")
            continue
        digest = hashlib.sha256(frame).digest()
        ours = [e for e in batch.entries if e.msg_id == report.msg_id]
        if not ours:
            report.problems.append(f"receipt {n} from {issuer} does not speak of this message")
        for entry in ours:
            if entry.status.issued_by_hub != (issuer == hub_id):
                report.problems.append(f"receipt {n}: {entry.status} cannot come from {issuer}")
                continue
            spoken_for = None if entry.status.issued_by_sender else issuer
            if not entry.status.issued_by_hub and entry.recipient != spoken_for:
                report.problems.append(
                    f"receipt {n}: {issuer} speaks for {entry.recipient}, not for itself"
                )
                continue
            seq = _recording(report.entries, entry, digest)
            report.receipts.append(
                ProvenReceipt(issuer, entry.status, entry.recipient, entry.at, seq)
            )
            if seq is None:
                report.problems.append(
                    f"{entry.status} for {entry.recipient or 'the message'} (receipt {n}) has "
                    "no ledger entry among the proven ones"
                )


def _recording(entries: Sequence[Entry], receipt: ReceiptEntry, batch_sha256: bytes) -> int | None:
    """The seq of the entry that records this receipt (section 12.4), if proven."""
    status = receipt.status
    for entry in entries:
        if entry.event not in EVENT_OF[status]:
            continue
        detail = entry.details()
        if status in (ReceiptStatus.ACCEPTED, ReceiptStatus.REJECTED):
            if detail.get("frame_sha256") != receipt.subject.hex():
                continue
            if entry.event == "message.rejected" and detail.get("reason") != receipt.reason:
                continue
            return entry.seq
        if status in STATEMENTS:  # said by the entry's org: the batch that says it
            if entry.org == issuer_of(receipt, entry) and (
                detail.get("batch_sha256") == batch_sha256.hex()
            ):
                return entry.seq
        elif status is ReceiptStatus.REFUSED:  # its subject: the refused statement's batch
            if detail.get("batch_sha256") == receipt.subject.hex() and (
                detail.get("reason") == receipt.reason
            ):
                return entry.seq
        elif status is ReceiptStatus.RECALLED and receipt.recipient is None:
            if entry.event == "receipt.recall":  # the recall recorded
                return entry.seq
        elif status is ReceiptStatus.REMINDED:
            kind = (receipt.reason or "").removeprefix("deadline.")
            if entry.org == receipt.recipient and detail.get("kind") == kind:
                return entry.seq
        elif entry.org == receipt.recipient and entry.event != "receipt.recall":
            return entry.seq
    return None


def issuer_of(receipt: ReceiptEntry, entry: Entry) -> str | None:
    """Who must have said ``receipt`` for ``entry`` to record it: the recipient it speaks
    for, or for a sender's statement (RECALL) the entry's own organisation."""
    return entry.org if receipt.status.issued_by_sender else receipt.recipient


def _verify_cosignatures(
    value: object,
    checkpoint: SignedCheckpoint,
    trusted_keys: Mapping[str, Collection[bytes]] | None,
    report: Report,
) -> None:
    if not isinstance(value, list):
        raise EvidenceError("cosignatures must be a list")
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("org"), str):
            raise EvidenceError("each cosignature is {org, kid, public, sig}")
        public = _unb64(item.get("public"), "cosignature public")
        sig = _unb64(item.get("sig"), "cosignature sig")
        if len(public) != 32 or key_id(KeyKind.SIGN, public) != item.get("kid"):
            report.problems.append(f"cosignature of {item['org']:.70}: kid does not name its key")
        elif trusted_keys is not None and public not in trusted_keys.get(item["org"], ()):
            report.problems.append(
                f"cosignature of {item['org']:.70} is under a key the directory you trust "
                "does not give it"
            )
        elif verify_cosignature(checkpoint, public, sig):
            report.cosigners.append(item["org"])
        else:
            report.problems.append(f"cosignature of {item['org']:.70} does not verify")
