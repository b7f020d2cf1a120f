"""Where this hub stands in each neighbour hub's numbered receipt batches (migration 0011):
read at start, moved forward in the group commit (hubd.engine.hopstream keeps it)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, select

from hubd.store import tables as t
from hubd.store.audit import AuditEvent
from hubd.store.writes import DirectWrite


def read_cursors(conn: Connection) -> dict[tuple[str, str], int]:
    """(peer, channel) -> the number up to which every batch is recorded."""
    c = t.hop_cursors.c
    return {(r[0], r[1]): int(r[2]) for r in conn.execute(select(c.peer, c.channel, c.seq))}


def received_already(conn: Connection, sha256: bytes) -> bool:
    """Whether a receipt batch with these bytes is recorded (sent again: not twice)."""
    c = t.receipt_batches.c
    return conn.execute(select(c.sha256).where(c.sha256 == sha256)).first() is not None


@dataclass(slots=True)
class SetHopCursor(DirectWrite):
    """Move (peer, channel)'s cursor to ``seq`` (never back); result: None."""

    peer: str
    channel: str
    seq: int
    at: int

    def apply(self, conn: Connection) -> tuple[None, list[AuditEvent]]:
        c = t.hop_cursors.c
        key = (c.peer == self.peer, c.channel == self.channel)
        held = conn.execute(select(c.seq).where(*key)).scalar()
        if held is None:
            conn.execute(
                t.hop_cursors.insert().values(
                    peer=self.peer, channel=self.channel, seq=self.seq, set_at=self.at
                )
            )
        elif int(held) < self.seq:
            conn.execute(t.hop_cursors.update().where(*key).values(seq=self.seq, set_at=self.at))
        return None, []
