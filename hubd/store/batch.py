"""What one group commit writes (:class:`hubd.store.db.Store`): the operations of a batch,
planned in order into rows, the audit chain and its tree extended, receipt batches
numbered, all in one transaction; on a store shared by replicas, under the writers' lock
and from where the chain stands (:mod:`hubd.store.shared`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, bindparam, update

from hubd.core.deadlines import Handling
from hubd.core.states import DeliveryState, MessageState
from hubd.store import ledger as ledgerstore
from hubd.store import shared as sharedstore
from hubd.store import tables as t
from hubd.store.audit import AuditEvent, chain_hash_of
from hubd.store.leases import Fence, lost_pairs
from hubd.store.rowwriter import RowWriter
from hubd.store.writes import (
    AdvanceNumbering,
    Announce,
    DeliveryUpdate,
    DirectWrite,
    Duplicate,
    NewMessage,
    Operation,
    QueueReceipts,
    RecordReceipts,
    Stored,
    UpdateDeliveries,
)
from schemas import merkle
from schemas.ledger import Entry

# An audit entry's detail as the ledger stores it: canonical JSON (sorted keys, no spaces,
# UTF-8 as is). One encoder for every entry: json.dumps with options builds one per call.
_DETAIL = json.JSONEncoder(ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def apply(  # noqa: PLR0917 - run on the writer's thread with positional arguments
    conn: Connection,
    ops: Sequence[Operation],
    seq: int,
    chain: bytes,
    outbox: dict[tuple[str, str], int],
    tree: merkle.Frontier,
) -> tuple[tuple[int, bytes, dict[tuple[str, str], int]], list[Any]]:
    """One transaction for a whole batch, in order. Runs on the writer's connection."""
    batch = Batch(seq, chain, outbox, tree)
    if not conn.in_transaction():
        # Begun explicitly: on SQLite the rows go to the driver directly (hubd.store.rowwriter),
        # and a connection that executed nothing itself would take commit() for a no-op.
        conn.begin()
    try:
        results = batch.plan(conn, ops)  # it reads too: a failed plan must end its transaction
        batch.write(conn)
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return (batch.seq, batch.chain, batch.outbox), results


def apply_shared(  # noqa: PLR0917 - run on the writer's connection, positional arguments
    conn: Connection,
    groups: Sequence[Sequence[Operation]],
    seq: int,
    chain: bytes,
    tree: merkle.Frontier,
    fences: Sequence[Fence | None],
    replica: str,
) -> tuple[
    tuple[tuple[int, bytes, dict[tuple[str, str], int]], list[Any]],
    merkle.Frontier,
    frozenset[tuple[int, int]],
]:
    """:func:`apply` for one of several replicas (:mod:`hubd.store.shared`): under the
    writers' lock, from the chain's head as it stands, the numbering read afresh, the
    operations of callers that lost their leases left out (their buckets returned)."""
    if not conn.in_transaction():
        conn.begin()
    try:
        sharedstore.lock_writers(conn)
        lost = _lost(conn, fences)
        ops = [
            op
            for group, fence in zip(groups, fences, strict=True)
            if not fence_lost(fence, lost)
            for op in group
        ]
        seq, chain, tree = sharedstore.catch_up(conn, seq, chain, tree)
        outbox = sharedstore.numbering(conn, _numbered_keys(ops))
        batch = Batch(seq, chain, outbox, tree)
        results = batch.plan(conn, ops)
        batch.write(conn)
        announced = [m["msg_id"] for m in batch.messages if m["msg_id"] in batch.delivered]
        announced += batch.announced
        if announced:
            sharedstore.announce(conn, announced, replica)
        if batch.recalled:
            sharedstore.announce(conn, batch.recalled, replica, recalled=True)
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return ((batch.seq, batch.chain, batch.outbox), results), batch.tree, lost


def _lost(conn: Connection, fences: Sequence[Fence | None]) -> frozenset[tuple[int, int]]:
    """The (bucket, token) pairs of ``fences`` no longer held; the others stay locked (FOR
    KEY SHARE) until the commit ends, so no claim lands in between."""
    pairs = [pair for fence in fences if fence is not None for pair in fence.tokens.items()]
    replicas = {fence.replica for fence in fences if fence is not None}
    if not replicas:
        return frozenset()
    (replica,) = replicas  # one replica's store: one keeper
    return lost_pairs(conn, replica, pairs)


def fence_lost(fence: Fence | None, lost: frozenset[tuple[int, int]]) -> set[int]:
    """The buckets of ``fence`` among ``lost`` pairs (empty: it stands)."""
    if fence is None or not lost:
        return set()
    return {bucket for bucket, token in fence.tokens.items() if (bucket, token) in lost}


def _numbered_keys(ops: Sequence[Operation]) -> list[tuple[str, str]]:
    keys = []
    for op in ops:
        if isinstance(op, RecordReceipts) and op.forward is not None:
            keys.append(op.forward)
        elif isinstance(op, QueueReceipts | AdvanceNumbering):
            keys.append((op.dest, op.channel))
    return keys


class Batch:
    """The rows one group commit writes, gathered in operation order."""

    def __init__(
        self, seq: int, chain: bytes, outbox: dict[tuple[str, str], int], tree: merkle.Frontier
    ) -> None:
        self.seq, self.chain, self.outbox, self.tree = seq, chain, outbox, tree
        self.audit: list[dict[str, Any]] = []
        self.nodes: list[dict[str, Any]] = []
        self.messages: list[dict[str, Any]] = []
        self.deliveries: list[dict[str, Any]] = []
        self.updates: dict[DeliveryState, list[dict[str, Any]]] = {}
        self.receipts: list[dict[str, Any]] = []
        self.batches: dict[bytes, dict[str, Any]] = {}
        self.queued: list[dict[str, Any]] = []
        self.floors: dict[tuple[str, str], tuple[int, int]] = {}
        self.delivered: set[bytes] = set()  # new messages with deliveries
        self.announced: list[bytes] = []  # messages whose deliveries moved back to PENDING
        self.recalled: list[bytes] = []  # messages their senders recalled
        self.answered: list[dict[str, Any]] = []  # 请示 answered by a stored 批复: DONE
        self.extended: list[dict[str, Any]] = []  # petitions a later one of theirs extends

    def chain_audit(self, events: Sequence[AuditEvent]) -> None:
        for ev in events:
            self.seq += 1
            detail = _DETAIL.encode(ev.detail)
            leaf = Entry(self.seq, ev.at, ev.event, ev.msg_id, ev.org, detail).leaf()
            digest = chain_hash_of(self.chain, leaf)
            self.nodes += ledgerstore.node_rows(self.tree.append(merkle.leaf_hash(leaf)))
            self.audit.append(
                {
                    "seq": self.seq,
                    "at": ev.at,
                    "event": ev.event,
                    "msg_id": ev.msg_id,
                    "org": ev.org,
                    "detail": detail,
                    "prev_hash": self.chain,
                    "hash": digest,
                }
            )
            self.chain = digest

    def plan(self, conn: Connection, ops: Sequence[Operation]) -> list[Any]:
        existing = self._existing(
            conn, [op.row["msg_id"] for op in ops if isinstance(op, NewMessage)]
        )
        results: list[Any] = []
        for op in ops:
            if isinstance(op, NewMessage):
                known = existing.get(op.row["msg_id"])
                if known is not None:
                    results.append(
                        Duplicate(
                            same=known[0] == op.row["frame_sha256"], state=MessageState(known[1])
                        )
                    )
                    continue
                existing[op.row["msg_id"]] = (op.row["frame_sha256"], op.row["state"])
                if op.answers is not None:
                    self.answered.append(
                        {"m": op.answers, "r": op.row["sender"], "at": op.row["received_at"]}
                    )
                if op.extends is not None:
                    self.extended.append(
                        {"m": op.extends, "s": op.row["sender"], "c": op.row.get("case_no")}
                    )
                self.messages.append(op.row)
                self.deliveries.extend(op.deliveries)
                if op.deliveries:
                    self.delivered.add(op.row["msg_id"])
                results.append(Stored())
            elif isinstance(op, UpdateDeliveries):
                self.update(op.updates)
                results.append(None)
            elif isinstance(op, RecordReceipts):
                self.batches[op.sha256] = {
                    "sha256": op.sha256,
                    "issuer": op.issuer,
                    "received_at": op.received_at,
                    "frame": op.frame,
                }
                self.receipts.extend(op.rows)
                self.update(op.updates)
                forward = op.forward
                results.append(
                    None
                    if forward is None
                    else self._number(forward[0], forward[1], op.frame, op.received_at)
                )
            elif isinstance(op, QueueReceipts):
                results.append(self._number(op.dest, op.channel, op.frame, op.created_at))
                continue
            elif isinstance(op, AdvanceNumbering):
                key = (op.dest, op.channel)
                moved = op.floor > self.outbox.get(key, 0)
                if moved:
                    self.outbox[key] = op.floor
                    self.floors[key] = (op.floor, op.at)
                results.append(moved)
                continue
            elif isinstance(op, Announce):
                (self.recalled if op.recalled else self.announced).extend(op.msg_ids)
                results.append(None)
                continue
            elif isinstance(op, DirectWrite):
                result, events = op.apply(conn)
                results.append(result)
                self.chain_audit(events)
                continue
            else:
                results.append(None)
            self.chain_audit(op.audit)
        return results

    def update(self, updates: Sequence[DeliveryUpdate]) -> None:
        for u in updates:
            self.updates.setdefault(u.state, []).append(
                {"m": u.msg_id, "r": u.recipient, "s": u.state.value, "a": u.attempts, "u": u.at}
            )

    def _number(self, dest: str, channel: str, frame: bytes, at: int) -> int:
        """The next outbox number for (dest, channel), written in this same commit."""
        key = (dest, channel)
        self.outbox[key] = number = self.outbox.get(key, 0) + 1
        self.queued.append(
            {"dest": dest, "channel": channel, "seq": number, "created_at": at, "frame": frame}
        )
        return number

    @staticmethod
    def _existing(conn: Connection, ids: list[bytes]) -> dict[bytes, tuple[bytes, str]]:
        if not ids:
            return {}
        rows = RowWriter(conn).select_in(
            t.messages, ("msg_id", "frame_sha256", "state"), "msg_id", ids
        )
        return {bytes(r[0]): (bytes(r[1]), r[2]) for r in rows}

    def write(self, conn: Connection) -> None:
        rows = RowWriter(conn)
        rows.insert(t.messages, self.messages)
        rows.insert(t.deliveries, self.deliveries)
        for state, params in self.updates.items():
            rows.update_deliveries(state, params)
        if self.extended:
            m = t.messages.c
            conn.execute(
                update(t.messages)
                .where(m.msg_id == bindparam("m"), m.sender == bindparam("s"))
                .where(m.case_no == bindparam("c"))
                .values(terms_open=False),
                self.extended,
            )
        if self.answered:
            d = t.deliveries.c
            conn.execute(
                update(t.deliveries)
                .where(d.msg_id == bindparam("m"), d.recipient == bindparam("r"))
                .values(handling=Handling.DONE.value, handled_at=bindparam("at")),
                self.answered,
            )
        if self.batches:
            known = {
                bytes(r[0])
                for r in rows.select_in(t.receipt_batches, ("sha256",), "sha256", self.batches)
            }
            rows.insert(
                t.receipt_batches, [b for sha, b in self.batches.items() if sha not in known]
            )
        rows.insert(t.receipts, self.receipts)
        rows.insert(t.receipt_outbox, self.queued)
        for (dest, channel), (floor, at) in self.floors.items():
            key = {"dest": dest, "channel": channel}
            conn.execute(t.receipt_numbering.delete().filter_by(**key))
            rows.insert(t.receipt_numbering, [{**key, "floor": floor, "set_at": at}])
        rows.insert(t.audit, self.audit)
        rows.insert(t.ledger_nodes, self.nodes)
