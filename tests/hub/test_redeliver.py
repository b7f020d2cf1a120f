"""Redelivery (hubd.ops.redeliver): what may come back, as a table, and the store operation
on a real SQLite store: DEAD to PENDING with attempts from 0, audited with who asked,
everything else refused with the reason."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from hubd.core.states import DeliveryState
from hubd.ops.redeliver import (
    Candidate,
    Redeliver,
    Target,
    choose,
    redeliver,
    redeliver_offline,
    refusal,
)
from hubd.store import tables as t
from hubd.store.audit import AuditEvent, verify_chain
from hubd.store.db import Store
from hubd.store.lock import HubLock, LockHeldError
from hubd.store.shared import JOBS_CHANNEL
from hubd.store.writes import AppendAudit
from schemas.errors import StoreError
from schemas.ids import msg_id_text
from tests.hub.test_store import NOW, audit_rows, msg_id, new_message

P, S, D, F = (
    DeliveryState.PENDING,
    DeliveryState.SENT,
    DeliveryState.DELIVERED,
    DeliveryState.SIGNED_FOR,
)
X, Z = DeliveryState.EXPIRED, DeliveryState.DEAD
ME = {"uid": 1000, "gid": 1000, "pid": 4242, "user": "ops"}


def cand(
    state: DeliveryState, *, expires_at: int | None = None, purged_at: int | None = None
) -> Candidate:
    return Candidate(msg_id(1), "jl.cc", state, expires_at, purged_at)


@pytest.mark.parametrize(
    ("candidate", "code"),
    [
        (cand(Z), None),
        (cand(Z, expires_at=NOW + 1), None),  # still ahead
        (cand(Z, expires_at=NOW), "redeliver.expired"),  # its expiry passed since it died
        (cand(Z, purged_at=NOW - 5), "redeliver.purged"),
        (cand(X, expires_at=NOW - 5), "redeliver.expired"),  # never, whatever else
        (cand(P), "redeliver.not_dead"),
        (cand(S), "redeliver.not_dead"),
        (cand(D), "redeliver.confirmed"),
        (cand(F), "redeliver.confirmed"),
    ],
    ids=lambda v: str(v) if isinstance(v, str | type(None)) else None,
)
def test_only_a_dead_unpurged_unexpired_delivery_may_come_back(
    candidate: Candidate, code: str | None
) -> None:
    problem = refusal(candidate, now=NOW)

    assert (None if problem is None else problem.code) == code
    if problem is not None:
        assert candidate.recipient in problem.detail
        assert msg_id(1).hex() in problem.detail


def test_asked_for_a_whole_message_confirmed_recipients_are_left_alone_not_refused() -> None:
    target = Target(msg_id(1), None)
    dead = Candidate(msg_id(1), "jl.cc", Z, None, None)
    delivered = Candidate(msg_id(1), "jl.jl", D, None, None)

    chosen, refused = choose(target, [dead, delivered], now=NOW)
    only_delivered, why = choose(target, [delivered], now=NOW)

    assert (chosen, refused) == ([dead], [])
    assert only_delivered == []
    assert [r.code for r in why] == ["redeliver.confirmed"]
    assert "every recipient" in why[0].detail


def test_asked_for_one_recipient_a_confirmed_delivery_is_refused() -> None:
    delivered = Candidate(msg_id(1), "jl.jl", D, None, None)

    chosen, refused = choose(Target(msg_id(1), "jl.jl"), [delivered], now=NOW)

    assert chosen == []
    assert [r.code for r in refused] == ["redeliver.confirmed"]


# ---------------------------------------------------------------------------- on a store


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with Store(f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}") as opened:
        yield opened


async def set_delivery(store: Store, n: int, recipient: str, **values: Any) -> None:
    """Put a stored delivery into a state, as the dispatcher's own writes would."""

    class Set(Redeliver):  # a DirectWrite that only updates, for building situations
        def apply(self, conn: Any) -> tuple[Any, list[Any]]:
            d = t.deliveries
            conn.execute(
                update(d).where(d.c.msg_id == msg_id(n), d.c.recipient == recipient).values(values)
            )
            return None, []

    await store.submit(Set([], NOW, {}, ""))


async def deliveries(store: Store, n: int) -> dict[str, tuple[str, int, int]]:
    d = t.deliveries
    rows = await store.read(
        select(d.c.recipient, d.c.state, d.c.attempts, d.c.updated_at).where(
            d.c.msg_id == msg_id(n)
        )
    )
    return {r.recipient: (r.state, r.attempts, r.updated_at) for r in rows}


async def test_a_dead_delivery_goes_back_to_pending_with_attempts_from_zero_and_is_audited(
    store: Store,
) -> None:
    await store.submit(new_message(1))
    await set_delivery(store, 1, "jl.cc", state="DEAD", attempts=30)
    await set_delivery(store, 1, "jl.jl", state="DELIVERED", attempts=1)

    outcome = await redeliver(
        store.read,
        store.submit,
        Target(msg_id(1), None),
        now=NOW + 500,
        requested_by=ME,
        via="admin socket",
    )

    assert outcome.redelivered == ((msg_id(1), "jl.cc"),)
    assert outcome.refused == ()
    assert await deliveries(store, 1) == {
        "jl.cc": ("PENDING", 0, NOW + 500),
        "jl.jl": ("DELIVERED", 1, NOW + 1),  # confirmed: left alone
    }
    rows = await audit_rows(store)
    last = rows[-1]
    assert (last.event, last.msg_id, last.org) == ("delivery.redelivered", msg_id(1), "jl.cc")
    assert '"uid":1000' in last.detail
    assert '"via":"admin socket"' in last.detail
    assert '"attempts_before":30' in last.detail
    assert verify_chain(rows)[1] == []


async def test_the_operation_rechecks_at_commit_and_moves_nothing_that_is_no_longer_dead(
    store: Store,
) -> None:
    """Between the read and the commit the delivery changed: the commit's view wins."""
    await store.submit(new_message(1))
    await set_delivery(store, 1, "jl.cc", state="DELIVERED")
    before = len(await audit_rows(store))

    moved = await store.submit(Redeliver([(msg_id(1), "jl.cc")], NOW, ME, "admin socket"))

    assert moved == []
    assert (await deliveries(store, 1))["jl.cc"][0] == "DELIVERED"
    assert len(await audit_rows(store)) == before  # nothing changed, nothing audited


async def test_every_dead_letter_to_one_org_comes_back_and_the_rest_are_refused_with_reasons(
    store: Store,
) -> None:
    for n in (1, 2, 3):
        await store.submit(new_message(n))
        await set_delivery(store, n, "jl.cc", state="DEAD", attempts=2)
        await set_delivery(store, n, "jl.jl", state="DEAD", attempts=2)
    await store.submit(new_message(4))
    await set_delivery(store, 4, "jl.cc", state="EXPIRED", expires_at=NOW - 1)

    class Purge(Redeliver):
        def apply(self, conn: Any) -> tuple[Any, list[Any]]:
            m = t.messages
            conn.execute(
                update(m).where(m.c.msg_id == msg_id(2)).values(frame=None, purged_at=NOW - 9)
            )
            return None, []

    await store.submit(Purge([], NOW, {}, ""))

    outcome = await redeliver(
        store.read,
        store.submit,
        Target(None, "jl.cc"),
        now=NOW + 1,
        requested_by=ME,
        via="admin socket",
    )

    assert set(outcome.redelivered) == {(msg_id(1), "jl.cc"), (msg_id(3), "jl.cc")}
    assert [(r.msg_id, r.recipient, r.code) for r in outcome.refused] == [
        (msg_id(2), "jl.cc", "redeliver.purged")
    ]
    assert "[retention] dead_after" in outcome.refused[0].detail
    assert (await deliveries(store, 1))["jl.jl"][0] == "DEAD"  # another recipient: untouched
    assert (await deliveries(store, 4))["jl.cc"][0] == "EXPIRED"  # --dead never picks it


@pytest.mark.parametrize(
    ("setup", "code"),
    [("unknown", "redeliver.unknown"), ("quarantined", "redeliver.quarantined")],
)
async def test_a_message_without_deliveries_is_refused_saying_why(
    store: Store, setup: str, code: str
) -> None:
    if setup == "quarantined":
        await store.submit(new_message(1, recipients=(), state="QUARANTINED"))

    outcome = await redeliver(
        store.read, store.submit, Target(msg_id(1), None), now=NOW, requested_by=ME, via="x"
    )

    assert outcome.redelivered == ()
    assert [r.code for r in outcome.refused] == [code]


async def test_offline_redelivery_refuses_while_the_state_lock_is_held_and_never_creates_a_store(
    tmp_path: Path,
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}"
    async with Store(url) as store:
        await store.submit(new_message(1))
        await set_delivery(store, 1, "jl.cc", state="DEAD")
    held = HubLock(tmp_path / "hubd.lock")
    target = Target(msg_id(1), "jl.cc")

    with held, pytest.raises(LockHeldError):
        await redeliver_offline(url, HubLock(held.path), target, now=NOW, requested_by=ME)
    with pytest.raises(StoreError):
        await redeliver_offline(
            f"sqlite+aiosqlite:///{tmp_path / 'nowhere.db'}",
            HubLock(held.path),
            target,
            now=NOW,
            requested_by=ME,
        )
    outcome = await redeliver_offline(url, HubLock(held.path), target, now=NOW, requested_by=ME)

    assert not (tmp_path / "nowhere.db").exists()
    assert outcome.redelivered == ((msg_id(1), "jl.cc"),)
    assert outcome.via == "hubctl, hub stopped"
    async with Store(url) as again:
        assert (await deliveries(again, 1))["jl.cc"][0] == "PENDING"


async def test_offline_redelivery_on_the_replicas_store_extends_their_chain_and_announces_it(
    tmp_path: Path, pg_url: str
) -> None:
    """With the local replica stopped, the others may be writing: hubctl writes as a
    replica does (under the writers' lock, from the chain's head as it stands) and tells
    the replicas which messages have deliveries again."""
    async with Store(pg_url, shared=True) as other:  # another replica, running
        other.replica = "b"
        await other.submit(new_message(1))
        await set_delivery(other, 1, "jl.cc", state="DEAD")
        heard: list[str] = []
        arrived = asyncio.Event()

        def note(*args: Any) -> None:
            heard.append(args[3])
            arrived.set()

        async with other.engine.connect() as conn:
            driver = (await conn.get_raw_connection()).driver_connection
            assert driver is not None
            await driver.add_listener(JOBS_CHANNEL, note)
            writing = asyncio.create_task(
                other.submit(AppendAudit([AuditEvent("hub.note", NOW, None, None, {})]))
            )
            outcome = await redeliver_offline(
                pg_url,
                HubLock(tmp_path / "hubd.lock"),
                Target(msg_id(1), "jl.cc"),
                now=NOW,
                requested_by=ME,
                shared=True,
            )
            await writing
            await other.submit(AppendAudit([AuditEvent("hub.note", NOW + 1, None, None, {})]))
            async with asyncio.timeout(10):
                await arrived.wait()
        assert outcome.redelivered == ((msg_id(1), "jl.cc"),)
        assert heard == [f"hubctl {msg_id_text(msg_id(1))}"]
        assert verify_chain(await audit_rows(other))[1] == []
