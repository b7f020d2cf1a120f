"""The dispatcher's units of work: a message's :class:`Payload`, one :class:`Job` per
recipient, and the :class:`DispatchSettings` (:mod:`hubd.engine.dispatch` runs them)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path
from typing import Protocol

import structlog

from hubd.core.states import DeliveryState
from hubd.core.timers import (
    SETTLING_LIMIT_MS,
    SETTLING_RECHECK_MS,
    Phase,
    PhaseEvent,
    TimerJob,
    TimerSettings,
    next_phase,
)
from hubd.store.bodyref import StoredBody
from hubd.store.writes import QueueReceipts
from schemas.ids import msg_id_text
from schemas.labels import Classification, Precedence
from schemas.receipts import ReceiptEntry

log = structlog.get_logger("hubd.dispatch")
ACKED = frozenset({DeliveryState.DELIVERED, DeliveryState.SIGNED_FOR})  # by the recipient

Key = tuple[bytes, str]  # (msg_id, recipient)


@dataclass(slots=True)
class Payload:
    """What is published for one message: the frame, and the body inline, on disk, or
    in the store (replicas: hubd.store.sharedspool)."""

    frame: bytes
    body: bytes | None
    body_path: Path | StoredBody | None
    body_size: int


@dataclass(slots=True)
class Job:
    """One message on its way to one recipient."""

    msg_id: bytes
    recipient: str
    channel: str
    precedence: Precedence
    classification: Classification
    sender: str
    origin: str  # the channel it arrived on: receipts go back there
    expires_at: int | None
    payload: Payload
    state: DeliveryState = DeliveryState.PENDING
    attempts: int = 0
    offset: int = -1  # chunked bodies: next body offset to send; -1 = the head first
    accepted_at: int = 0
    part: bytes | None = None  # a large group's envelope: this recipient's slot and proof
    # Queued (in the ready heap or being published: never twice at once) and settling (a
    # receipt closing it is being stored: expiry and giving up wait for the store's answer,
    # so the sender never hears EXPIRED and DELIVERED): hubd.core.timers.Phase.
    phase: Phase = Phase.IDLE
    receipts_storing: int = 0  # receipt batches closing it that the store has not answered
    to_hub: bool = False  # its next hop is another hub (set by the dispatcher)
    settling_since: int = 0  # when the first of them was handed over

    @property
    def key(self) -> Key:
        return (self.msg_id, self.recipient)

    def timing(self) -> TimerJob:
        """What the timer policy reads of this job."""
        return TimerJob(self.state, self.phase, self.attempts, self.settling_since, self.to_hub)

    def move(self, event: PhaseEvent) -> None:
        self.phase = next_phase(self.phase, event)


@dataclass(slots=True)
class DispatchSettings:
    retry_initial: float = 10.0
    retry_max: float = 300.0
    max_attempts: int = 30
    window: int = 256

    def timers(self) -> TimerSettings:
        """The timer policy's settings."""
        return TimerSettings(
            max_attempts=self.max_attempts,
            retry_initial_ms=round(self.retry_initial * 1000),
            retry_max_ms=round(self.retry_max * 1000),
            settling_recheck_ms=SETTLING_RECHECK_MS,
            settling_limit_ms=SETTLING_LIMIT_MS,
        )


@dataclass(frozen=True, slots=True)
class OutcomeBatch:
    """A signed batch of EXPIRED/DEAD entries (hubd.engine.issuer) to be numbered in the
    commit that moves their deliveries (hubd.engine.dispatch), and the recipient each
    entry is about."""

    op: QueueReceipts
    entries: list[tuple[str, ReceiptEntry]]


def log_confirmed(job: Job, at: int, hop: str) -> bool:
    """One line for a delivery the recipient confirmed (``delivery.acked``: True), or that
    the next hub took over with its signed ACCEPTED (``delivery.relayed``, naming it) or
    refused (``delivery.refused``)."""
    fields = {
        "msg_id": msg_id_text(job.msg_id),
        "recipient": job.recipient,
        "channel": job.channel,
        "classification": job.classification.name,
        "precedence": job.precedence.name,
        "attempts": job.attempts,
        "latency_ms": at - job.accepted_at if job.accepted_at else None,
    }
    if job.state in ACKED:
        log.info("delivery.acked", **fields)
        return True
    if job.state is DeliveryState.RELAYED:
        log.info("delivery.relayed", hub=hop, **fields)
    else:
        log.warning("delivery.refused", hub=hop, **fields)
    return False


Outcome = Callable[[Job, DeliveryState, int], None]  # (job, final state, now) -> receipts


class OutcomeWrites(Protocol):
    """The outcome receipts :data:`Outcome` gathered (hubd.engine.issuer), written by the
    dispatcher's flush in the same commit as the EXPIRED/DEAD states they report: neither
    without the other, across a crash or a lease lost to another replica."""

    def take_outcomes(self) -> Sequence[OutcomeBatch]: ...

    def give_back(self, batches: Sequence[OutcomeBatch], keep: Callable[[str], bool]) -> None: ...

    def drop_outcomes(self, gone: Callable[[str], bool]) -> None: ...

    def outcome_stored(self, batch: OutcomeBatch, seq: int) -> None: ...


Latency = Callable[[int], None]  # milliseconds from acceptance to the recipient's DELIVERED


class JobTable(dict[Key, "Job"]):
    """The dispatcher's jobs by (msg_id, recipient), and the recipients of each message
    among them: what another hub's answer about a whole document moves (hubs under hubs)."""

    def __init__(self) -> None:
        super().__init__()
        self.by_msg: dict[bytes, set[str]] = {}
        # (msg_id, hub) -> the job whose copy goes to that hub for every recipient behind it
        self.carriers: dict[tuple[bytes, str], Key] = {}
        # the other way round, with the SHA-256 of its frame
        self._carrying: dict[Key, tuple[tuple[bytes, str], bytes]] = {}
        # (SHA-256 of the frame, hub) -> msg_id of a copy handed to it: a refusal of bytes
        # that hub could not read names only their hash
        self._framed: dict[tuple[bytes, str], bytes] = {}

    def __setitem__(self, key: Key, job: Job) -> None:
        super().__setitem__(key, job)
        self.by_msg.setdefault(key[0], set()).add(key[1])

    def __delitem__(self, key: Key) -> None:
        super().__delitem__(key)
        self._forget(key)

    def pop(self, key: Key, default: Job | None = None) -> Job | None:  # type: ignore[override]
        job = super().pop(key, default)
        if job is not None:
            self._forget(key)
        return job

    def rides(self, job: Job, hub: str) -> bool:
        """Whether ``job``'s copy goes with another job's: a document goes to a hub once for
        all its recipients behind that hub (the hub delivers each), by the first of them
        to be published; the others wait for the hub's answer, which moves them all."""
        if hub == job.recipient:
            return False
        key = (job.msg_id, hub)
        held = self.carriers.get(key)
        if held is not None and held != job.key:
            carrier = self.get(held)
            if carrier is not None and carrier.state.awaiting:
                return True
        if self.carriers.get(key) != job.key:
            self.carriers[key] = job.key
            digest = sha256(job.payload.frame).digest()
            self._carrying[job.key] = (key, digest)
            self._framed[(digest, hub)] = job.msg_id
        return False

    def carrier(self, msg_id: bytes, hub: str) -> Job | None:
        """The job whose copy of ``msg_id`` goes to ``hub`` (a resume from that hub is its)."""
        held = self.carriers.get((msg_id, hub))
        return None if held is None else self.get(held)

    def _forget(self, key: Key) -> None:
        carried = self._carrying.pop(key, None)
        if carried is not None and self.carriers.get(carried[0]) == key:
            del self.carriers[carried[0]]
            self._framed.pop((carried[1], carried[0][1]), None)
        held = self.by_msg.get(key[0])
        if held is not None:
            held.discard(key[1])
            if not held:
                del self.by_msg[key[0]]

    def behind(self, msg_id: bytes, hub: str, hop: Callable[[str], str]) -> list[str]:
        """The recipients of ``msg_id`` still awaited whose next hop is ``hub``."""
        return [
            r
            for r in sorted(self.by_msg.get(msg_id, ()))
            if hop(r) == hub and self[(msg_id, r)].state.awaiting
        ]

    def framed(self, subject: bytes, hub: str) -> bytes | None:
        """The msg_id of the copy handed to ``hub`` whose frame hashes to ``subject``."""
        return self._framed.get((subject, hub))
