"""The ingest's passes and the dispatcher's pump, in-process with a real store and spool.

These pin down what the pass-and-pump design must keep: a chunked body is finished and
stored once however its chunks overlap; a piece whose publish fails is sent again (never
skipped); a hello from outside the directory leaves nothing behind; and a deep queue is
worked through in passes that let the event loop run between them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from structlog.testing import capture_logs

from hubd.core.leases import BUCKETS, bucket_of
from hubd.core.states import DeliveryState
from hubd.engine.arrival import Arrival
from hubd.engine.dispatch import Dispatcher
from hubd.engine.handover import HandOver
from hubd.engine.intake import MAX_PASS, Ingest
from hubd.engine.jobs import DispatchSettings, Job, Payload
from hubd.store import tables as t
from hubd.store.db import Store
from hubd.store.leases import LeaseLostError
from hubd.store.spool import Spool
from hubd.store.writes import Operation, RecordReceipts, owners
from runtime.clock import now_ms
from schemas import topics, transport
from schemas.envelope import verify_envelope
from schemas.errors import StoreError
from schemas.labels import Classification, DocType, Precedence
from schemas.receipts import ReceiptEntry, ReceiptStatus, sign_receipts
from tests.world import World, make_world

UP = topics.up("govnet", "jl.gov")


@dataclass
class Issuer:
    """Records what the ingest answers (the real issuer signs and publishes it)."""

    entries: list[ReceiptEntry] = field(default_factory=list)

    def issue(self, _dest: str, _channel: str, entry: ReceiptEntry) -> None:
        self.entries.append(entry)

    def send_numbered(self, *_args: object) -> None:
        return None

    def owes(self, *_args: object) -> bool:
        return True  # every hello takes the replay's way

    async def replay(self, *_args: object) -> int:
        return 0

    def statuses(self) -> list[ReceiptStatus]:
        return [e.status for e in self.entries]


@dataclass
class Rig:
    world: World
    store: Store
    spool: Spool
    dispatcher: Dispatcher
    ingest: Ingest
    issuer: Issuer
    stop: asyncio.Event
    task: asyncio.Task[None]


def published(loop: asyncio.AbstractEventLoop, ok: bool = True) -> asyncio.Future[bool]:  # noqa: FBT002
    acked: asyncio.Future[bool] = loop.create_future()
    acked.set_result(ok)
    return acked


@asynccontextmanager
async def running_rig(store: Store, tmp_path: Path) -> AsyncIterator[Rig]:
    """Intake and a dispatcher on ``store``, running until the block ends."""
    world = make_world()
    issuer = Issuer()
    loop = asyncio.get_running_loop()
    spool = Spool(tmp_path / "spool")
    dispatcher = Dispatcher(store, lambda *_: published(loop), DispatchSettings(), lambda *_: None)
    ingest = Ingest(
        directory=lambda: world.directory,
        store=store,
        spool=spool,
        dispatcher=dispatcher,
        issuer=issuer,  # type: ignore[arg-type]
        send=lambda *_: published(loop),
        clock=lambda: world.now,
        max_skew_ms=10**9,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(ingest.run(stop))
    yield Rig(world, store, spool, dispatcher, ingest, issuer, stop, task)
    stop.set()
    async with asyncio.timeout(30):
        await task


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    async with (
        Store(f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}") as store,
        running_rig(store, tmp_path) as running,
    ):
        yield running


async def until(predicate: Any, what: str, within: float = 30.0) -> None:
    try:
        async with asyncio.timeout(within):
            while True:  # polling in-process state, bounded above
                if predicate():
                    return
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"gave up waiting for {what}") from None


async def test_overlapping_chunk_streams_store_a_body_once_and_the_hub_carries_on(
    rig: Rig,
) -> None:
    sealed, ciphertext = rig.world.seal(contents=[bytes(600 * 1024)])
    envelope = verify_envelope(sealed.frame, rig.world.directory, expected_sender="jl.gov")
    msg_id = envelope.header.msg_id
    rig.ingest.on_message(UP, transport.encode(transport.EnvelopeMsg(sealed.frame, None)))
    await until(lambda: rig.spool.get(msg_id) is not None, "the transfer to begin")

    size = transport.CHUNK_BYTES
    offsets = list(range(0, len(ciphertext), size))
    # One pass: the last chunk of an older stream (beyond a gap), then the whole body: the
    # gap's task and the completing chunk's task both find the body complete.
    for offset in [offsets[-1], *offsets]:
        chunk = transport.ChunkMsg(msg_id, offset, ciphertext[offset : offset + size])
        rig.ingest.on_message(UP, transport.encode(chunk))

    await until(lambda: ReceiptStatus.ACCEPTED in rig.issuer.statuses(), "ACCEPTED")
    await until(lambda: rig.ingest.idle, "the ingest to finish every task it started")
    assert rig.issuer.statuses() == [ReceiptStatus.ACCEPTED]
    assert rig.ingest.counts["accepted"] == 1
    assert not rig.task.done()  # the ingest (and so the hub) is still running


async def test_a_hello_from_outside_the_directory_leaves_nothing_behind(rig: Rig) -> None:
    hello = transport.encode(transport.HelloMsg(0))
    for n in range(200):
        rig.ingest.on_message(topics.up("govnet", f"zz.fake{n}"), hello)
    rig.ingest.on_message(topics.up("govnet", "jl.cc"), hello)  # one that is listed

    await until(lambda: rig.dispatcher.is_online("govnet", "jl.cc"), "the listed spoke's hello")
    assert rig.dispatcher.presence("govnet", "zz.fake7") is None
    assert not any(rig.dispatcher.is_online("govnet", f"zz.fake{n}") for n in range(200))


async def test_a_hello_read_before_the_spokes_will_does_not_bring_it_back_online(
    rig: Rig,
) -> None:
    # A spoke says hello and dies at once; the hub reads both from one socket buffer: the
    # hello is queued for the next pass, the will ("offline") is handled on arrival. The
    # hello, checked after, must not mark the dead spoke online (every delivery to it would
    # then be published into the void until its attempts ran out).
    hello = transport.encode(transport.HelloMsg(0))
    rig.ingest.on_message(topics.presence("govnet", "jl.cc"), topics.ONLINE)
    rig.ingest.on_message(topics.up("govnet", "jl.cc"), hello)
    rig.ingest.on_message(topics.presence("govnet", "jl.cc"), topics.OFFLINE)
    rig.ingest.on_message(topics.up("govnet", "jl.gov"), hello)  # one that stays

    await until(lambda: rig.dispatcher.is_online("govnet", "jl.gov"), "the later hello")
    await until(lambda: rig.ingest.idle, "the ingest to be idle")
    assert not rig.dispatcher.is_online("govnet", "jl.cc")

    # The spoke comes back: its new hello counts again.
    rig.ingest.on_message(topics.up("govnet", "jl.cc"), hello)
    await until(lambda: rig.dispatcher.is_online("govnet", "jl.cc"), "the hello after return")


async def test_a_receipt_batch_the_store_refused_leaves_its_delivery_free_to_expire(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    sealed, body = rig.world.seal(expires_at=now_ms() + 300)
    envelope = verify_envelope(sealed.frame, rig.world.directory, expected_sender="jl.gov")
    msg_id = envelope.header.msg_id
    rig.ingest.on_message(UP, transport.encode(transport.EnvelopeMsg(sealed.frame, body)))
    await until(lambda: rig.dispatcher.job(msg_id, "jl.cc") is not None, "the acceptance")

    store_submit = rig.store.submit_parts

    async def refusing(parts: list[list[Operation]]) -> list[Any]:
        if any(isinstance(op, RecordReceipts) for ops in parts for op in ops):
            raise StoreError("disk I/O error (injected)", retriable=True)
        return await store_submit(parts)

    monkeypatch.setattr(rig.store, "submit_parts", refusing)
    delivered = ReceiptEntry(
        msg_id=msg_id,
        recipient="jl.cc",
        status=ReceiptStatus.DELIVERED,
        at=rig.world.now,
        subject=envelope.digest,
        classification=Classification.INTERNAL,
        reason=None,
        detail=None,
        retriable=False,
    )
    frame = sign_receipts("jl.cc", rig.world.keys["jl.cc"].signing, [delivered], at=rig.world.now)
    rig.ingest.on_message(
        topics.up("govnet", "jl.cc"), transport.encode(transport.ReceiptsMsg(frame, 0))
    )

    # The batch was never stored: nothing holds the delivery back from expiring.
    stop = asyncio.Event()
    timers = asyncio.create_task(rig.dispatcher.run(stop))
    try:
        await until(lambda: rig.dispatcher.job(msg_id, "jl.cc") is None, "the expiry", within=10)
    finally:
        stop.set()
        await timers
    assert rig.dispatcher.expired == 1


async def test_a_pass_whose_one_sender_lost_its_lease_stores_and_answers_the_others(
    rig: Rig,
) -> None:
    """On a store shared by replicas, an organisation whose bucket moved to another replica
    fails alone: the other senders of the same pass are stored and answered, and a
    refusal's ledger entry lands (the store's fence is the lease keeper's in the hub)."""
    lost = bucket_of("jl.cc", BUCKETS)

    def fence_for(ops: Sequence[Operation]) -> None:
        if "jl.cc" in owners(ops):  # as the keeper does once it no longer holds the bucket
            raise LeaseLostError("a", {lost})

    rig.store.fence_for = fence_for
    kept, kept_body = rig.world.seal("jl.gov", ["jl.cc"])
    moved, moved_body = rig.world.seal("jl.cc", ["jl.jl"], doc_type=DocType.LETTER)
    forged, forged_body = rig.world.seal("jl.gov", ["jl.jl"])  # on jl.dept.health's topic
    kept_id = verify_envelope(kept.frame, rig.world.directory).header.msg_id
    with capture_logs() as logs:
        for topic, sealed, body in [
            (UP, kept, kept_body),
            (topics.up("govnet", "jl.cc"), moved, moved_body),
            (topics.up("govnet", "jl.dept.health"), forged, forged_body),
        ]:
            rig.ingest.on_message(
                topic, transport.encode(transport.EnvelopeMsg(sealed.frame, body))
            )
        await until(lambda: len(rig.issuer.entries) == 2, "two answers")
        await until(lambda: rig.ingest.idle, "the pass to end")

    assert sorted(e.status for e in rig.issuer.entries) == [
        ReceiptStatus.ACCEPTED,
        ReceiptStatus.REJECTED,
    ]
    stored = {bytes(r[0]) for r in await rig.store.read(select(t.messages.c.msg_id))}
    assert stored == {kept_id}  # not jl.cc's: its sender resends it to the new owner
    events = [r[0] for r in await rig.store.read(select(t.audit.c.event))]
    assert "message.rejected" in events  # the refusal's ledger entry was not lost with it
    moved_lines = [e for e in logs if e["event"] == "message.owner_moved"]
    assert [(e["orgs"], e["operations"]) for e in moved_lines] == [(["jl.cc"], 1)]
    assert not [e for e in logs if e["event"] == "audit.write_failed"]


async def test_a_replica_takes_in_what_it_held_of_a_sender_whose_bucket_it_gains(
    rig: Rig,
) -> None:
    """A bucket changing hands is owned by nobody for a moment; what its senders sent then
    is held, and taken in when the bucket comes, not left for the spoke's resend."""
    owned: set[str] = set()
    rig.ingest.owns = lambda org: org in owned
    rig.ingest.handover = HandOver(hold_ms=5_000)
    sealed, body = rig.world.seal("jl.gov", ["jl.cc"])
    rig.ingest.on_message(UP, transport.encode(transport.EnvelopeMsg(sealed.frame, body)))
    await until(lambda: rig.ingest.idle, "the pass")
    assert rig.issuer.entries == []  # not this replica's sender (yet)

    rig.world.now += 4_000  # the lease ran out and this replica claimed the bucket
    owned.add("jl.gov")
    rig.ingest.gained()

    await until(lambda: rig.issuer.statuses() == [ReceiptStatus.ACCEPTED], "ACCEPTED")
    assert rig.ingest.handover.taken == 1
    assert len(rig.ingest.handover) == 0


async def test_what_a_replica_held_too_long_or_of_others_is_not_taken_in(rig: Rig) -> None:
    owned: set[str] = set()
    rig.ingest.owns = lambda org: org in owned
    rig.ingest.handover = HandOver(hold_ms=5_000)
    for sender, topic in [("jl.gov", UP), ("jl.cc", topics.up("govnet", "jl.cc"))]:
        sealed, body = rig.world.seal(sender, ["jl.jl"], doc_type=DocType.LETTER)
        rig.ingest.on_message(topic, transport.encode(transport.EnvelopeMsg(sealed.frame, body)))
    rig.world.now += 1_000
    owned.add("jl.cc")  # jl.gov's bucket stays another replica's
    rig.ingest.gained()
    await until(lambda: rig.issuer.entries, "jl.cc's answer")
    assert len(rig.ingest.handover) == 1  # jl.gov's, still held

    rig.world.now += 5_000  # older than a hand-over lasts: its sender resends it
    owned.add("jl.gov")
    rig.ingest.gained()
    await asyncio.sleep(0.2)

    assert len(rig.issuer.entries) == 1
    assert rig.ingest.handover.taken == 1
    assert len(rig.ingest.handover) == 0


async def test_a_deep_queue_is_worked_in_passes_that_let_the_loop_run_between_them(
    rig: Rig,
) -> None:
    count = 3 * MAX_PASS
    payloads = []
    for n in range(count):
        sealed, body = rig.world.seal(contents=[b"doc %d" % n])
        payloads.append(transport.encode(transport.EnvelopeMsg(sealed.frame, body)))
    seen_at: list[int] = []
    loop = asyncio.get_running_loop()

    def tick() -> None:  # a callback of anyone else's, queued behind the burst
        seen_at.append(rig.ingest.queued)

    for payload in payloads:
        rig.ingest.on_message(UP, payload)
    loop.call_soon(tick)
    await until(lambda: len(rig.issuer.entries) == count, "every document answered", 120)

    assert rig.issuer.statuses() == [ReceiptStatus.ACCEPTED] * count
    assert seen_at  # it ran ...
    assert seen_at[0] > 0  # ... while most of the burst was still waiting its turn


async def test_a_chunk_whose_publish_fails_is_sent_again_not_skipped(tmp_path: Path) -> None:
    body = tmp_path / "body"
    body.write_bytes(b"x" * (2 * transport.CHUNK_BYTES))
    loop = asyncio.get_running_loop()
    sent: list[tuple[str, int, bool]] = []
    failed_once = False

    def publish(_channel: str, _org: str, payload: bytes) -> asyncio.Future[bool]:
        nonlocal failed_once
        message = transport.decode(payload)
        offset = getattr(message, "offset", -1)
        ok = True
        if offset == transport.CHUNK_BYTES and not failed_once:  # the link drops here once
            failed_once, ok = True, False
        sent.append((type(message).__name__, offset, ok))
        return published(loop, ok)

    async with Store(f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}") as store:
        dispatcher = Dispatcher(store, publish, DispatchSettings(), lambda *_: None)
        dispatcher.set_online("govnet", "jl.cc", online=True)
        job = Job(
            b"\x01" * 16,
            "jl.cc",
            "govnet",
            Precedence.ROUTINE,
            Classification.INTERNAL,
            "jl.gov",
            "govnet",
            None,
            Payload(b"frame", None, body, body.stat().st_size),
        )
        dispatcher.add(job)
        stop = asyncio.Event()
        task = asyncio.create_task(dispatcher.run(stop))
        await until(lambda: job.state is DeliveryState.SENT, "the whole body to go out")
        stop.set()
        await task

    assert sent == [
        ("EnvelopeMsg", -1, True),
        ("ChunkMsg", 0, True),
        ("ChunkMsg", transport.CHUNK_BYTES, False),
        ("ChunkMsg", transport.CHUNK_BYTES, True),  # the same piece again, after the wake
    ]
    assert job.attempts == 1


def test_a_replica_holds_envelopes_only() -> None:
    """Chunks of another replica's transfer would fill the hold in a large upload; a
    receipt batch or a hello comes again by itself (hubd.engine.handover)."""
    hold = HandOver(hold_ms=5_000, max_bytes=1_000_000)
    others = [
        transport.encode(transport.ChunkMsg(bytes(16), 0, bytes(200_000))),
        transport.encode(transport.ReceiptsMsg(b"frame", 0)),
        transport.encode(transport.HelloMsg(0)),
    ]
    for n, payload in enumerate(others * 3):
        hold.hold(Arrival("govnet", "jl.gov", payload, 1_000 + n, n))
    envelope = transport.encode(transport.EnvelopeMsg(b"frame", b"body"))
    hold.hold(Arrival("govnet", "jl.gov", envelope, 2_000, 11))

    assert [a.n for a in hold.take(lambda _org: True, 2_000)] == [11]
