"""Signed checkpoints of the ledger's Merkle tree: when to sign one, and publishing it.

The store grows the tree in every group commit (hubd.store.db, ``Store.ledger``); the
:class:`Checkpointer` signs ``schemas.ledger.Checkpoint(hub_id, size, root, at)`` with the
hub's key when the tree grew and ``[ledger] checkpoint_interval`` passed or
``checkpoint_entries`` were added (:func:`due`), keeps it in ``ledger_checkpoints`` through
the group commit, and publishes it, retained, on every channel's ledger topic with the
consistency proof from the checkpoint published before it (docs/wire-format.md, 12.2-12.3).

At start, :func:`check_ledger` compares the store with its latest checkpoint: a ledger that
ends before what the hub already signed (and every spoke holds) lost its tail, and the hub
refuses to start rather than sign a second, shorter history (a fork every witness reports).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import structlog
from sqlalchemy import Connection, and_, or_, select

from hubd.store import ledger as ledgerstore
from hubd.store import shared as sharedstore
from hubd.store import tables as t
from hubd.store.db import Store
from hubd.store.ledger import LedgerGapError, StoredCheckpoint
from hubd.store.writes import SaveCheckpoint
from schemas import transport
from schemas.clock import ms_to_text
from schemas.errors import StoreError
from schemas.keys import SigningKey
from schemas.ledger import Checkpoint, pack_path, sign_checkpoint

log = structlog.get_logger("hubd.checkpoints")

TICK: Final = 0.25  # seconds between looks at the tree's size (entries added meanwhile)
ON_DEMAND_GAP_MS: Final = 1000  # proofs asked for sign at most one checkpoint a second
RESTORED_HINT: Final = (
    "if you restored a backup, run 'hubctl audit restored --reason ...' "
    '(docs/operations.md, "The audit ledger")'
)
HINT: Final = f"run 'hubctl audit verify'; {RESTORED_HINT}"


class LedgerCheckError(StoreError):
    """The store holds less than the hub already signed: the hub does not start."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retriable=False)


@dataclass(frozen=True, slots=True)
class Policy:
    """``[ledger]``: whether checkpoints are signed on their own, and how often."""

    enabled: bool
    interval_ms: int
    entries: int


def due(policy: Policy, last: StoredCheckpoint | None, size: int, now: int) -> bool:
    """Whether a tree of ``size`` entries deserves a new checkpoint after ``last``."""
    if last is None:
        return True
    if size <= last.size:
        return False
    return size - last.size >= policy.entries or now - last.at >= policy.interval_ms


# ---------------------------------------------------------------- the start-time check


def check_ledger(conn: Connection, size: int) -> str | None:
    """Why the store cannot be the history the hub signed (one sentence), or None.

    O(log n): the latest checkpoint against the tree (its size, its root from stored
    subtrees) and one indexed look for tree nodes beyond the ledger's end.
    """
    try:
        latest = ledgerstore.latest_checkpoint(conn)
        if latest is not None:
            signed = f"checkpoint {latest.size} (signed {ms_to_text(latest.at)})"
            if latest.size > size:
                return (
                    f"the ledger ends at entry {size} but {signed} covers more: entries were "
                    f"deleted or the store was replaced by an older copy; {HINT}"
                )
            if ledgerstore.root(conn, latest.size) != latest.root:
                return (
                    f"the ledger's first {latest.size} entries do not give the root of {signed}: "
                    f"entries were edited, inserted or deleted; {HINT}"
                )
    except LedgerGapError as exc:
        return f"{exc}; {RESTORED_HINT}"  # it already says to run hubctl audit verify
    beyond = nodes_beyond(conn, size)
    if beyond is not None:
        return (
            f"the ledger ends at entry {size} but its tree holds entries up to {beyond}: "
            f"entries after {size} were deleted; {HINT}"
        )
    return None


def _check_ledger_held(conn: Connection) -> str | None:
    """:func:`check_ledger` of the ledger as it stands, with the replicas' writers held off
    (their lock, until this read ends): entries, nodes and checkpoints of one moment."""
    sharedstore.lock_writers(conn)
    return check_ledger(conn, ledgerstore.ledger_size(conn))


def nodes_beyond(conn: Connection, size: int) -> int | None:
    """The last entry (seq) a stored tree node covers beyond ``size``, or None.

    Nodes are written when their subtree completes, so every node of an intact tree of
    ``size`` leaves has ``index < size >> level``.
    """
    pos, key = t.ledger_nodes.c.pos, ledgerstore.node_key
    ranges = [
        and_(pos >= key(level, size >> level), pos < key(level + 1, 0)) for level in range(1, 63)
    ]
    row = conn.execute(select(pos).where(or_(*ranges)).order_by(pos.desc()).limit(1)).first()
    if row is None:
        return None
    found = int(row[0])
    level, index = found >> 48, found & ((1 << 48) - 1)
    return (index + 1) << level


def _latest_two(conn: Connection) -> tuple[StoredCheckpoint | None, StoredCheckpoint | None]:
    rows = conn.execute(
        select(t.ledger_checkpoints).order_by(t.ledger_checkpoints.c.size.desc()).limit(2)
    ).all()
    found = [ledgerstore.checkpoint_of_row(r) for r in rows]
    return (found[0] if found else None), (found[1] if len(found) > 1 else None)


def _size_and_latest(conn: Connection) -> tuple[int, StoredCheckpoint | None]:
    return ledgerstore.ledger_size(conn), ledgerstore.latest_checkpoint(conn)


def _stored_of_size(conn: Connection, signed: StoredCheckpoint) -> StoredCheckpoint:
    """The checkpoint the store keeps for ``signed``'s size (the first signed of it)."""
    c = t.ledger_checkpoints.c
    row = conn.execute(select(t.ledger_checkpoints).where(c.size == signed.size)).first()
    return signed if row is None else ledgerstore.checkpoint_of_row(row)


def _tree_now(conn: Connection) -> tuple[int, bytes, StoredCheckpoint | None]:
    """The committed tree's size and root, and the latest checkpoint (shared stores)."""
    size = ledgerstore.ledger_size(conn)
    return size, ledgerstore.root(conn, size), ledgerstore.latest_checkpoint(conn)


# ---------------------------------------------------------------- the task


class Checkpointer:
    """Signs, keeps and publishes checkpoints; ``await run(stop)`` in the hub's TaskGroup."""

    def __init__(  # noqa: PLR0917 - one of each, all needed
        self,
        store: Store,
        key: SigningKey,
        hub_id: str,
        policy: Policy,
        clock: Callable[[], int],
        publish: Callable[[bytes], None],
    ) -> None:
        self._store, self._key, self._hub_id = store, key, hub_id
        self._policy, self._clock, self._publish = policy, clock, publish
        self._lock = asyncio.Lock()
        self.latest: StoredCheckpoint | None = None  # the latest stored (signed) checkpoint
        self.message: bytes | None = None  # the CheckpointMsg last published (republished)
        # Replicas: whether this one signs on the timer now (one at a time does)
        self.leading: Callable[[], bool] | None = None

    async def check(self) -> None:
        """Refuse (LedgerCheckError) a store that lost entries the hub signed."""
        if self._store.shared:  # other replicas write on: judge one moment of the store
            problem = await self._store.read_sync(_check_ledger_held)
        else:
            problem = await self._store.read_sync(check_ledger, self._store.ledger[0])
        if problem is not None:
            raise LedgerCheckError(
                "账本与枢纽已签发的检查点不符，枢纽不启动；请运行 hubctl audit verify，"
                f"如系从备份恢复请运行 hubctl audit restored / {problem}"
            )

    async def start(self) -> None:
        """Publish the latest checkpoint (a new one first if the tree grew past it)."""
        size = self._store.ledger[0]
        latest, previous = await self._store.read_sync(_latest_two)
        self.latest = latest
        if not self._policy.enabled:
            return
        leads = self.leading is None or self.leading()  # replicas: the leader signs
        if (latest is None or size > latest.size) and leads:
            await self.sign()
        elif latest is None:
            return
        else:
            await self._announce(latest, previous)

    async def run(self, stop: asyncio.Event) -> None:
        if not self._policy.enabled:
            return
        tick = min(TICK, self._policy.interval_ms / 1000)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(tick):
                    await stop.wait()
            if self.leading is not None and not self.leading():
                continue
            size = self._store.ledger[0]
            if self._store.shared:  # the tree grows on every replica: as the store has it
                size, self.latest = await self._store.read_sync(_size_and_latest)
            if due(self._policy, self.latest, size, self._clock()):
                try:
                    await self.sign()
                except StoreError as exc:  # tried again at the next tick
                    log.error("ledger.checkpoint_failed", error=str(exc), retriable=exc.retriable)

    async def ensure_covers(self, size: int) -> StoredCheckpoint:
        """A stored checkpoint of at least ``size`` entries (committed ones); signs one now
        if the latest does not reach that far (a proof must lead to a signed root)."""
        latest = self.latest
        if latest is not None and latest.size >= size:
            return latest
        if latest is not None:
            # a burst of prove requests shares one checkpoint, not one each (every one is
            # kept for ever and published to every spoke)
            wait_ms = latest.at + ON_DEMAND_GAP_MS - self._clock()
            if wait_ms > 0:
                await asyncio.sleep(wait_ms / 1000)
        return await self.sign()

    async def sign(self) -> StoredCheckpoint:
        """Sign, keep and (unless checkpoints are off) publish the committed tree."""
        async with self._lock:
            size, root = self._store.ledger
            if self._store.shared:  # other replicas extend it: the committed tree as it is
                size, root, self.latest = await self._store.read_sync(_tree_now)
            previous = self.latest
            if previous is not None and previous.size >= size:
                return previous  # signed meanwhile (the tree has not grown since)
            at = self._clock()
            frame = sign_checkpoint(Checkpoint(self._hub_id, size, root, at), self._key)
            stored = StoredCheckpoint(size, root, at, self._key.kid, frame)
            await self._store.submit(SaveCheckpoint(stored))
            if self._store.shared:  # another replica may have signed this size first: its
                stored = await self._store.read_sync(_stored_of_size, stored)  # is the one kept
            self.latest = stored
            log.debug("ledger.checkpoint", size=size, at=at)
            if self._policy.enabled:
                await self._announce(stored, previous)
            return stored

    async def _announce(self, stored: StoredCheckpoint, previous: StoredCheckpoint | None) -> None:
        prev_size = 0 if previous is None else previous.size
        proof = await self._store.read_sync(ledgerstore.consistency, prev_size, stored.size)
        self.message = transport.encode(
            transport.CheckpointMsg(stored.frame, prev_size, pack_path(proof))
        )
        self._publish(self.message)
