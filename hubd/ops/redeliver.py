"""Redelivery: an operator moves dead letters back to PENDING (``hubctl redeliver``).

What may come back is decided here, from the stored rows and ``now`` (:func:`refusal`):
only a DEAD delivery (the state table's one REDELIVER transition), whose message still
has its content (retention has not purged it) and whose signed ``expires_at``, if any, is
still ahead. An EXPIRED delivery never comes back: the sender said when the message stops
mattering, and the hub does not deliver after that; the sender sends it again. ``--dead``
(every dead letter) therefore moves the DEAD ones and counts the EXPIRED ones it leaves
(:attr:`Outcome.expired`), so that its answer names them instead of "nothing matches"
while ``hubctl dead`` lists them.

The change itself is one :class:`Redeliver` operation in the store's group commit: it
re-checks every delivery as it is at that moment, moves it to PENDING with its attempts
counted from 0 again, and writes a ``delivery.redelivered`` audit entry naming who asked
(uid, pid and user from the admin socket's peer credentials, or hubctl's own when it
wrote the store of a stopped hub). The running hub then hands the dispatcher the new
Jobs (:mod:`hubd.admin.ops`); a stopped hub reloads them at its next start.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, bindparam, func, select, update

from hubd.core.states import DeliveryState, Event, MessageState, can, next_state
from hubd.store import tables as t
from hubd.store.audit import AuditEvent
from hubd.store.connections import read_only_url
from hubd.store.db import Store
from hubd.store.lock import HubLock
from hubd.store.writes import Announce, DirectWrite
from schemas.clock import ms_to_text
from schemas.ids import msg_id_text

MAX_AT_ONCE = 1000  # dead letters moved by one request; 'hubctl redeliver --dead' again for more

Key = tuple[bytes, str]  # (msg_id, recipient)
Read = Callable[[Any], Awaitable[Sequence[Any]]]
Submit = Callable[[Any], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Target:
    """What the operator asked for: one message (``msg_id``) or every dead letter
    (``msg_id`` None), to everyone or to ``to`` only."""

    msg_id: bytes | None
    to: str | None


@dataclass(frozen=True, slots=True)
class Candidate:
    msg_id: bytes
    recipient: str
    state: DeliveryState
    expires_at: int | None
    purged_at: int | None

    @property
    def key(self) -> Key:
        return (self.msg_id, self.recipient)


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why one delivery (or a whole request) is not redelivered: a code and a sentence."""

    msg_id: bytes | None
    recipient: str | None
    code: str
    detail: str

    def as_json(self) -> dict[str, Any]:
        return {
            "msg_id": None if self.msg_id is None else msg_id_text(self.msg_id),
            "recipient": self.recipient,
            "code": self.code,
            "detail": self.detail,
        }


def refusal(c: Candidate, *, now: int) -> Refusal | None:
    """None if ``c`` may be redelivered now; otherwise the reason it may not."""
    m, r = msg_id_text(c.msg_id), c.recipient

    def no(code: str, detail: str) -> Refusal:
        return Refusal(c.msg_id, r, code, detail)

    if c.state is DeliveryState.EXPIRED:
        when = "" if c.expires_at is None else f" at {ms_to_text(c.expires_at)}"
        return no(
            "redeliver.expired",
            f"{m} to {r} expired{when} (the sender's expires_at) before {r} confirmed it; the "
            "hub never delivers a message after its expiry: the sender must send it again",
        )
    if c.state.awaiting:
        return no(
            "redeliver.not_dead",
            f"{m} to {r} is {c.state}: still the hub's job, published until {r} confirms it or "
            "[delivery] max_attempts is reached; there is nothing to redeliver",
        )
    if c.state is DeliveryState.RECALLED:
        return no(
            "redeliver.recalled",
            f"{m} to {r} was recalled (撤回) by its sender; the hub never delivers a recalled "
            "document: the sender sends it again if it still matters",
        )
    if not can(c.state, Event.REDELIVER):
        return no(
            "redeliver.confirmed",
            f"{r} confirmed {m} ({c.state}); the hub does not deliver a document twice",
        )
    if c.purged_at is not None:
        return no(
            "redeliver.purged",
            f"{m} to {r} cannot come back: its content was purged by retention at "
            f"{ms_to_text(c.purged_at)} ([retention] dead_after) and the hub no longer holds "
            "it: the sender must send it again",
        )
    if c.expires_at is not None and c.expires_at <= now:
        return no(
            "redeliver.expired",
            f"{m} to {r} is DEAD and its expires_at ({ms_to_text(c.expires_at)}) has passed "
            "since; the hub never delivers a message after its expiry: the sender must send "
            "it again",
        )
    return None


def choose(
    target: Target, candidates: Sequence[Candidate], *, now: int
) -> tuple[list[Candidate], list[Refusal]]:
    """Split the candidates into those to move and those refused (with reasons).

    Asked for one message without ``to``, the deliveries its recipients confirmed are left
    alone rather than refused: "redeliver this message" means its dead letters."""
    chosen: list[Candidate] = []
    refused: list[Refusal] = []
    whole_message = target.msg_id is not None and target.to is None
    for c in candidates:
        problem = refusal(c, now=now)
        if problem is None:
            chosen.append(c)
        elif not (whole_message and problem.code == "redeliver.confirmed"):
            refused.append(problem)
    if whole_message and candidates and not chosen and not refused:
        assert target.msg_id is not None  # noqa: S101 - whole_message says so
        refused.append(
            Refusal(
                target.msg_id,
                None,
                "redeliver.confirmed",
                f"every recipient of {msg_id_text(target.msg_id)} confirmed it; there is "
                "nothing to redeliver",
            )
        )
    return chosen, refused


# ------------------------------------------------------------------ the store operation


@dataclass(slots=True)
class Redeliver(DirectWrite):
    """DEAD -> PENDING for ``keys``, each re-checked as it is now; the result is the keys
    actually moved (a delivery whose state changed meanwhile is left as it is)."""

    keys: list[Key]
    at: int
    requested_by: dict[str, Any]
    via: str  # "admin socket" | "hubctl, hub stopped"

    def apply(self, conn: Connection) -> tuple[list[Key], list[AuditEvent]]:
        d, m = t.deliveries, t.messages
        wanted = set(self.keys)
        rows = conn.execute(
            select(
                d.c.msg_id, d.c.recipient, d.c.state, d.c.attempts, d.c.expires_at, m.c.purged_at
            )
            .join(m, m.c.msg_id == d.c.msg_id)
            .where(d.c.msg_id.in_(sorted({k[0] for k in wanted})))
        )
        moved: list[tuple[Key, int]] = []
        for r in rows:
            c = Candidate(
                bytes(r.msg_id), r.recipient, DeliveryState(r.state), r.expires_at, r.purged_at
            )
            if c.key in wanted and refusal(c, now=self.at) is None:
                moved.append((c.key, int(r.attempts)))
        if not moved:
            return [], []
        pending = next_state(DeliveryState.DEAD, Event.REDELIVER)
        conn.execute(
            update(d)
            .where(
                d.c.msg_id == bindparam("m"),
                d.c.recipient == bindparam("r"),
                d.c.state == DeliveryState.DEAD.value,
            )
            .values(state=pending.value, attempts=0, updated_at=self.at),
            [{"m": key[0], "r": key[1]} for key, _ in moved],
        )
        audit = [
            AuditEvent(
                "delivery.redelivered",
                self.at,
                key[0],
                key[1],
                {"requested_by": self.requested_by, "via": self.via, "attempts_before": attempts},
            )
            for key, attempts in moved
        ]
        return [key for key, _ in moved], audit


# ------------------------------------------------------------------ one request


@dataclass(frozen=True, slots=True)
class Outcome:
    redelivered: tuple[Key, ...]
    refused: tuple[Refusal, ...]
    more: int  # dead letters this request did not reach (beyond MAX_AT_ONCE)
    via: str
    # --dead: EXPIRED deliveries that matched and stay where they are ('hubctl dead' lists
    # them beside the DEAD ones; they are not refused one by one: they were never asked for)
    expired: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "via": self.via,
            "redelivered": [
                {"msg_id": msg_id_text(m), "recipient": r} for m, r in self.redelivered
            ],
            "refused": [x.as_json() for x in self.refused],
            "more": self.more,
            "expired": self.expired,
        }


def _candidate_query(target: Target) -> Any:
    d, m = t.deliveries, t.messages
    query = select(d.c.msg_id, d.c.recipient, d.c.state, d.c.expires_at, m.c.purged_at).join(
        m, m.c.msg_id == d.c.msg_id
    )
    if target.msg_id is not None:
        query = query.where(d.c.msg_id == target.msg_id)
    else:
        query = query.where(d.c.state == DeliveryState.DEAD.value)
    if target.to is not None:
        query = query.where(d.c.recipient == target.to)
    return query.order_by(d.c.updated_at, d.c.msg_id, d.c.recipient).limit(MAX_AT_ONCE + 1)


async def _expired_count(read: Read, target: Target) -> int:
    """EXPIRED deliveries a ``--dead`` request (to ``to``, or to everyone) matches."""
    d = t.deliveries
    query = select(func.count()).select_from(d).where(d.c.state == DeliveryState.EXPIRED.value)
    if target.to is not None:
        query = query.where(d.c.recipient == target.to)
    rows = await read(query)
    return int(rows[0][0])


async def _nothing_there(read: Read, target: Target) -> Refusal:
    """Why a request for one message found no delivery at all."""
    assert target.msg_id is not None  # noqa: S101 - only asked for one message
    m = msg_id_text(target.msg_id)
    rows = await read(select(t.messages.c.state).where(t.messages.c.msg_id == target.msg_id))
    if not rows:
        return Refusal(
            target.msg_id,
            target.to,
            "redeliver.unknown",
            f"the hub's store holds no message {m}: it never reached this hub, or the hub "
            "refused it",
        )
    if rows[0][0] == MessageState.QUARANTINED.value:
        return Refusal(
            target.msg_id,
            target.to,
            "redeliver.quarantined",
            f"{m} is quarantined (it arrived on a channel below its label); it is never forwarded",
        )
    return Refusal(
        target.msg_id,
        target.to,
        "redeliver.not_a_recipient",
        f"{m} has no delivery to {target.to}; 'hubctl trace {m}' lists its recipients",
    )


async def redeliver(
    read: Read,
    submit: Submit,
    target: Target,
    *,
    now: int,
    requested_by: dict[str, Any],
    via: str,
) -> Outcome:
    """Decide, then move what may come back in one group commit."""
    rows = await read(_candidate_query(target))
    more = max(len(rows) - MAX_AT_ONCE, 0) if target.msg_id is None else 0
    candidates = [
        Candidate(bytes(r.msg_id), r.recipient, DeliveryState(r.state), r.expires_at, r.purged_at)
        for r in rows[:MAX_AT_ONCE]
    ]
    if not candidates and target.msg_id is not None:
        return Outcome((), (await _nothing_there(read, target),), 0, via)
    chosen, refused = choose(target, candidates, now=now)
    moved: list[Key] = []
    if chosen:
        moved = await submit(Redeliver([c.key for c in chosen], now, requested_by, via))
    done = set(moved)
    for c in chosen:
        if c.key not in done:
            refused.append(
                Refusal(
                    c.msg_id,
                    c.recipient,
                    "redeliver.changed",
                    f"{msg_id_text(c.msg_id)} to {c.recipient} changed while this request was "
                    "handled; look at 'hubctl trace' and ask again",
                )
            )
    expired = await _expired_count(read, target) if target.msg_id is None else 0
    return Outcome(tuple(moved), tuple(refused), more, via, expired)


async def redeliver_offline(
    url: str,
    lock: HubLock,
    target: Target,
    *,
    now: int,
    requested_by: dict[str, Any],
    shared: bool = False,
) -> Outcome:
    """Write the redelivery into the store of a stopped hub; its next start delivers it.

    Holds the state folder's lock throughout (LockHeldError if a hub runs there); StoreError
    for a store that does not exist (it is never created here). ``shared``: the store of
    replicas (the others may run): written as a replica writes it, and the redelivered
    messages announced to the replicas that own their recipients."""
    read_only_url(url)  # raises for a SQLite store that is not there
    with lock:
        async with Store(url, shared=shared) as store:
            store.replica = "hubctl"
            outcome = await redeliver(
                store.read,
                store.submit,
                target,
                now=now,
                requested_by=requested_by,
                via="hubctl, hub stopped",
            )
            if shared and outcome.redelivered:
                await store.submit(Announce(sorted({m for m, _ in outcome.redelivered})))
            return outcome
