"""The shared spool (hubd.store.sharedspool): bodies kept in the store for hub replicas.

Two spool instances on two engines of one database stand for two replicas. What they must
hold to: a transfer one began, the other finishes; the stored pieces read back by offset
are the body; an append racing another at the same offset is refused and the body stays
whole; a body whose hash is wrong is refused and its pieces removed; retention removes a
stored body; a partial transfer is found again after a restart. And the engine uses it:
the intake takes chunks into the store, the dispatcher delivers from it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from hubd.engine.dispatch import Dispatcher
from hubd.engine.intake import Ingest
from hubd.engine.jobs import DispatchSettings
from hubd.engine.retention import Retention
from hubd.store import tables as t
from hubd.store.bodyref import StoredBody, body_ref
from hubd.store.connections import engine_for
from hubd.store.db import Store
from hubd.store.sharedspool import StoreSpool, read_body, spool_for
from hubd.store.spool import Spool, TransferMovedError
from schemas import topics, transport
from schemas.envelope import VerifiedEnvelope, verify_envelope
from schemas.errors import PeerError, Reason
from schemas.receipts import ReceiptStatus
from tests.hub.test_ingest_passes import Issuer, published, until
from tests.hub.test_retention import LATER, SETTINGS, finish
from tests.hub.test_store import msg_id, new_message
from tests.world import World, make_world

CHUNK = transport.CHUNK_BYTES
CHANNEL = "govnet"


@pytest.fixture(params=["postgresql", "sqlite"])
async def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated store: PostgreSQL (what replicas share), and SQLite (it must migrate and
    work too, though a SQLite hub keeps its folder)."""
    opened = (
        str(request.getfixturevalue("pg_url"))
        if request.param == "postgresql"
        else f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}"
    )
    async with Store(opened):
        pass  # migrations ran
    return opened


@pytest.fixture
async def engines(url: str) -> AsyncIterator[tuple[AsyncEngine, AsyncEngine]]:
    """Two replicas' engines on one database."""
    a, b = engine_for(url), engine_for(url)
    yield a, b
    await a.dispose()
    await b.dispose()


@pytest.fixture
def world() -> World:
    return make_world()


def verifier(world: World) -> Callable[[bytes, str, bytes | None], VerifiedEnvelope]:
    def verify(frame: bytes, org: str, slots: bytes | None) -> VerifiedEnvelope:
        return verify_envelope(frame, world.directory, expected_sender=org, slots=slots)

    return verify


def large(world: World, size: int = 3 * CHUNK + 1000) -> tuple[VerifiedEnvelope, bytes]:
    sealed, ciphertext = world.seal(contents=[bytes(range(256)) * (size // 256)])
    envelope = verify_envelope(sealed.frame, world.directory, expected_sender="jl.gov")
    return envelope, ciphertext


def chunks(body: bytes) -> list[tuple[int, bytes]]:
    return [(at, body[at : at + CHUNK]) for at in range(0, len(body), CHUNK)]


async def pieces(engine: AsyncEngine, msg: bytes) -> int:
    p = t.spool_pieces
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).where(p.c.msg_id == msg))).scalar_one())


async def whole(engine: AsyncEngine, msg: bytes, size: int, step: int) -> bytes:
    """The body read back as the dispatcher does, ``step`` bytes from each offset."""
    out = b""
    while len(out) < size:
        data = await read_body(engine, msg, len(out), step)
        assert data, f"nothing at offset {len(out)}"
        out += data
    return out


async def test_a_transfer_begun_on_one_replica_is_finished_by_another(
    engines: tuple[AsyncEngine, AsyncEngine], world: World
) -> None:
    envelope, body = large(world)
    msg = envelope.header.msg_id
    a, b = StoreSpool(engines[0], verifier(world)), StoreSpool(engines[1], verifier(world))
    began = await a.begin(envelope, CHANNEL, "jl.gov")
    for offset, data in chunks(body)[:2]:
        assert await a.append(began, offset, data)
    # Replica A dies; B owns the sender now and gets the next chunk: it finds A's transfer.
    assert b.get(msg) is None
    taken = await b.find(msg)
    assert taken is not None
    assert (taken.org, taken.channel, taken.received) == ("jl.gov", CHANNEL, 2 * CHUNK)
    for offset, data in chunks(body)[2:]:
        assert await b.append(taken, offset, data)

    stored = await b.finish(taken)

    assert stored == StoredBody(msg)
    assert body_ref(str(stored)) == stored  # what the message row keeps names it again
    assert await b.partial() == []  # finished: no longer a transfer under way
    assert await whole(engines[0], msg, len(body), CHUNK) == body
    assert await whole(engines[1], msg, len(body), 100_003) == body  # offsets off the pieces
    assert await read_body(engines[0], msg, len(body), CHUNK) == b""


async def test_an_append_racing_another_at_the_same_offset_is_refused_and_the_body_stays_whole(
    engines: tuple[AsyncEngine, AsyncEngine], world: World
) -> None:
    envelope, body = large(world)
    msg = envelope.header.msg_id
    a, b = StoreSpool(engines[0], verifier(world)), StoreSpool(engines[1], verifier(world))
    mine = await a.begin(envelope, CHANNEL, "jl.gov")
    assert await a.append(mine, 0, body[:CHUNK])
    theirs = await b.find(msg)
    assert theirs is not None

    # Both replicas take the chunk at CHUNK at once (a handover): one append wins.
    outcomes = await asyncio.gather(
        a.append(mine, CHUNK, body[CHUNK : 2 * CHUNK]),
        b.append(theirs, CHUNK, body[CHUNK : 2 * CHUNK]),
        return_exceptions=True,
    )
    assert sorted(type(o).__name__ for o in outcomes) == ["TransferMovedError", "bool"]
    loser, winner = (a, b) if isinstance(outcomes[0], TransferMovedError) else (b, a)
    assert loser.get(msg) is None  # forgotten: its view was stale
    # A stale append (bytes that differ, at an offset the store has) is refused too.
    stale = await loser.find(msg)
    assert stale is not None
    assert stale.received == 2 * CHUNK  # picked up from what the store holds
    kept = winner.get(msg)
    assert kept is not None
    assert await winner.append(kept, 2 * CHUNK, body[2 * CHUNK : 3 * CHUNK])
    with pytest.raises(TransferMovedError):
        await loser.append(stale, 2 * CHUNK, bytes(CHUNK))

    assert await winner.append(kept, 3 * CHUNK, body[3 * CHUNK :])
    await winner.finish(kept)
    assert await whole(engines[0], msg, len(body), CHUNK) == body


async def test_a_body_whose_hash_is_wrong_is_refused_and_its_pieces_removed(
    engines: tuple[AsyncEngine, AsyncEngine], world: World
) -> None:
    envelope, body = large(world)
    msg = envelope.header.msg_id
    spool = StoreSpool(engines[0], verifier(world))
    transfer = await spool.begin(envelope, CHANNEL, "jl.gov")
    forged = body[:-1] + bytes([body[-1] ^ 1])
    for offset, data in chunks(forged):
        assert await spool.append(transfer, offset, data)
    assert await pieces(engines[0], msg) == len(chunks(body))

    with pytest.raises(PeerError) as refused:
        await spool.finish(transfer)
    await spool.discard(transfer)

    assert refused.value.reason is Reason.BODY_HASH_MISMATCH
    assert await pieces(engines[1], msg) == 0
    assert await spool.partial() == []
    assert await StoreSpool(engines[1], verifier(world)).find(msg) is None


async def test_bytes_past_the_signed_size_are_refused_before_they_reach_the_store(
    engines: tuple[AsyncEngine, AsyncEngine], world: World
) -> None:
    envelope, body = large(world, size=CHUNK)
    spool = StoreSpool(engines[0], verifier(world))
    transfer = await spool.begin(envelope, CHANNEL, "jl.gov")

    with pytest.raises(PeerError) as refused:
        await spool.append(transfer, 0, body + b"more")

    assert refused.value.reason is Reason.BODY_TRAILING_DATA
    assert await pieces(engines[0], envelope.header.msg_id) == 0


async def test_a_partial_transfer_is_found_after_a_restart(
    url: str, world: World, tmp_path: Path
) -> None:
    envelope, body = large(world)
    before = engine_for(url)
    spool = spool_for(
        shared=True, folder=tmp_path / "unused", engine=before, verify=verifier(world)
    )
    transfer = await spool.begin(envelope, CHANNEL, "jl.gov")
    assert await spool.append(transfer, 0, body[:CHUNK])
    await before.dispose()  # the hub stops

    after = engine_for(url)
    try:
        again = StoreSpool(after, verifier(world))
        found = await again.partial()
        assert found == [(CHANNEL, "jl.gov", envelope.frame, None)]
        adopted = await again.adopt(envelope, CHANNEL, "jl.gov")
        assert adopted.received == CHUNK
        for offset, data in chunks(body)[1:]:
            assert await again.append(adopted, offset, data)
        assert await again.finish(adopted) == StoredBody(envelope.header.msg_id)
        assert not (tmp_path / "unused").exists()  # the store's spool makes no folder
    finally:
        await after.dispose()


async def test_retention_removes_a_stored_body_and_clears_its_reference(url: str) -> None:
    async with Store(url) as store:
        spooled = new_message(1)
        spooled.row.update(body=None, body_path=str(StoredBody(msg_id(1))), body_size=2 * CHUNK)
        await store.submit(spooled)
        async with store.engine.begin() as conn:
            await conn.execute(
                t.spool_pieces.insert(),
                [{"msg_id": msg_id(1), "offset": at, "data": bytes(CHUNK)} for at in (0, CHUNK)],
            )
        await finish(store, 1, "DELIVERED", "DELIVERED")

        done = await Retention(store, SETTINGS, lambda: LATER).purge()

        assert done.spool_files == 1
        assert await pieces(store.engine, msg_id(1)) == 0
        rows = await store.read(select(t.messages.c.body_path, t.messages.c.purged_at))
        assert [(r.body_path, r.purged_at) for r in rows] == [(None, LATER)]


@dataclass
class Replica:
    """One hub's intake and dispatcher on the shared store, publishing into ``sent``."""

    store: Store
    spool: StoreSpool
    ingest: Ingest
    issuer: Issuer
    sent: list[tuple[str, Any]]

    def up(self, org: str, message: transport.TransportMsg) -> None:
        self.ingest.on_message(topics.up(CHANNEL, org), transport.encode(message))

    def delivered(self, org: str) -> bytes:
        return b"".join(
            m.data for to, m in self.sent if to == org and isinstance(m, transport.ChunkMsg)
        )


def stored_bytes(hub: Replica, msg: bytes) -> int:
    transfer = hub.spool.get(msg)
    return -1 if transfer is None else transfer.received


@asynccontextmanager
async def replica(url: str, world: World) -> AsyncIterator[Replica]:
    async with Store(url) as store:
        spool = StoreSpool(store.engine, verifier(world))
        loop = asyncio.get_running_loop()
        sent: list[tuple[str, Any]] = []

        def publish(_channel: str, org: str, payload: bytes) -> asyncio.Future[bool]:
            sent.append((org, transport.decode(payload)))
            return published(loop)

        issuer = Issuer()
        dispatcher = Dispatcher(store, publish, DispatchSettings(), lambda *_: None)
        ingest = Ingest(
            directory=lambda: world.directory,
            store=store,
            spool=spool,
            dispatcher=dispatcher,
            issuer=issuer,  # type: ignore[arg-type]
            send=publish,
            clock=lambda: world.now,
            max_skew_ms=10**9,
        )
        stop = asyncio.Event()
        tasks = [
            asyncio.create_task(ingest.run(stop)),
            asyncio.create_task(dispatcher.run(stop)),
        ]
        try:
            yield Replica(store, spool, ingest, issuer, sent)
        finally:
            stop.set()
            async with asyncio.timeout(30):
                await asyncio.gather(*tasks)


async def test_the_hub_takes_a_chunked_body_into_the_store_and_delivers_it_from_there(
    pg_url: str, world: World
) -> None:
    envelope, body = large(world)
    msg = envelope.header.msg_id
    async with replica(pg_url, world) as hub:
        hub.up("jl.gov", transport.EnvelopeMsg(envelope.frame, None))
        await until(lambda: ("jl.gov", transport.ResumeMsg(msg, 0)) in hub.sent, "the resume")
        for offset, data in chunks(body):  # one read from the broker: one pass
            hub.up("jl.gov", transport.ChunkMsg(msg, offset, data))
        await until(lambda: ReceiptStatus.ACCEPTED in hub.issuer.statuses(), "ACCEPTED")
        rows = await hub.store.read(select(t.messages.c.body_path))
        assert [r.body_path for r in rows] == [str(StoredBody(msg))]

        hub.up("jl.cc", transport.HelloMsg(0))  # the recipient comes online

        await until(lambda: len(hub.delivered("jl.cc")) >= len(body), "the body delivered")
        assert hub.delivered("jl.cc") == body
        assert await pieces(hub.store.engine, msg) == len(chunks(body))


async def test_a_replica_goes_on_with_chunks_of_a_transfer_another_replica_began(
    pg_url: str, world: World
) -> None:
    envelope, body = large(world)
    msg = envelope.header.msg_id
    async with replica(pg_url, world) as first:
        first.up("jl.gov", transport.EnvelopeMsg(envelope.frame, None))
        await until(lambda: ("jl.gov", transport.ResumeMsg(msg, 0)) in first.sent, "the resume")
        for offset, data in chunks(body)[:2]:
            first.up("jl.gov", transport.ChunkMsg(msg, offset, data))
        await until(lambda: stored_bytes(first, msg) == 2 * CHUNK, "two chunks stored")
    # The first replica is gone; the sender's next chunks reach the second, which has never
    # seen the head: it finds the transfer in the store and takes them from there.
    async with replica(pg_url, world) as second:
        for offset, data in chunks(body)[2:]:
            second.up("jl.gov", transport.ChunkMsg(msg, offset, data))
        await until(lambda: ReceiptStatus.ACCEPTED in second.issuer.statuses(), "ACCEPTED")
        assert await whole(second.store.engine, msg, len(body), CHUNK) == body
        assert second.issuer.statuses() == [ReceiptStatus.ACCEPTED]  # stored once


async def test_the_folder_spool_keeps_appending_without_awaiting(
    tmp_path: Path, world: World
) -> None:
    envelope, body = large(world)
    spool = Spool(tmp_path / "spool")
    transfer = await spool.begin(envelope, CHANNEL, "jl.gov")
    for offset, data in chunks(body):
        assert spool.append_now(transfer, offset, data)  # on the loop: no task, no thread
    finished = await spool.finish(transfer)
    assert finished.read_bytes() == body
