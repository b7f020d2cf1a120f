"""The append-only audit ledger: each entry carries the hash of the one before.

``hash(n) = SHA-256("xchg/v1/audit\\0" || prev_hash || canon[seq, at, event, msg_id, org,
detail])``. Editing, inserting or deleting a row breaks the chain at that row;
:func:`verify_chain` says where. Details are JSON without titles or content.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from schemas import codec

DOMAIN_AUDIT = b"xchg/v1/audit\x00"
GENESIS = bytes(32)


@dataclass(frozen=True, slots=True)
class AuditEvent:
    event: str
    at: int
    msg_id: bytes | None = None
    org: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


def chain_hash(
    prev: bytes,
    *,
    seq: int,
    at: int,
    event: str,
    msg_id: bytes | None,
    org: str | None,
    detail: str,
) -> bytes:
    return chain_hash_of(prev, codec.encode([seq, at, event, msg_id, org, detail]))


def chain_hash_of(prev: bytes, entry: bytes) -> bytes:
    """The chain link over an entry already encoded (schemas.ledger.Entry.leaf: the same
    bytes are the entry's leaf in the ledger's Merkle tree)."""
    return hashlib.sha256(DOMAIN_AUDIT + prev + entry).digest()


@dataclass(frozen=True, slots=True)
class AuditRow:
    seq: int
    at: int
    event: str
    msg_id: bytes | None
    org: str | None
    detail: str
    prev_hash: bytes
    hash: bytes

    @classmethod
    def from_row(cls, r: Any) -> AuditRow:
        """From a row of the ``audit`` table (hubd.store.tables)."""
        return cls(
            seq=int(r.seq),
            at=int(r.at),
            event=r.event,
            msg_id=None if r.msg_id is None else bytes(r.msg_id),
            org=r.org,
            detail=r.detail,
            prev_hash=bytes(r.prev_hash),
            hash=bytes(r.hash),
        )


@dataclass(frozen=True, slots=True)
class ChainProblem:
    seq: int
    problem: str


def verify_chain(rows: Iterable[AuditRow]) -> tuple[int, list[ChainProblem]]:
    """Walk the ledger in seq order; return (rows checked, problems found).

    An edited row no longer matches its own hash; an inserted or deleted row breaks the
    link (prev_hash) or the numbering of the row after it.
    """
    problems: list[ChainProblem] = []
    expected_prev, expected_seq, count = GENESIS, 1, 0
    for row in rows:
        count += 1
        if row.seq != expected_seq:
            kind = (
                "missing rows before it (deleted?)"
                if row.seq > expected_seq
                else "repeats a number"
            )
            problems.append(ChainProblem(row.seq, f"expected seq {expected_seq}; {kind}"))
        if row.prev_hash != expected_prev:
            problems.append(
                ChainProblem(
                    row.seq, "does not link to the row before it (inserted or deleted rows)"
                )
            )
        digest = chain_hash(
            row.prev_hash,
            seq=row.seq,
            at=row.at,
            event=row.event,
            msg_id=row.msg_id,
            org=row.org,
            detail=row.detail,
        )
        if digest != row.hash:
            problems.append(ChainProblem(row.seq, "its content does not match its hash (edited)"))
        expected_prev, expected_seq = row.hash, row.seq + 1
    return count, problems
