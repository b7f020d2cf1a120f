"""Answering the witnesses: consistency proofs, a message's entries with inclusion proofs,
and countersignatures (docs/wire-format.md, 12.3).

The decisions (which sizes the hub can prove, who may see a message's entries, how many
entries fit one answer) are pure functions; :class:`LedgerDesk` reads the store, asks the
:class:`~hubd.engine.checkpoints.Checkpointer` for a checkpoint that covers what it proves, and
hands the answer to the connection. Ingest runs each request as slow work, so a burst of
questions never holds up the intake.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import structlog
from sqlalchemy import Connection, select

from hubd.engine.checkpoints import Checkpointer
from hubd.engine.dispatch import Publish
from hubd.store import ledger as ledgerstore
from hubd.store import tables as t
from hubd.store.db import Store
from hubd.store.ledger import StoredCheckpoint
from hubd.store.writes import SaveCosignature
from schemas import transport
from schemas.directory import Directory
from schemas.errors import PeerError
from schemas.ids import msg_id_text
from schemas.labels import Classification
from schemas.ledger import RESTORED_EVENT, Entry, pack_path, read_checkpoint, verify_cosignature

log = structlog.get_logger("hubd.ledger")
security = structlog.get_logger("hubd.security")

NOT_A_PARTY: Final = "ledger.not_a_party"
UNKNOWN_MESSAGE: Final = "ledger.unknown_message"
CHANNEL_BELOW_LABEL: Final = "ledger.channel_below_label"
TOO_LARGE: Final = "ledger.too_large"  # one entry larger than an answer: hubctl audit prove
PROOF_BUDGET: Final = 600 * 1024  # bytes of leaves and paths in one ProofMsg
PROOF_ENTRIES_MAX: Final = 2000  # entries in one ProofMsg (the decode limit is 5000)
IN_FLIGHT_PER_ORG: Final = 2  # a witness's question and a prove page may overlap; no more
REPORT_EVERY_MS: Final = 3_600_000  # a spoke's repeated misbehaviour: one line an hour


# ---------------------------------------------------------------- decisions


@dataclass(frozen=True, slots=True)
class ConsistencyPlan:
    low: int
    high: int
    provable: bool  # both sizes within the latest signed checkpoint
    ahead: bool  # the witness holds a tree larger than this hub's ledger


def plan_consistency(old: int, new: int, *, signed: int, ledger: int) -> ConsistencyPlan:
    """What the hub can say about the trees of sizes ``old`` and ``new`` (either order)."""
    low, high = sorted((old, new))
    return ConsistencyPlan(low, high, provable=high <= signed, ahead=high > ledger)


def restore_target(old: int, new: int, restored_seq: int | None, *, ledger: int) -> int | None:
    """The tree size the restore entry is proven in (12.3): ``new`` if this ledger reaches
    it, else ``old``; None if the entry is in neither (or there is none).

    A witness asks about its held checkpoint and the one it just received, smaller first;
    the received one is always within this ledger (the hub signed it), so the path leads to
    the root the witness checks it against, whether the restored ledger has grown past the
    held size or not.
    """
    if restored_seq is None:
        return None
    for size in (new, old):
        if restored_seq <= size <= ledger:
            return size
    return None


def prove_refusal(
    asker: str,
    sender: str | None,
    recipients: Sequence[str],
    label: Classification | None,
    ceiling: Classification | None,
) -> str | None:
    """Why ``asker`` may not see a message's entries on a channel of ``ceiling``, or None.

    ``sender`` None: no such message. Only its sender and recipients may ask, and only on
    a channel that may carry its label (the answer speaks of the message).
    """
    if sender is None or label is None:
        return UNKNOWN_MESSAGE
    if asker != sender and asker not in recipients:
        return NOT_A_PARTY
    if ceiling is None or ceiling < label:
        return CHANNEL_BELOW_LABEL
    return None


def take_entries(entries: Sequence[Entry], size: int, budget: int = PROOF_BUDGET) -> int:
    """How many of ``entries`` (in seq order) fit one answer with their inclusion paths in a
    tree of ``size`` leaves; at least one, so that every answer makes progress."""
    path_bytes = 32 * max(size - 1, 0).bit_length()  # a path has at most ceil(log2 size)
    used = 0
    for n, entry in enumerate(entries[:PROOF_ENTRIES_MAX]):
        used += len(entry.leaf()) + path_bytes + 16  # msgpack framing of the pair
        if used > budget and n:
            return n
    return min(len(entries), PROOF_ENTRIES_MAX)


# ---------------------------------------------------------------- store reads


@dataclass(frozen=True, slots=True)
class _Message:
    sender: str | None
    label: Classification | None
    recipients: list[str]
    entries: list[Entry]


def _read_message(conn: Connection, msg_id: bytes, after: int, asker: str) -> _Message:
    """The message's entries after ``after`` that ``asker`` may see: all of them for its
    sender; for a recipient, the sender's and its own, never another recipient's (a large
    group's recipients learn only their own place: docs/wire-format.md, 4a)."""
    m, d, a = t.messages, t.deliveries, t.audit
    row = conn.execute(select(m.c.sender, m.c.classification).where(m.c.msg_id == msg_id)).first()
    if row is None:
        return _Message(None, None, [], [])
    ranks = {c.rank: c for c in Classification}
    recipients = [r[0] for r in conn.execute(select(d.c.recipient).where(d.c.msg_id == msg_id))]
    mine = a.c.msg_id == msg_id
    if asker != row.sender:
        mine = mine & a.c.org.in_([asker, row.sender])
    rows = conn.execute(
        select(a.c.seq, a.c.at, a.c.event, a.c.msg_id, a.c.org, a.c.detail)
        .where(mine, a.c.seq > after)
        .order_by(a.c.seq)
        .limit(PROOF_ENTRIES_MAX + 1)
    )
    entries = [ledgerstore.entry_of(r) for r in rows]
    return _Message(row.sender, ranks.get(int(row.classification)), recipients, entries)


def _latest_restored(conn: Connection) -> Entry | None:
    a = t.audit
    row = conn.execute(
        select(a.c.seq, a.c.at, a.c.event, a.c.msg_id, a.c.org, a.c.detail)
        .where(a.c.event == RESTORED_EVENT)
        .order_by(a.c.seq.desc())
        .limit(1)
    ).first()
    return None if row is None else ledgerstore.entry_of(row)


def _checkpoint_of(conn: Connection, size: int) -> StoredCheckpoint | None:
    row = conn.execute(
        select(t.ledger_checkpoints).where(t.ledger_checkpoints.c.size == size)
    ).first()
    if row is None:
        return None
    return ledgerstore.checkpoint_of_row(row)


# ---------------------------------------------------------------- answering


class LedgerDesk:
    """Answers ``consistency``, ``prove`` and ``cosign`` from spokes on their down topic."""

    def __init__(
        self,
        store: Store,
        checkpoints: Checkpointer,
        directory: Callable[[], Directory],
        send: Publish,
        clock: Callable[[], int],
    ) -> None:
        self._store, self._checkpoints, self._directory = store, checkpoints, directory
        self._send, self._clock = send, clock
        self._restored: tuple[Entry | None] | None = None  # looked up once: hubctl writes it
        self._reported: dict[tuple[str, str], int] = {}  # (event, org) -> when last logged
        self._in_flight: dict[str, int] = {}
        self.cosignatures = 0  # countersignatures stored since the hub started

    async def answer(self, channel: str, org: str, message: Any) -> None:
        """Answer one request; beyond IN_FLIGHT_PER_ORG of one organisation, drop it (its
        spoke asks again after its answer timeout): one spoke's flood never holds the
        workers and the store's reader that every other spoke's intake needs."""
        if self._in_flight.get(org, 0) >= IN_FLIGHT_PER_ORG:
            if self._first_in_a_while("ledger.request_dropped", org):
                log.warning("ledger.request_dropped", org=org, channel=channel)
            return
        self._in_flight[org] = self._in_flight.get(org, 0) + 1
        try:
            match message:
                case transport.ConsistencyAsk():
                    await self.consistency(channel, org, message)
                case transport.ProveAsk():
                    await self.prove(channel, org, message)
                case transport.CosignMsg():
                    await self.cosign(channel, org, message)
        finally:
            self._in_flight[org] -= 1
            if not self._in_flight[org]:
                del self._in_flight[org]

    def _first_in_a_while(self, event: str, org: str) -> bool:
        """Whether ``event`` about ``org`` may be logged now (once per REPORT_EVERY_MS)."""
        now = self._clock()
        last = self._reported.get((event, org))
        if last is not None and now - last < REPORT_EVERY_MS:
            return False
        if len(self._reported) > 100_000:  # bounded: one entry per org and event
            self._reported.clear()
        self._reported[(event, org)] = now
        return True

    def _reply(self, channel: str, org: str, message: transport.TransportMsg) -> None:
        self._send(channel, org, transport.encode(message))  # not awaited: see Ingest._send_resume

    async def _restore_entry(self) -> Entry | None:
        if self._restored is None:
            self._restored = (await self._store.read_sync(_latest_restored),)
        return self._restored[0]

    async def consistency(self, channel: str, org: str, ask: transport.ConsistencyAsk) -> None:
        latest = self._checkpoints.latest
        signed = 0 if latest is None else latest.size
        ledger = self._store.ledger[0]
        plan = plan_consistency(ask.old, ask.new, signed=signed, ledger=ledger)
        if plan.ahead:
            self._report_ahead(channel, org, plan.high, ledger)
        proof = leaf = path = None
        if plan.provable:
            hashes = await self._store.read_sync(ledgerstore.consistency, plan.low, plan.high)
            proof = pack_path(hashes)
        restored = await self._restore_entry()  # offered whether or not a proof exists
        target = restore_target(
            plan.low, plan.high, None if restored is None else restored.seq, ledger=ledger
        )
        if restored is not None and target is not None:
            leaf = restored.leaf()
            path = pack_path(
                await self._store.read_sync(ledgerstore.inclusion, restored.index, target)
            )
        self._reply(channel, org, transport.ConsistencyMsg(ask.old, ask.new, proof, leaf, path))

    def _report_ahead(self, channel: str, org: str, theirs: int, ours: int) -> None:
        if not self._first_in_a_while("ledger.witness_ahead", org):
            return
        log.error(
            "ledger.witness_ahead",
            org=org,
            channel=channel,
            their_size=theirs,
            our_size=ours,
            hint="the spoke holds a checkpoint of a longer ledger than this store: was it "
            "restored from a backup? run 'hubctl audit restored --reason ...'",
        )

    async def prove(self, channel: str, org: str, ask: transport.ProveAsk) -> None:
        found = await self._store.read_sync(_read_message, ask.msg_id, ask.after, org)
        served = self._directory().channel(channel)
        ceiling = None if served is None else served.ceiling
        refusal = prove_refusal(org, found.sender, found.recipients, found.label, ceiling)
        if refusal is not None:
            log.info("ledger.prove_refused", org=org, channel=channel, reason=refusal)
            self._reply(channel, org, transport.ProofMsg(ask.msg_id, None, None, False, refusal))
            return
        entries = found.entries
        last = entries[-1].seq if entries else 0
        checkpoint = await self._checkpoints.ensure_covers(last)
        count = take_entries(entries, checkpoint.size)
        chosen = entries[:count]
        if chosen and len(chosen[0].leaf()) > PROOF_BUDGET:
            log.warning("ledger.prove_refused", org=org, channel=channel, reason=TOO_LARGE)
            self._reply(channel, org, transport.ProofMsg(ask.msg_id, None, None, False, TOO_LARGE))
            return
        paths = await self._store.read_sync(
            ledgerstore.inclusions, [e.index for e in chosen], checkpoint.size
        )
        pairs = [(e.leaf(), pack_path(paths[e.index])) for e in chosen]
        more = count < len(entries)
        log.info(
            "ledger.proved",
            org=org,
            channel=channel,
            msg_id=msg_id_text(ask.msg_id),
            entries=len(pairs),
            size=checkpoint.size,
            more=more,
        )
        self._reply(
            channel,
            org,
            transport.ProofMsg(
                ask.msg_id, checkpoint.frame, transport.encode_proof_entries(pairs), more
            ),
        )

    async def cosign(self, channel: str, org: str, message: transport.CosignMsg) -> None:
        stored = await self._store.read_sync(_checkpoint_of, message.size)
        if stored is None:
            log.debug("ledger.cosign_unknown", org=org, channel=channel, size=message.size)
            return
        signed = read_checkpoint(stored.frame)
        try:
            public = self._directory().signing_key(org, message.kid, stored.at)
        except PeerError as exc:
            why = exc.reason.value
        else:
            if verify_cosignature(signed, public, message.sig):
                fresh = await self._store.submit(
                    SaveCosignature(message.size, org, message.kid, message.sig, self._clock())
                )
                if fresh:
                    self.cosignatures += 1
                    log.debug("ledger.cosigned", org=org, channel=channel, size=message.size)
                return
            why = "sig.invalid"
        if not self._first_in_a_while("ledger.cosign_invalid", org):
            return
        security.error(
            "ledger.cosign_invalid",
            org=org,
            channel=channel,
            size=message.size,
            kid=message.kid[:32],
            reason=why,
        )
