"""``hubctl audit prove`` and ``hubctl audit restored``: evidence out of the ledger, and the
hub's own statement that its store was restored from a backup.

:func:`prove` gathers one message's entries (the ``audit_by_msg`` index), their inclusion
proofs in the latest stored checkpoint (O(log n) node reads each), the receipts that speak
of it and the witnesses' countersignatures, into an evidence document
(:mod:`schemas.evidence`, docs/wire-format.md 12.5). It never scans the ledger.

:class:`DeclareRestored` appends ``ledger.restored`` through the store's group commit (so
the chain and the tree's nodes are written as for any entry); the running hub then signs
a checkpoint over it, and every witness learns which range was lost, and since when.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, select

from hubd.store import ledger as ledgerstore
from hubd.store import tables as t
from hubd.store.audit import AuditEvent
from hubd.store.connections import read_only_url
from hubd.store.db import Store
from hubd.store.lock import HubLock
from hubd.store.rowwriter import RowWriter
from hubd.store.writes import DirectWrite
from schemas import codec, evidence
from schemas.directory import Directory
from schemas.errors import PeerError
from schemas.ledger import RESTORED_EVENT, Entry, read_checkpoint
from schemas.receipts import ReceiptBatch

HUB_RECEIPT_EVENTS = ("delivery.expired", "delivery.dead")  # hub-signed and stored (12.4)
HUB_RECEIPT_WINDOW_MS = 10 * 60 * 1000  # the issuer signs within moments of the entry

KeyList = list[tuple[str, bytes]]


@dataclass(slots=True)
class Proof:
    """What ``prove`` found: the document, or why there is none."""

    doc: dict[str, Any] | None
    entries: list[Entry] = field(default_factory=list)  # every entry of the message
    proven: int = 0  # how many of them the document proves
    checkpoint_size: int | None = None
    notes: list[str] = field(default_factory=list)  # for stderr: what was left out and why


def _entries(conn: Connection, msg_id: bytes) -> list[Entry]:
    rows = conn.execute(
        select(t.audit.c.seq, t.audit.c.at, t.audit.c.event, t.audit.c.msg_id)
        .add_columns(t.audit.c.org, t.audit.c.detail)
        .where(t.audit.c.msg_id == msg_id)
        .order_by(t.audit.c.seq)
    )
    return [ledgerstore.entry_of(r) for r in rows]


def _decode(frame: bytes) -> ReceiptBatch | None:
    try:
        outer = codec.decode_frame(
            frame,
            codec.RECEIPT_FRAME_LIMITS,
            {"from": str, "kid": str, "rcpt": bytes, "sig": bytes},
        )
        return ReceiptBatch.from_wire(
            codec.decode_map(outer["rcpt"], codec.RECEIPT_LIMITS), what="receipts"
        )
    except PeerError:
        return None


def _receipts(
    conn: Connection, msg_id: bytes, entries: Sequence[Entry], hub_id: str
) -> list[bytes]:
    """Recipients' batches the receipts rows name; the hub's own stored ones (EXPIRED, DEAD)."""
    # A recipient's batch goes in only with its ledger entry (receipt.<status>, 12.4) proven.
    recorded = {(e.event, e.org) for e in entries}
    r = t.receipts
    shas = list(
        dict.fromkeys(
            bytes(row.batch_sha256)
            for row in conn.execute(
                select(r.c.batch_sha256, r.c.recipient, r.c.status).where(r.c.msg_id == msg_id)
            )
            if (f"receipt.{row.status.lower()}", row.recipient) in recorded
        )
    )
    frames = [
        bytes(r[1])
        for r in RowWriter(conn).select_in(t.receipt_batches, ("sha256", "frame"), "sha256", shas)
    ]
    times = [e.at for e in entries if e.event in HUB_RECEIPT_EVENTS]
    origin = conn.execute(
        select(t.messages.c.sender, t.messages.c.arrival_channel).where(
            t.messages.c.msg_id == msg_id
        )
    ).first()
    if times and origin is not None:
        # The outbox has no msg_id column: its rows for the sender on the arrival channel,
        # in the minutes the hub signed them (the primary key's dest and channel lead).
        box = t.receipt_outbox
        rows = conn.execute(
            select(box.c.frame).where(
                box.c.dest == origin.sender,
                box.c.channel == origin.arrival_channel,
                box.c.created_at >= min(times),
                box.c.created_at <= max(times) + HUB_RECEIPT_WINDOW_MS,
            )
        )
        for (frame,) in rows:
            batch = _decode(bytes(frame))
            if (
                batch is not None
                and batch.issuer == hub_id
                and any(e.msg_id == msg_id for e in batch.entries)
            ):
                frames.append(bytes(frame))
    return list(dict.fromkeys(frames))


def _issuer_keys(
    frames: Sequence[bytes], directory: Directory | None, hub_id: str
) -> dict[str, KeyList]:
    keys: dict[str, KeyList] = {}
    if directory is None:
        return keys
    for frame in frames:
        batch = _decode(frame)
        if batch is None or batch.issuer == hub_id:
            continue
        org = directory.org(batch.issuer)
        if org is not None:
            keys[batch.issuer] = [(k.kid, k.public) for k in org.sign_keys]
    return keys


def _witnessed_cover(conn: Connection, last_seq: int) -> ledgerstore.StoredCheckpoint | None:
    """The latest countersigned checkpoint covering every entry up to ``last_seq``: evidence
    with witnesses' signatures says more than the latest checkpoint alone (spokes
    countersign about once an hour)."""
    c, k = t.ledger_cosignatures, t.ledger_checkpoints
    row = conn.execute(
        select(k)
        .where(k.c.size >= last_seq, k.c.size.in_(select(c.c.size).where(c.c.size >= last_seq)))
        .order_by(k.c.size.desc())
        .limit(1)
    ).first()
    return None if row is None else ledgerstore.checkpoint_of_row(row)


def _cosignatures(
    conn: Connection, size: int, directory: Directory | None
) -> tuple[list[tuple[str, str, bytes, bytes]], list[str]]:
    found: list[tuple[str, str, bytes, bytes]] = []
    unknown: list[str] = []
    c = t.ledger_cosignatures
    for r in conn.execute(select(c).where(c.c.size == size).order_by(c.c.org)):
        org = None if directory is None else directory.org(r.org)
        public = next((k.public for k in org.sign_keys if k.kid == r.kid), None) if org else None
        if public is None:
            unknown.append(f"{r.org} ({r.kid})")
            continue
        found.append((r.org, r.kid, public, bytes(r.sig)))
    return found, unknown


def prove(
    conn: Connection,
    msg_id: bytes,
    *,
    hub_keys: KeyList,
    directory: Directory | None,
    now: int,
) -> Proof:
    """The evidence of one message from the store, or why it cannot be given yet."""
    entries = _entries(conn, msg_id)
    if not entries:
        return Proof(None, notes=["the ledger has no entry of this message"])
    latest = _witnessed_cover(conn, entries[-1].seq) or ledgerstore.latest_checkpoint(conn)
    covered = [e for e in entries if latest is not None and e.seq <= latest.size]
    later = [e.seq for e in entries if e not in covered]
    proof = Proof(None, entries, len(covered), None if latest is None else latest.size)
    if later:
        proof.notes.append(
            f"{len(later)} entries (seq {later[0]}..{later[-1]}) came after the latest "
            "checkpoint: they will be provable after the next one, within [ledger] "
            "checkpoint_interval"
        )
    if latest is None or not covered:
        return proof
    signed = read_checkpoint(latest.frame)
    hub_id = signed.checkpoint.hub_id
    paths = ledgerstore.inclusions(conn, [e.index for e in covered], latest.size)
    receipts = _receipts(conn, msg_id, covered, hub_id)
    cosigs, unknown = _cosignatures(conn, latest.size, directory)
    if unknown:
        proof.notes.append(
            "countersignatures left out (their key is not in the directory): " + ", ".join(unknown)
        )
    proof.doc = evidence.build(
        msg_id=msg_id,
        made_by=hub_id,
        made_at=now,
        hub_id=hub_id,
        hub_keys=hub_keys,
        checkpoint=latest.frame,
        entries=[(e.leaf(), paths[e.index]) for e in covered],
        receipts=receipts,
        keys=_issuer_keys(receipts, directory, hub_id),
        cosignatures=cosigs,
    )
    return proof


async def prove_from_store(
    url: str, msg_id: bytes, *, hub_keys: KeyList, directory: Directory | None, now: int
) -> Proof:
    """:func:`prove` on the store at ``url``, opened read-only (the hub may be running)."""
    from sqlalchemy.exc import SQLAlchemyError  # noqa: PLC0415

    from hubd.store.connections import engine_for  # noqa: PLC0415
    from schemas.errors import StoreError  # noqa: PLC0415

    engine = engine_for(read_only_url(url))
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(
                lambda sync: prove(sync, msg_id, hub_keys=hub_keys, directory=directory, now=now)
            )
    except (SQLAlchemyError, OSError) as exc:
        raise StoreError(f"cannot read the audit ledger: {exc}", retriable=True) from exc
    finally:
        await engine.dispose()


# ------------------------------------------------------------------ the restore statement


@dataclass(frozen=True, slots=True)
class Declared:
    """The ``ledger.restored`` entry as written."""

    seq: int
    restored_size: int
    detail: dict[str, Any]


@dataclass(slots=True)
class DeclareRestored(DirectWrite):
    """Append ``ledger.restored`` stating the ledger's size as it is at this commit."""

    at: int
    reason: str
    requested_by: dict[str, Any]

    def apply(self, conn: Connection) -> tuple[Declared, list[AuditEvent]]:
        size = ledgerstore.ledger_size(conn)
        latest = ledgerstore.latest_checkpoint(conn)
        detail: dict[str, Any] = {
            "restored_size": size,
            "reason": self.reason,
            "last_checkpoint": None
            if latest is None
            else {"size": latest.size, "root": latest.root.hex(), "at": latest.at},
            "requested_by": self.requested_by,
        }
        return Declared(size + 1, size, detail), [
            AuditEvent(RESTORED_EVENT, self.at, None, None, detail)
        ]


async def declare_restored_offline(
    url: str, lock: HubLock, *, reason: str, now: int, requested_by: dict[str, Any]
) -> Declared:
    """Write the statement into the store of a stopped hub (LockHeldError if one runs)."""
    read_only_url(url)  # raises for a SQLite store that is not there: never create one
    with lock:
        async with Store(url) as store:
            declared: Declared = await store.submit(DeclareRestored(now, reason, requested_by))
            return declared
