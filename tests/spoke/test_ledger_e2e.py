"""The ledger's evidence end to end: a real hubd, real spoke processes, Mosquitto.

A document is sent and signed for; the sender's ``spoke prove`` writes an evidence file
that the independent verifier (tests/evidence, written from docs/wire-format.md alone)
accepts. Then the hub's operator cuts the last entries out of the store, thoroughly (the
audit rows, the tree's nodes and the checkpoints that covered them, so that the hub itself
starts without a word): the next checkpoint the hub signs is checked by its witnesses,
and the sender's spoke reports ``ledger.fork``, keeps both signed checkpoints and says so
in ``spoke status``; ``hubctl audit verify`` with the spoke's checkpoint names the loss.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hubd.store.ledger import node_key
from schemas import evidence
from schemas.ledger import read_checkpoint
from tests.evidence.independent_verifier import verify as independent_verify
from tests.hubproc import MOSQUITTO
from tests.spoke.procs import FAST_HUB, Exchange, eventually, make_exchange
from tests.world import World

pytestmark = pytest.mark.skipif(not Path(MOSQUITTO).exists(), reason="mosquitto not installed")
LEDGER_TOML = FAST_HUB + '[ledger]\ncheckpoint_interval = "200ms"\n'
CUT = 4  # entries the operator deletes from the end of the ledger


@pytest.fixture
def exchange(tmp_path: Path, world: World) -> Iterator[Exchange]:
    made = make_exchange(tmp_path / "x", world, "mosquitto", hub_toml=LEDGER_TOML)
    try:
        yield made
    finally:
        made.close()


def held_size(folder: Path) -> int:
    frame = folder / "ledger" / "checkpoint.ckpt"
    return read_checkpoint(frame.read_bytes()).size if frame.exists() else 0


def cut_the_tail(db: Path, keep: int) -> None:
    """What an operator who wants entries gone does: every row that speaks of them."""
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM audit WHERE seq > ?", (keep,))
        conn.execute("DELETE FROM ledger_checkpoints WHERE size > ?", (keep,))
        doomed = [
            node_key(level, index)
            for level, index in (
                (pos >> 48, pos & ((1 << 48) - 1))
                for (pos,) in conn.execute("SELECT pos FROM ledger_nodes")
            )
            if (index + 1) << level > keep
        ]
        conn.executemany("DELETE FROM ledger_nodes WHERE pos = ?", [(p,) for p in doomed])


def hubctl(*args: str) -> subprocess.CompletedProcess[str]:
    """The installed ``hubctl``, as an operator types it."""
    return subprocess.run(  # noqa: S603 - our own command
        [str(Path(sys.executable).parent / "hubctl"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def put_back(db: Path, backup: Path) -> None:
    """The runbook's restore: the backup's file in place of the store, without -wal/-shm."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    backup.rename(db)


async def test_evidence_verifies_independently_and_a_cut_ledger_is_a_fork_at_the_witness(
    exchange: Exchange, tmp_path: Path
) -> None:
    gov, cc = await exchange.running("jl.gov", "jl.cc")
    meta = {"主送": "jl.cc", "密级": "内部", "文种": "通知", "标题": "关于核对数据的通知"}
    gov.drop("核对.txt", "请核对附件数据。\n".encode(), meta)
    status = await gov.wait_status("核对.txt", "jl.cc")
    msg_id = status["msg_id"]
    done = cc.cli("sign-for", msg_id)
    assert done.returncode == 0, done.stderr
    await gov.wait_status("核对.txt", "jl.cc", "SIGNED_FOR")

    # the sender's evidence, verified by code that shares nothing with the project's
    out = tmp_path / "evidence.json"
    proved = gov.cli("prove", msg_id, "--out", str(out))
    assert proved.returncode == 0, proved.stderr
    doc = json.loads(out.read_text(encoding="utf-8"))
    hub = exchange.hub
    assert hub is not None
    directory = {org.id: {k.public for k in org.sign_keys} for org in hub.directory.orgs}
    assert independent_verify(doc, hub.hub_key.public, directory) == []
    proven = evidence.verify(doc, trusted_hub_keys=[hub.hub_key.public])
    assert {"message.accepted", "receipt.delivered", "receipt.signed_for"} <= {
        e.event for e in proven.entries
    }
    tied = {(r.status.value, r.recipient) for r in proven.receipts if r.entry_seq is not None}
    assert tied >= {("ACCEPTED", None), ("DELIVERED", "jl.cc"), ("SIGNED_FOR", "jl.cc")}
    report = gov.cli("check-evidence", str(out))
    assert report.returncode == 0, report.stdout + report.stderr
    assert "SIGNED_FOR" in report.stdout

    # the operator cuts the ledger's last entries while the hub is stopped ...
    await eventually(lambda: held_size(gov.work) > CUT, "the sender to hold a checkpoint")
    assert hub.terminate() == 0
    held = held_size(gov.work)
    cut_the_tail(hub.folder / "state" / "hub.db", held - CUT)
    hub.start()  # ... and the hub starts on it: nothing in the store itself is amiss

    fork = await gov.wait_logged("ledger.fork", this_run=False)
    assert fork["level"] == "error"
    assert fork["held_size"] == held
    forks = list((gov.work / "ledger" / "forks").iterdir())
    assert len(forks) == 1
    assert {p.name for p in forks[0].iterdir()} >= {"held.ckpt", "new.ckpt", "why.json"}
    assert read_checkpoint((forks[0] / "held.ckpt").read_bytes()).size == held
    assert held_size(gov.work) == held  # the witness did not adopt the other history
    shown = gov.cli("status")
    assert "ledger fork" in shown.stdout.splitlines()[0].lower(), shown.stdout

    # the hub's own check, given the checkpoint the spoke holds, names the lost range
    witness = str(gov.work / "ledger" / "checkpoint.ckpt")
    verify = hubctl(
        "audit", "verify", "--config", str(hub.folder / "hub.toml"), "--witness", witness
    )
    assert verify.returncode == 1, verify.stdout + verify.stderr
    assert "missing" in verify.stdout + verify.stderr


async def test_a_declared_restore_from_backup_is_explained_to_the_witness_not_a_fork(
    exchange: Exchange, tmp_path: Path
) -> None:
    """The backup-restore runbook of docs/operations.md, followed step by step."""
    gov, _cc = await exchange.running("jl.gov", "jl.cc")
    hub = exchange.hub
    assert hub is not None
    db = hub.folder / "state" / "hub.db"
    meta = {"主送": "jl.cc", "密级": "内部", "文种": "通知", "标题": "备份前的通知"}
    gov.drop("甲.txt", b"before the backup\n", meta)
    await gov.wait_status("甲.txt", "jl.cc")
    backup = tmp_path / "hub-backup.db"
    with sqlite3.connect(db) as live, sqlite3.connect(backup) as copy:
        live.backup(copy)  # what `sqlite3 state/hub.db ".backup ..."` does
    with sqlite3.connect(backup) as copy:
        (backed_up,) = copy.execute("SELECT count(*) FROM audit").fetchone()

    gov.drop("乙.txt", b"after the backup\n", {**meta, "标题": "备份后的通知"})
    await gov.wait_status("乙.txt", "jl.cc")
    await eventually(lambda: held_size(gov.work) > backed_up, "a checkpoint past the backup")

    # the disk fails; the operator stops the hub, puts the backup back and declares it
    assert hub.terminate() == 0
    held = held_size(gov.work)
    put_back(db, backup)
    config = str(hub.folder / "hub.toml")
    declared = hubctl(
        "audit", "restored", "--reason", "disk failure; backup of today", "--config", config
    )
    assert declared.returncode == 0, declared.stdout + declared.stderr
    witness = tmp_path / "checkpoint.ckpt"
    witness.write_bytes((gov.work / "ledger" / "checkpoint.ckpt").read_bytes())
    checked = hubctl("audit", "verify", "--config", config, "--witness", str(witness))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "explained" in checked.stdout + checked.stderr
    hub.start()

    restored = await gov.wait_logged("ledger.restored")
    assert restored["level"] == "warning"
    assert (restored["lost_from"], restored["lost_to"]) == (backed_up, held)
    assert not gov.logged("ledger.fork")
    kept = list((gov.work / "ledger" / "restored").iterdir())
    assert [read_checkpoint(p.read_bytes()).size for p in kept] == [held]
    shown = gov.cli("status")
    assert "ledger fork" not in shown.stdout.lower(), shown.stdout
