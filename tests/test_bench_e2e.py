"""bench/e2e.py's precomputed load (issue 15): what it prepares before the clock starts is
what a real recipient would sign, and covers every document exactly once; its hubs on
PostgreSQL (bench/hubs.py) are configured as replicas must be and have split the buckets
before the clock starts (the bench itself is run by hand; no timing is asserted here)."""

from __future__ import annotations

import hashlib
import tomllib
from pathlib import Path

import pytest

from bench.e2e import RECIPIENTS, SENDERS, _blob, prepare, unverified_receipts
from bench.hubs import (
    BenchHubs,
    BenchSetupError,
    lease_holders,
    owners_of,
    psql,
    split_done,
    spread,
)
from schemas import transport
from schemas.envelope import verify_envelope
from schemas.receipts import ReceiptStatus, verify_receipts
from tests.hubproc import Mosquitto, live_directory
from tests.world import make_world


def test_precomputed_answers_cover_every_document_once_with_batches_the_hub_accepts() -> None:
    world = make_world()
    directory = live_directory(world)
    senders, recipients = SENDERS[:2], RECIPIENTS[:2]
    sent, answers = prepare(_blob(world, directory), senders, recipients, 9, 4)

    frames: dict[str, set[bytes]] = {org: set() for org in recipients}  # digests per recipient
    for org in senders:
        assert len(sent[org]) == 9
        for msg_id, payload in sent[org]:
            msg = transport.decode(payload)
            assert isinstance(msg, transport.EnvelopeMsg)
            envelope = verify_envelope(msg.frame, directory, expected_sender=org)
            assert envelope.header.msg_id == msg_id
            (recipient,) = envelope.header.to
            frames[recipient].add(envelope.digest)
    for org in recipients:
        mine = answers[org]
        assert set(mine.batch_of) == frames[org]  # every delivered frame answers, no other
        assert sum(mine.sizes) == len(frames[org])
        covered: list[bytes] = []
        for index, payload in enumerate(mine.payloads):
            msg = transport.decode(payload)
            assert isinstance(msg, transport.ReceiptsMsg)
            batch = verify_receipts(msg.frame, directory, expected_issuer=org).batch
            assert unverified_receipts(msg.frame) == batch
            assert len(batch.entries) == mine.sizes[index] <= 4
            assert {e.status for e in batch.entries} == {ReceiptStatus.DELIVERED}
            assert len({e.msg_id for e in batch.entries}) == len(batch.entries)
            for entry in batch.entries:
                assert mine.batch_of[entry.subject] == index
                covered.append(entry.subject)
        assert sorted(covered) == sorted(frames[org])
        assert all(len(d) == len(hashlib.sha256().digest()) for d in covered)


# ------------------------------------------------------------------ hubs on PostgreSQL


def test_bench_replicas_get_distinct_names_one_store_one_signed_directory_and_the_broker(
    tmp_path: Path,
) -> None:
    world = make_world()
    hubs = BenchHubs(
        tmp_path, world.hub_key, live_directory(world), 18830, store="postgresql", replicas=2
    )
    hubs.db_url = "postgresql+asyncpg://postgres@127.0.0.1:5432/govx_bench_x"
    configs = [tomllib.loads(hub.write().read_text()) for hub in hubs.processes()]

    assert [c["replicas"] for c in configs] == [
        {"enabled": True, "name": name, "lease": 3.0, "renew": 1.0} for name in ("a", "b")
    ]
    assert {c["hub"]["store"] for c in configs} == {hubs.db_url}
    directories = {Path(c["hub"]["directory"]).read_bytes() for c in configs}
    assert len(directories) == 1  # byte for byte the same signed directory
    for config in configs:
        assert config["broker"]["enabled"] is False  # replicas need an external broker
        assert {c["url"] for c in config["channels"].values()} == {"mqtt://127.0.0.1:18830"}
        assert set(config["channels"]) == {c.id for c in hubs.directory.channels}


def test_one_bench_hub_has_no_replicas_section_and_replicas_need_postgresql(
    tmp_path: Path,
) -> None:
    world = make_world()
    single = BenchHubs(tmp_path, world.hub_key, live_directory(world), 18830)
    (config,) = [tomllib.loads(hub.write().read_text()) for hub in single.processes()]
    assert "replicas" not in config
    assert "store" not in config["hub"]  # SQLite in the hub's state folder
    with pytest.raises(BenchSetupError, match="--store postgresql"):
        BenchHubs(tmp_path, world.hub_key, single.directory, 18830, replicas=2)


def test_a_split_counts_only_when_every_replica_owns_a_sender_and_a_recipient() -> None:
    senders, recipients = ["s1", "s2"], ["r1", "r2"]
    both = {"s1": "a", "s2": "b", "r1": "b", "r2": "a"}
    assert spread(both, senders, recipients)
    assert not spread({**both, "s2": "a"}, senders, recipients)  # b takes no document in
    assert not spread({**both, "r1": "a"}, senders, recipients)  # b delivers nothing
    assert spread(dict.fromkeys(both, "a"), senders, recipients)  # one replica alone


@pytest.mark.slow
def test_two_bench_replicas_split_the_buckets_on_a_database_the_bench_drops(
    tmp_path: Path,
) -> None:
    world = make_world()
    broker = Mosquitto(tmp_path / "mosquitto").start()
    hubs = BenchHubs(tmp_path, world.hub_key, live_directory(world), broker.port, "postgresql", 2)
    senders, recipients = SENDERS, RECIPIENTS
    try:
        hubs.start(senders, recipients)
        database = hubs.db_url.rsplit("/", 1)[1]
        held = lease_holders(hubs.db_url)
        assert split_done(held, ["a", "b"])
        assert hubs.owners == owners_of(held, [*senders, *recipients])
        for group in (senders, recipients):
            assert {hubs.owners[org] for org in group} == {"a", "b"}
        assert len(hubs.pids) == 2
        assert hubs.store_pids()  # the hubs' connections, whose CPU the bench counts
        hubs.terminate()
        assert hubs.error_events() == {"a": 0, "b": 0}
        gone = f"SELECT 1 FROM pg_database WHERE datname = '{database}'"  # noqa: S608 - our name
        assert psql(gone) == []
    finally:
        hubs.stop()
        broker.stop()
