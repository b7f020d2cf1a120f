"""The ledger against the hub's own operator: what `hubctl audit verify` catches.

Real SQLite files, the real Store writing real entries (chain and tree nodes), checkpoints
signed here with the hub's key as the running hub would. Each tampering is what someone
holding the database (and, in the worst case, the hub key) could do by hand; the command
must name the first bad entry or the missing range, and a checkpoint a spoke took before
must catch even a forger who re-signs everything.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Connection, insert
from typer.testing import CliRunner, Result

from hubd.cli import hubctl_app
from hubd.store import ledger as ledgerstore
from hubd.store import tables as t
from hubd.store.audit import GENESIS, AuditEvent, chain_hash
from hubd.store.connections import engine_for
from hubd.store.db import Store
from hubd.store.lock import HubLock
from hubd.store.writes import AppendAudit, RecordReceipts
from runtime.files import write_private
from schemas import evidence, merkle
from schemas.directory import sign_directory
from schemas.keys import HubPublicKey, SigningKey, dump_secret_key
from schemas.labels import Classification
from schemas.ledger import Checkpoint, cosign, read_checkpoint, sign_checkpoint
from schemas.receipts import ReceiptEntry, ReceiptStatus, sign_receipts
from tests.hub.test_store import NOW, new_message
from tests.world import World

SIGNED_AT = 1_700_000_000_000  # checkpoints' times: before any real clock a restore reads


@dataclass
class Hub:
    """A stopped hub's folder: keys, directory, hub.toml and its store."""

    root: Path
    key: SigningKey
    hub_id: str

    @property
    def config(self) -> Path:
        return self.root / "hub.toml"

    @property
    def db(self) -> Path:
        return self.root / "state" / "hub.db"

    @property
    def url(self) -> str:
        return f"sqlite+aiosqlite:///{self.db}"

    @property
    def public_key_file(self) -> Path:
        return self.root / "keys" / "hub.pub.json"


def make_hub(root: Path, world: World) -> Hub:
    keys = root / "keys"
    write_private(keys / "hub.sign.key", dump_secret_key("hub", world.hub_key))
    window = world.directory.hub_keys[0]
    pinned = HubPublicKey(world.hub_key.public, window.not_before, window.not_after)
    (keys / "hub.pub.json").write_bytes(pinned.dump())
    (keys / "directory.bin").write_bytes(sign_directory(world.directory, world.hub_key))
    (root / "state").mkdir()
    (root / "hub.toml").write_text(
        f'[hub]\ndirectory = "{keys / "directory.bin"}"\nkey = "{keys / "hub.sign.key"}"\n'
        f'state_dir = "{root / "state"}"\n',
        encoding="utf-8",
    )
    return Hub(root, world.hub_key, world.directory.hub_id)


def append(hub: Hub, count: int, *, note: str = "n", every_ms: int = 1) -> None:
    """``count`` notes, ``every_ms`` apart."""

    async def run() -> None:
        async with Store(hub.url) as store:
            events = [
                AuditEvent("hub.note", NOW + i * every_ms, None, None, {note: i})
                for i in range(count)
            ]
            await store.submit(AppendAudit(events))

    asyncio.run(run())


def add_message(hub: Hub, n: int) -> None:
    async def run() -> None:
        async with Store(hub.url) as store:
            await store.submit(new_message(n))

    asyncio.run(run())


def on_store(hub: Hub, fn: object) -> object:
    async def run() -> object:
        engine = engine_for(hub.url)
        try:
            async with engine.begin() as conn:
                return await conn.run_sync(fn)  # type: ignore[arg-type]
        finally:
            await engine.dispose()

    return asyncio.run(run())


def sign(hub: Hub, at: int, key: SigningKey | None = None) -> bytes:
    """A checkpoint of the ledger as it stands, stored as the hub's Checkpointer stores it."""

    def run(conn: Connection) -> bytes:
        size = ledgerstore.ledger_size(conn)
        root = ledgerstore.root(conn, size)
        frame = sign_checkpoint(Checkpoint(hub.hub_id, size, root, at), key or hub.key)
        conn.execute(
            insert(t.ledger_checkpoints).values(
                size=size, root=root, at=at, kid=(key or hub.key).kid, frame=frame
            )
        )
        return frame

    frame = on_store(hub, run)
    assert isinstance(frame, bytes)
    return frame


def sql(hub: Hub, statement: str, *params: object) -> None:
    with sqlite3.connect(hub.db) as db:
        db.execute(statement, params)


def rehash_chain(hub: Hub) -> None:
    """What a forger with the database does: recompute every row's chain hash."""
    with sqlite3.connect(hub.db) as db:
        rows = db.execute(
            "SELECT seq, at, event, msg_id, org, detail FROM audit ORDER BY seq"
        ).fetchall()
        prev = GENESIS
        for seq, at, event, msg_id, org, detail in rows:
            digest = chain_hash(
                prev, seq=seq, at=at, event=event, msg_id=msg_id, org=org, detail=detail
            )
            db.execute(
                "UPDATE audit SET prev_hash = ?, hash = ? WHERE seq = ?", (prev, digest, seq)
            )
            prev = digest


def rebuild_tree_and_resign(hub: Hub) -> None:
    """The forger also holds the hub key: nodes rebuilt, every checkpoint signed again."""

    def run(conn: Connection) -> None:
        conn.execute(t.ledger_nodes.delete())
        ledgerstore.build_nodes(conn)
        for c in ledgerstore.checkpoints(conn):
            root = ledgerstore.root(conn, c.size)
            frame = sign_checkpoint(Checkpoint(hub.hub_id, c.size, root, c.at), hub.key)
            conn.execute(
                t.ledger_checkpoints.update()
                .where(t.ledger_checkpoints.c.size == c.size)
                .values(root=root, frame=frame)
            )

    on_store(hub, run)


def verify(hub: Hub, *witnesses: Path) -> Result:
    argv = ["audit", "verify", "--config", str(hub.config)]
    for w in witnesses:
        argv += ["--witness", str(w)]
    return CliRunner().invoke(hubctl_app, argv)


def keep(tmp_path: Path, name: str, frame: bytes) -> Path:
    """What a spoke keeps: its latest verified checkpoint, the raw frame."""
    path = tmp_path / f"{name}.ckpt"
    path.write_bytes(frame)
    return path


@pytest.fixture
def hub(tmp_path: Path, world: World) -> Hub:
    """12 entries (a message's among them) with checkpoints signed at sizes 8 and 12."""
    h = make_hub(tmp_path / "hub", world)
    add_message(h, 1)  # message.accepted, delivery.routed ...: the first entries
    append(h, 8 - ledger_size(h))
    sign(h, SIGNED_AT + 8)
    append(h, 4)
    sign(h, SIGNED_AT + 12)
    return h


def ledger_size(hub: Hub) -> int:
    size = on_store(hub, ledgerstore.ledger_size)
    assert isinstance(size, int)
    return size


# ---------------------------------------------------------------------------- intact


def test_an_intact_ledger_with_signed_checkpoints_verifies_and_exits_0(hub: Hub) -> None:
    result = verify(hub)

    assert result.exit_code == 0, result.output
    assert "12 rows checked, 2 signed checkpoints" in result.stdout
    assert "intact" in result.stdout


# ---------------------------------------------------------------------------- deletions


def test_deleting_the_tail_covered_by_a_checkpoint_names_the_deleted_range(hub: Hub) -> None:
    sql(hub, "DELETE FROM audit WHERE seq > 9")

    result = verify(hub)

    assert result.exit_code == 1, result.output
    assert "entries 10..12 were deleted (the checkpoint of size 12 signed at" in result.stdout
    assert "problems" in result.stderr


def test_deleting_the_tail_and_its_checkpoint_is_still_found_by_the_tree_nodes(hub: Hub) -> None:
    sql(hub, "DELETE FROM audit WHERE seq > 8")
    sql(hub, "DELETE FROM ledger_checkpoints WHERE size = 12")

    result = verify(hub)

    assert result.exit_code == 1, result.output
    assert "entries 9..12 were deleted (the tree's stored nodes cover them" in result.stdout


def test_deleting_a_middle_row_names_it(hub: Hub) -> None:
    sql(hub, "DELETE FROM audit WHERE seq = 5")

    result = verify(hub)

    assert result.exit_code == 1, result.output
    assert "row 6: expected seq 5" in result.stdout
    assert "entry 5 is missing from the middle of the ledger" in result.stdout
    assert "the checkpoint of size 12" in result.stdout


# ---------------------------------------------------------------------------- forgeries


def test_an_edited_row_with_the_chain_rehashed_breaks_the_tree_and_the_checkpoint(
    hub: Hub,
) -> None:
    sql(hub, "UPDATE audit SET detail = ? WHERE seq = 6", '{"n":99}')
    rehash_chain(hub)

    result = verify(hub)

    assert result.exit_code == 1, result.output
    assert "row " not in result.stdout  # the chain alone says nothing: it was re-hashed
    assert "entries 5..6: the tree's stored node (level 1) differs" in result.stdout
    assert "checkpoint of size 8" in result.stdout
    assert "entries 1..8 were changed after it was signed" in result.stdout


def test_reordered_rows_rehashed_are_found(hub: Hub) -> None:
    with sqlite3.connect(hub.db) as db:
        a = db.execute("SELECT at, event, msg_id, org, detail FROM audit WHERE seq = 9").fetchone()
        b = db.execute("SELECT at, event, msg_id, org, detail FROM audit WHERE seq = 10").fetchone()
        for seq, values in ((9, b), (10, a)):
            db.execute(
                "UPDATE audit SET at = ?, event = ?, msg_id = ?, org = ?, detail = ? WHERE seq = ?",
                (*values, seq),
            )
    rehash_chain(hub)

    result = verify(hub)

    assert result.exit_code == 1, result.output
    assert "entries 9..10: the tree's stored node (level 1) differs" in result.stdout
    assert "checkpoint of size 12" in result.stdout
    assert "checkpoint of size 8" not in result.stdout


def test_a_forger_with_the_hub_key_is_caught_only_by_a_witness_checkpoint_from_before(
    hub: Hub, tmp_path: Path
) -> None:
    witness = keep(tmp_path, "spoke", on_checkpoint(hub, 12))
    sql(hub, "UPDATE audit SET detail = ? WHERE seq = 11", '{"n":99}')
    rehash_chain(hub)
    rebuild_tree_and_resign(hub)

    alone = verify(hub)
    witnessed = verify(hub, witness)

    assert alone.exit_code == 0, alone.output  # everything the store holds agrees with itself
    assert witnessed.exit_code == 1, witnessed.output
    assert "history differs from what the witness saw: root at size 12 is" in witnessed.stdout
    assert str(witness) in witnessed.stdout


def on_checkpoint(hub: Hub, size: int) -> bytes:
    def run(conn: Connection) -> bytes:
        return next(c.frame for c in ledgerstore.checkpoints(conn) if c.size == size)

    frame = on_store(hub, run)
    assert isinstance(frame, bytes)
    return frame


def test_a_checkpoint_signed_by_another_key_is_reported(hub: Hub) -> None:
    append(hub, 1)
    sign(hub, SIGNED_AT + 13, key=SigningKey.generate())

    result = verify(hub)

    assert result.exit_code == 1, result.output
    assert "checkpoint of size 13" in result.stdout
    assert "which is not a hub key" in result.stdout


def test_a_damaged_tree_node_is_reported_by_the_entries_it_covers(hub: Hub) -> None:
    sql(
        hub,
        "UPDATE ledger_nodes SET hash = ? WHERE pos = ?",
        bytes(32),
        ledgerstore.node_key(2, 1),
    )

    result = verify(hub)

    assert result.exit_code == 1, result.output
    assert "entries 5..8: the tree's stored node (level 2) differs" in result.stdout
    assert "checkpoint" not in result.stdout  # the entries themselves are intact


# ---------------------------------------------------------------------------- restores


def test_a_store_replaced_by_an_older_backup_is_caught_by_a_newer_witness_checkpoint(
    tmp_path: Path, world: World
) -> None:
    h = make_hub(tmp_path / "hub", world)
    append(h, 8)
    sign(h, SIGNED_AT + 8)
    backup = tmp_path / "backup.db"
    shutil.copyfile(h.db, backup)  # the hub is stopped: a plain copy is consistent
    append(h, 4)
    witness = keep(tmp_path, "spoke", sign(h, SIGNED_AT + 12))
    shutil.copyfile(backup, h.db)

    alone = verify(h)
    witnessed = verify(h, witness)

    assert alone.exit_code == 0, alone.output  # the backup is consistent in itself
    assert witnessed.exit_code == 1, witnessed.output
    assert (
        "entries 9..12 are missing: the store is older than what the witness saw "
        "(restored from a backup, or truncated)" in witnessed.stdout
    )

    restored = CliRunner().invoke(
        hubctl_app,
        ["audit", "restored", "--reason", "disk failure", "--config", str(h.config)],
    )
    assert restored.exit_code == 0, restored.output
    assert "ledger.restored written as entry 9" in restored.stdout
    assert "beyond size 8" in restored.stdout

    after = verify(h, witness)

    assert after.exit_code == 0, after.output
    assert "explained:" in after.stdout
    assert "entries 9..12 as the witness saw them were lost in a restore" in after.stdout
    assert "disk failure" in after.stdout


def test_the_restored_entry_states_the_size_the_reason_the_checkpoint_and_who(
    hub: Hub,
) -> None:
    result = CliRunner().invoke(
        hubctl_app, ["audit", "restored", "--reason", "备份恢复", "--config", str(hub.config)]
    )

    assert result.exit_code == 0, result.output
    with sqlite3.connect(hub.db) as db:
        event, detail = db.execute("SELECT event, detail FROM audit WHERE seq = 13").fetchone()
    stated = json.loads(detail)
    assert event == "ledger.restored"
    assert stated["restored_size"] == 12
    assert stated["reason"] == "备份恢复"
    assert stated["last_checkpoint"]["size"] == 12
    assert stated["last_checkpoint"]["at"] == SIGNED_AT + 12
    assert set(stated["requested_by"]) == {"uid", "user"}
    assert verify(hub).exit_code == 0  # written through the store: chain and tree intact


def test_restored_refuses_while_the_hub_runs_and_writes_nothing(hub: Hub) -> None:
    with HubLock(hub.root / "state" / "hubd.lock"):
        result = CliRunner().invoke(
            hubctl_app, ["audit", "restored", "--reason", "x", "--config", str(hub.config)]
        )

    assert result.exit_code == 2, result.output
    assert "stop the hub first" in result.stderr
    assert isinstance(result.exception, SystemExit)
    assert ledger_size(hub) == 12


def test_two_stores_that_diverged_after_a_common_prefix_are_told_apart_by_a_witness(
    tmp_path: Path, world: World
) -> None:
    """Two hubs (one key) presenting different histories to different spokes."""
    a = make_hub(tmp_path / "a", world)
    append(a, 6)
    b = make_hub(tmp_path / "b", world)
    shutil.copyfile(a.db, b.db)
    append(a, 4, note="to_gov")
    append(b, 4, note="to_cc")
    seen_by_gov = keep(tmp_path, "gov", sign(a, SIGNED_AT + 10))
    sign(b, SIGNED_AT + 10)

    assert verify(a, seen_by_gov).exit_code == 0
    result = verify(b, seen_by_gov)

    assert result.exit_code == 1, result.output
    assert "history differs from what the witness saw: root at size 10" in result.stdout


# ---------------------------------------------------------------------------- witness input


def test_an_evidence_file_is_accepted_as_a_witness(hub: Hub, tmp_path: Path) -> None:
    proved = CliRunner().invoke(
        hubctl_app,
        ["audit", "prove", new_message(1).row["msg_id"].hex(), "--config", str(hub.config)],
    )
    assert proved.exit_code == 0, proved.output
    file = tmp_path / "evidence.json"
    file.write_text(proved.stdout, encoding="utf-8")

    result = verify(hub, file)

    assert result.exit_code == 0, result.output
    assert "1 witness checkpoints compared" in result.stdout


def test_an_unreadable_witness_file_exits_2_with_one_line(hub: Hub, tmp_path: Path) -> None:
    garbage = tmp_path / "x.ckpt"
    garbage.write_bytes(b"not a checkpoint")

    for path in (tmp_path / "missing.ckpt", garbage):
        result = verify(hub, path)
        assert result.exit_code == 2, result.output
        assert isinstance(result.exception, SystemExit)
        assert len(result.stderr.strip().splitlines()) == 1
        assert ".spoke/ledger/checkpoint.ckpt" in result.stderr


def test_a_witness_checkpoint_signed_by_an_unknown_key_is_a_problem(
    hub: Hub, tmp_path: Path
) -> None:
    stranger = SigningKey.generate()
    frame = sign_checkpoint(Checkpoint(hub.hub_id, 12, merkle.EMPTY_ROOT, SIGNED_AT + 12), stranger)

    result = verify(hub, keep(tmp_path, "forged", frame))

    assert result.exit_code == 1, result.output
    assert f"signed by key {stranger.kid}, which is not a hub key" in result.stdout


def test_verify_streams_entries_the_same_as_the_store_builds_them(hub: Hub) -> None:
    """The recomputed root equals the stored tree's: both read the same leaves."""

    def run(conn: Connection) -> tuple[bytes, bytes]:
        leaves = [e.leaf_hash() for e in ledgerstore.stream_entries(conn)]
        return merkle.root_of(leaves), ledgerstore.root(conn, len(leaves))

    roots = on_store(hub, run)
    assert isinstance(roots, tuple)
    assert roots[0] == roots[1]


# ---------------------------------------------------------------------------- evidence


def delivered_by_cc(hub: Hub, world: World, n: int) -> bytes:
    """jl.cc's signed DELIVERED for message ``n``, recorded as ingest records it (12.4)."""
    message = new_message(n)
    mid = message.row["msg_id"]
    entry = ReceiptEntry(
        msg_id=mid,
        recipient="jl.cc",
        status=ReceiptStatus.DELIVERED,
        at=NOW + 50,
        subject=message.row["frame_sha256"],
        classification=Classification.INTERNAL,
        reason=None,
        detail=None,
        retriable=False,
    )
    frame = sign_receipts("jl.cc", world.keys["jl.cc"].signing, [entry], at=NOW + 50)
    sha = hashlib.sha256(frame).digest()
    row = {
        "msg_id": mid,
        "recipient": "jl.cc",
        "status": "DELIVERED",
        "issuer": "jl.cc",
        "at": NOW + 50,
        "subject": entry.subject,
        "batch_sha256": sha,
    }
    event = AuditEvent(
        "receipt.delivered", NOW + 51, mid, "jl.cc", {"issuer": "jl.cc", "batch_sha256": sha.hex()}
    )

    async def run() -> None:
        async with Store(hub.url) as store:
            await store.submit(RecordReceipts(sha, "jl.cc", frame, NOW + 51, [row], [event]))

    asyncio.run(run())
    return frame


def prove(hub: Hub, n: int, out: Path) -> Result:
    mid = new_message(n).row["msg_id"].hex()
    return CliRunner().invoke(
        hubctl_app, ["audit", "prove", mid, "--out", str(out), "--config", str(hub.config)]
    )


def check(hub: Hub, file: Path) -> Result:
    return CliRunner().invoke(
        hubctl_app,
        ["audit", "check-evidence", str(file), "--hub-key", str(hub.public_key_file)],
    )


def test_proven_evidence_verifies_offline_and_with_check_evidence(
    tmp_path: Path, world: World
) -> None:
    h = make_hub(tmp_path / "hub", world)
    add_message(h, 1)
    append(h, 3)
    delivered_by_cc(h, world, 1)
    sign(h, SIGNED_AT + 1)
    out = tmp_path / "evidence.json"

    result = prove(h, 1, out)

    assert result.exit_code == 0, result.output
    doc = evidence.loads(out.read_bytes())
    report = evidence.verify(doc, trusted_hub_keys=[world.hub_key.public])
    assert report.ok, report.problems
    assert [e.event for e in report.entries][-1] == "receipt.delivered"
    assert [(r.status, r.entry_seq) for r in report.receipts] == [
        (ReceiptStatus.DELIVERED, report.entries[-1].seq)
    ]
    checked = check(h, out)
    assert checked.exit_code == 0, checked.output
    assert "receipt DELIVERED for jl.cc from jl.cc" in checked.stdout
    assert "holds" in checked.stdout


def test_evidence_proven_after_an_entry_of_the_message_was_edited_fails(
    tmp_path: Path, world: World
) -> None:
    h = make_hub(tmp_path / "hub", world)
    add_message(h, 1)
    append(h, 3)
    sign(h, SIGNED_AT + 1)
    sql(h, "UPDATE audit SET at = at + 1 WHERE seq = 1")
    out = tmp_path / "evidence.json"

    result = prove(h, 1, out)
    checked = check(h, out)

    assert result.exit_code == 0, result.output
    assert checked.exit_code == 1, checked.output
    assert "entry seq 1" in checked.stdout
    assert "not proven to be in the ledger" in checked.stdout


def test_entries_after_the_latest_checkpoint_are_left_out_and_said_so(
    tmp_path: Path, world: World
) -> None:
    h = make_hub(tmp_path / "hub", world)
    add_message(h, 1)
    sign(h, SIGNED_AT + 1)
    delivered_by_cc(h, world, 1)
    out = tmp_path / "evidence.json"

    result = prove(h, 1, out)

    assert result.exit_code == 0, result.output
    assert "provable after the next one, within [ledger] checkpoint_interval" in result.stderr
    assert check(h, out).exit_code == 0


def test_prove_without_a_covering_checkpoint_exits_1_saying_when(
    tmp_path: Path, world: World
) -> None:
    h = make_hub(tmp_path / "hub", world)
    add_message(h, 1)

    result = prove(h, 1, tmp_path / "evidence.json")

    assert result.exit_code == 1, result.output
    assert "provable after the next checkpoint" in result.stderr
    assert not (tmp_path / "evidence.json").exists()


def test_a_purged_message_keeps_its_entries_and_its_evidence(tmp_path: Path, world: World) -> None:
    """Retention removes content, never entries or proofs (what hubd.engine.retention writes: the
    frame and body gone, a message.purged entry with their hashes)."""
    h = make_hub(tmp_path / "hub", world)
    add_message(h, 1)
    delivered_by_cc(h, world, 1)
    mid = new_message(1).row["msg_id"]
    sql(h, "UPDATE messages SET frame = NULL, body = NULL, purged_at = ? WHERE msg_id = ?", 9, mid)

    async def purged() -> None:
        async with Store(h.url) as store:
            event = AuditEvent("message.purged", NOW + 90, mid, "jl.gov", {"frame_kept": False})
            await store.submit(AppendAudit([event]))

    asyncio.run(purged())
    sign(h, SIGNED_AT + 1)
    out = tmp_path / "evidence.json"

    result = prove(h, 1, out)

    assert result.exit_code == 0, result.output
    report = evidence.verify(evidence.loads(out.read_bytes()), trusted_hub_keys=[h.key.public])
    assert report.ok, report.problems
    events = [e.event for e in report.entries]
    assert events[0] == "message.accepted"
    assert events[-1] == "message.purged"
    assert verify(h).exit_code == 0


def test_entries_no_checkpoint_covers_over_a_long_span_are_reported(
    tmp_path: Path, world: World
) -> None:
    """Without the hub key a forger deletes the checkpoints, rewrites and re-hashes: the
    chain and the tree agree again, but a day of entries that no checkpoint covers cannot
    be what a running hub leaves (it signs within checkpoint_interval)."""
    h = make_hub(tmp_path / "hub", world)

    append(h, 25, every_ms=3_600_000)  # a day of entries, an hour apart
    sign(h, SIGNED_AT + 1)
    assert verify(h).exit_code == 0

    sql(h, "DELETE FROM ledger_checkpoints")
    result = verify(h)

    assert result.exit_code == 1, result.output
    assert "entries 1..25" in result.output
    assert "covered by no signed checkpoint" in result.output


def test_with_checkpoints_off_uncovered_entries_are_not_a_problem(
    tmp_path: Path, world: World
) -> None:
    h = make_hub(tmp_path / "hub", world)
    with h.config.open("a", encoding="utf-8") as config:
        config.write("\n[ledger]\ncheckpoints = false\n")

    append(h, 25, every_ms=3_600_000)  # a day of entries, an hour apart
    assert verify(h).exit_code == 0


def test_a_restore_claim_not_right_after_the_ledger_it_names_explains_nothing(
    tmp_path: Path, world: World
) -> None:
    """A forger rewrites entries and adds a ledger.restored entry claiming a smaller size
    than where it stands: it is not what `hubctl audit restored` writes, so it does not
    excuse the witness's checkpoint."""
    h = make_hub(tmp_path / "hub", world)
    append(h, 12)
    witness = keep(tmp_path, "spoke", sign(h, SIGNED_AT + 12))
    sql(h, "DELETE FROM ledger_checkpoints")
    sql(h, "DELETE FROM ledger_nodes")
    sql(h, "DELETE FROM audit WHERE seq > 10")

    async def claim() -> None:  # at seq 11, claiming the restored ledger had 8 entries
        async with Store(h.url) as store:
            detail = {"restored_size": 8, "reason": "disk failure"}
            event = AuditEvent("ledger.restored", SIGNED_AT + 99, None, None, detail)
            await store.submit(AppendAudit([event]))

    on_store(h, ledgerstore.build_nodes)
    asyncio.run(claim())
    result = verify(h, witness)

    assert result.exit_code == 1, result.output
    assert "explained:" not in result.stdout
    assert "missing: the store is older than what the witness saw" in result.stdout


def test_prove_prefers_the_latest_countersigned_checkpoint_that_covers_the_message(
    tmp_path: Path, world: World
) -> None:
    h = make_hub(tmp_path / "hub", world)
    add_message(h, 1)
    witnessed = read_checkpoint(sign(h, SIGNED_AT + 1))
    append(h, 3)
    sign(h, SIGNED_AT + 2)  # the latest, not countersigned
    cc = world.keys["jl.cc"].signing
    sql(
        h,
        "INSERT INTO ledger_cosignatures (size, org, kid, sig, at) VALUES (?, ?, ?, ?, ?)",
        witnessed.size, "jl.cc", cc.kid, cosign(witnessed, cc), SIGNED_AT + 3,
    )  # fmt: skip
    out = tmp_path / "evidence.json"

    result = prove(h, 1, out)

    assert result.exit_code == 0, result.output
    doc = evidence.loads(out.read_bytes())
    report = evidence.verify(
        doc,
        trusted_hub_keys=[world.hub_key.public],
        trusted_keys=evidence.organisation_keys(world.directory),
    )
    assert report.ok, report.problems
    assert report.checkpoint.size == witnessed.size
    assert report.cosigners == ["jl.cc"]
