"""Revoking a compromised key on a real hub: ``hubctl keys revoke``, SIGHUP, and from that
moment everything the key signs is refused, with a reason that names it.

A real hubd (embedded broker, SQLite), simulated spokes that seal with ``schemas``, and the
operator's commands as typed (tests/ops/keysite.py). The thief is a simulated spoke that
still holds the revoked key.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hubd.cli import hubctl_app
from runtime.clock import now_ms
from schemas import transport
from schemas.receipts import ReceiptEntry, ReceiptStatus, sign_receipts
from schemas.seal import Sealed
from tests.hub.conftest import HubSpawner, SpokeSpawner, wait_for_log
from tests.hubproc import HubProcess
from tests.ops.keysite import OperatorSite
from tests.spoke.procs import eventually
from tests.spokesim import SimSpoke
from tests.world import World

WITHIN = 20.0
REASON = "服务器失窃 server stolen"


async def answer(spoke: SimSpoke, sealed: Sealed) -> ReceiptEntry:
    """The hub's ACCEPTED or REJECTED for ``sealed`` (a REJECTED for bytes the hub could not
    authenticate has no msg_id: it names the frame's SHA-256)."""
    subject = hashlib.sha256(sealed.frame).digest()

    def found() -> ReceiptEntry | None:
        for entry in [*spoke.receipts.get(sealed.header.msg_id, []), *spoke.receipts.get(None, [])]:
            if entry.subject == subject and entry.status in {
                ReceiptStatus.ACCEPTED,
                ReceiptStatus.REJECTED,
            }:
                return entry
        return None

    await spoke.wait_for(lambda: found() is not None, within=WITHIN)
    entry = found()
    assert entry is not None
    return entry


def audit(hub: HubProcess, event: str) -> list[dict[str, object]]:
    """The details of ``event`` in the hub's audit ledger (read-only, beside the hub)."""
    db = sqlite3.connect(f"file:{hub.folder / 'state' / 'hub.db'}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT org, detail FROM audit WHERE event = ? ORDER BY seq", (event,))
        return [{"org": org, **json.loads(detail)} for org, detail in rows.fetchall()]
    finally:
        db.close()


@pytest.fixture
def hub(spawn_hub: HubSpawner) -> HubProcess:
    return spawn_hub()


@pytest.fixture
def site(hub: HubProcess, world: World, tmp_path: Path) -> OperatorSite:
    return OperatorSite(hub, world, tmp_path / "operator")


async def test_a_revoked_key_is_refused_from_the_reload_on_naming_the_key_and_the_revocation(
    hub: HubProcess, site: OperatorSite, spawn_spoke: SpokeSpawner, world: World
) -> None:
    thief = spawn_spoke(hub, "jl.cc")  # holds jl.cc's key, which is about to be revoked
    other = spawn_spoke(hub, "jl.gov")
    recipient = spawn_spoke(hub, "jl.th")
    for spoke in (thief, other, recipient):
        await spoke.connect()
    kid = world.keys["jl.cc"].signing.kid
    before = await answer(thief, await thief.send(["jl.gov"]))
    assert before.status is ReceiptStatus.ACCEPTED

    revoked = site.revoke(kid, REASON)
    hub.hup()

    assert f"revoked signing key {kid} of jl.cc: {REASON}" in revoked.stdout
    logged = await wait_for_log(hub, lambda e: e["event"] == "key.revoked")
    assert (
        logged.items()
        >= {
            "org": "jl.cc",
            "kid": kid,
            "kind": "signing",
            "reason": REASON,
            "directory_version": 2,
            "level": "error",
        }.items()
    )
    # from that moment: an envelope signed with it is REJECTED, naming key and revocation
    refused = await answer(thief, await thief.send(["jl.gov"]))
    assert refused.status is ReceiptStatus.REJECTED
    assert refused.reason == "sig.key_revoked"
    assert refused.detail is not None
    assert f"key {kid} (used by jl.cc) is revoked in directory version 2" in refused.detail
    used = await wait_for_log(
        hub, lambda e: e["event"] == "key.revoked_used" and e.get("what") == "envelope"
    )
    assert used["org"] == "jl.cc"
    assert kid in str(used["detail"])
    # ... and so is a receipt batch it signs
    entry = ReceiptEntry(
        msg_id=before.msg_id,
        recipient="jl.cc",
        status=ReceiptStatus.DELIVERED,
        at=now_ms(),
        subject=before.subject,
        classification=before.classification,
        reason=None,
        detail=None,
        retriable=False,
    )
    batch = sign_receipts("jl.cc", thief.signing, [entry], at=now_ms())
    await thief.publish_raw(transport.encode(transport.ReceiptsMsg(batch, 0)))
    refused_batch = await wait_for_log(hub, lambda e: e["event"] == "receipt.refused")
    assert refused_batch["reason"] == "sig.key_revoked"
    await wait_for_log(
        hub, lambda e: e["event"] == "key.revoked_used" and e.get("what") == "receipt batch"
    )
    # everyone else carries on as before
    assert (await answer(other, await other.send(["jl.th"]))).status is ReceiptStatus.ACCEPTED
    # the revocation is in the audit ledger, with the operator's reason, and the chain holds
    (recorded,) = audit(hub, "key.revoked")
    assert recorded | {"revoked_at": None} == {
        "org": "jl.cc",
        "kid": kid,
        "kind": "signing",
        "reason": REASON,
        "revoked_at": None,
        "directory_version": 2,
    }
    assert [d["version"] for d in audit(hub, "directory.loaded")] == [1]
    assert [(d["version"], d["previous_version"]) for d in audit(hub, "directory.reloaded")] == [
        (2, 1)
    ]
    verified = await asyncio.to_thread(
        CliRunner().invoke,
        hubctl_app,
        ["audit", "verify", "--config", str(hub.folder / "hub.toml")],
    )
    assert verified.exit_code == 0, verified.output
    assert "the chain is intact" in verified.stdout


async def test_a_revocation_is_recorded_once_not_again_by_later_reloads(
    hub: HubProcess, site: OperatorSite, world: World
) -> None:
    site.revoke(world.keys["jl.th"].encryption.kid, "key file copied by a contractor")
    hub.hup()
    await wait_for_log(hub, lambda e: e["event"] == "key.revoked")
    site.build()  # v3: the revocation carries over, nothing new
    hub.hup()

    await eventually(lambda: len(audit(hub, "directory.reloaded")) == 2, "both reloads audited")
    (recorded,) = audit(hub, "key.revoked")
    assert (recorded["org"], recorded["kind"]) == ("jl.th", "encryption")
    assert [e["directory_version"] for e in hub.log_events() if e["event"] == "key.revoked"] == [2]
    assert site.directory.revoked == (world.keys["jl.th"].encryption.kid,)
