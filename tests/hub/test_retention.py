"""Retention (hubd.engine.retention) on a real SQLite file and a real PostgreSQL, with the clock
in the test's hand: which messages lose their content and when, what is kept, the ledger
after the purge."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from hubd.config import Retention as RetentionSettings
from hubd.engine.retention import Retention, signed_body_sha256
from hubd.ops.redeliver import Target, redeliver
from hubd.store import tables as t
from hubd.store.audit import verify_chain
from hubd.store.db import Store
from hubd.store.writes import DirectWrite
from tests.hub.test_store import NOW, audit_rows, msg_id, new_message
from tests.world import World

HOUR = 3_600_000
SETTINGS = RetentionSettings(delivered_after=3600.0, dead_after=3 * 3600.0, batch=2)
LATER = NOW + 2 * HOUR  # past delivered_after, not past dead_after, for what ended at NOW


class Set(DirectWrite):
    """Put rows into a situation, as the hub's own writes would have."""

    def __init__(self, table: Any, where: Any, **values: Any) -> None:
        self.table, self.where, self.values = table, where, values

    def apply(self, conn: Any) -> tuple[None, list[Any]]:
        conn.execute(update(self.table).where(self.where).values(self.values))
        return None, []


async def finish(store: Store, n: int, *states: str, at: int = NOW) -> None:
    """Message n's deliveries (jl.cc, jl.jl) end in ``states`` at ``at``."""
    d = t.deliveries
    for recipient, state in zip(("jl.cc", "jl.jl"), states, strict=True):
        where = (d.c.msg_id == msg_id(n)) & (d.c.recipient == recipient)
        await store.submit(Set(d, where, state=state, updated_at=at))


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """Both back ends: the purge's SQL (row-value keyset, EXISTS, the partial index) on each."""
    url = (
        f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}"
        if request.param == "sqlite"
        else str(request.getfixturevalue("pg_url"))
    )
    async with Store(url) as opened:
        yield opened


async def messages(store: Store) -> dict[int, dict[str, Any]]:
    m = t.messages
    rows = await store.read(select(m))
    return {int.from_bytes(bytes(r.msg_id), "big"): dict(r._mapping) for r in rows}


# (states of jl.cc and jl.jl, when they ended, purged at LATER?)
CASES: dict[str, tuple[tuple[str, str], int, bool]] = {
    "delivered long ago": (("DELIVERED", "SIGNED_FOR"), NOW, True),
    "delivered recently": (("DELIVERED", "DELIVERED"), LATER - HOUR // 2, False),
    "expired long ago": (("EXPIRED", "DELIVERED"), NOW, True),
    "one still pending": (("DELIVERED", "PENDING"), NOW, False),
    "one still sent": (("SENT", "DELIVERED"), NOW, False),
    "dead, within dead_after": (("DEAD", "DELIVERED"), NOW, False),
    "dead, past dead_after": (("DEAD", "DELIVERED"), LATER - 4 * HOUR, True),
}


async def test_only_finished_messages_older_than_their_period_lose_frame_and_body(
    store: Store,
) -> None:
    for n, (states, ended, _) in enumerate(CASES.values(), start=1):
        await store.submit(new_message(n))
        await finish(store, n, *states, at=ended)
    quarantined = len(CASES) + 1
    await store.submit(new_message(quarantined, recipients=(), state="QUARANTINED"))

    done = await Retention(store, SETTINGS, lambda: LATER).purge()

    rows = await messages(store)
    for n, (name, (_, _, purged)) in enumerate(CASES.items(), start=1):
        row = rows[n]
        if purged:
            assert (row["frame"], row["body"], row["purged_at"]) == (None, None, LATER), name
        else:
            assert row["frame"] == b"frame-%d" % n, name
            assert (row["body"], row["purged_at"]) == (b"body", None), name
        # what identifies and describes the message stays whatever happens
        assert row["frame_sha256"] == hashlib.sha256(b"frame-%d" % n).digest(), name
        assert (row["body_size"], row["sender"], row["classification"]) == (4, "jl.gov", 1)
    assert rows[quarantined]["frame"] is not None  # evidence of a security event: kept
    expected = sum(1 for *_, p in CASES.values() if p)
    assert done.messages == expected
    assert done.batches == 2  # batch = 2: bounded transactions, not one for the backlog
    assert done.content_bytes == 4 * expected


async def test_each_purge_is_audited_with_the_hashes_and_the_chain_still_verifies(
    store: Store,
) -> None:
    await store.submit(new_message(1))
    await finish(store, 1, "DELIVERED", "DELIVERED")

    await Retention(store, SETTINGS, lambda: LATER).purge()

    rows = await audit_rows(store)
    entry = rows[-1]
    assert (entry.event, entry.msg_id, entry.org, entry.at) == (
        "message.purged",
        msg_id(1),
        "jl.gov",
        LATER,
    )
    assert hashlib.sha256(b"frame-1").hexdigest() in entry.detail
    assert '"frame_kept":false' in entry.detail
    checked, problems = verify_chain(rows)
    assert (checked, problems) == (len(rows), [])


async def test_a_request_keeps_its_frame_so_a_later_reply_can_be_checked_against_it(
    store: Store,
) -> None:
    request = new_message(1)
    request.row["doc_type"] = "REQUEST"
    await store.submit(request)
    await finish(store, 1, "DELIVERED", "DELIVERED")

    await Retention(store, SETTINGS, lambda: LATER).purge()

    row = (await messages(store))[1]
    assert (row["frame"], row["body"], row["purged_at"]) == (b"frame-1", None, LATER)
    assert '"frame_kept":true' in (await audit_rows(store))[-1].detail


@pytest.mark.parametrize("doc_type", ["NOTICE", "REQUEST"])
async def test_a_large_groups_slots_go_with_its_frame_and_a_request_keeps_both(
    store: Store, doc_type: str
) -> None:
    message = new_message(1)
    message.row["doc_type"] = doc_type
    for delivery in message.deliveries:
        delivery["slot"] = b"slot of " + delivery["recipient"].encode()
    await store.submit(message)
    await finish(store, 1, "DELIVERED", "DELIVERED")

    await Retention(store, SETTINGS, lambda: LATER).purge()

    slots = await store.read(select(t.deliveries.c.slot).where(t.deliveries.c.msg_id == msg_id(1)))
    kept = doc_type == "REQUEST"  # a 批复 finds the 请示's primary recipients in its slots
    assert {r.slot for r in slots} == ({b"slot of jl.cc", b"slot of jl.jl"} if kept else {None})


async def test_a_spooled_body_file_is_removed_after_the_commit_and_its_path_cleared(
    store: Store, tmp_path: Path
) -> None:
    body = tmp_path / "spool" / "one.body"
    body.parent.mkdir()
    body.write_bytes(b"ciphertext")
    spooled = new_message(1)
    spooled.row.update(body=None, body_path=str(body), body_size=10)
    await store.submit(spooled)
    await finish(store, 1, "DELIVERED", "DELIVERED")

    done = await Retention(store, SETTINGS, lambda: LATER).purge()

    assert not body.exists()
    assert done.spool_files == 1
    row = (await messages(store))[1]
    assert (row["body_path"], row["purged_at"]) == (None, LATER)
    assert '"spooled":true' in (await audit_rows(store))[-1].detail


async def test_spool_files_a_crash_left_after_the_purge_commit_are_removed_at_the_next_start(
    store: Store, tmp_path: Path
) -> None:
    body = tmp_path / "left.body"
    body.write_bytes(b"ciphertext")
    await store.submit(new_message(1))
    m = t.messages
    await store.submit(  # purged, but the process died before the file went
        Set(m, m.c.msg_id == msg_id(1), frame=None, body=None, body_path=str(body), purged_at=NOW)
    )

    removed = await Retention(store, SETTINGS, lambda: LATER).recover()

    assert removed == 1
    assert not body.exists()
    assert (await messages(store))[1]["body_path"] is None


async def test_a_redelivery_that_lands_first_keeps_the_message_from_the_purge(
    store: Store,
) -> None:
    """The purge re-checks at commit time: a dead letter brought back is awaited again."""
    await store.submit(new_message(1))
    await finish(store, 1, "DEAD", "DELIVERED", at=LATER - 4 * HOUR)
    await redeliver(
        store.read,
        store.submit,
        Target(msg_id(1), "jl.cc"),
        now=LATER - 1,
        requested_by={"uid": 0},
        via="admin socket",
    )

    done = await Retention(store, SETTINGS, lambda: LATER).purge()

    assert done.messages == 0
    assert (await messages(store))[1]["frame"] == b"frame-1"


def test_the_body_hash_is_read_from_the_signed_header_and_unreadable_frames_give_none(
    world: World,
) -> None:
    sealed, body = world.seal()

    assert signed_body_sha256(sealed.frame) == hashlib.sha256(body).digest()
    assert signed_body_sha256(b"frame-1") is None
