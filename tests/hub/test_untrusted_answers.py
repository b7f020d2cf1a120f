"""What the hub answers is safe to show, and it answers no stranger.

In-process, with a real store: a receipt's detail that quotes a peer's text goes out with
its control characters escaped; bytes on the up topic of an id the directory does not list
are recorded (ledger entry, security event) and never answered.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path

from sqlalchemy import select
from structlog.testing import capture_logs

from hubd.engine.issuer import ReceiptIssuer
from hubd.store import tables as t
from hubd.store.db import Store
from schemas import topics, transport
from schemas.labels import Classification
from schemas.receipts import ReceiptEntry, ReceiptStatus, verify_receipts
from tests.hub.test_ingest_passes import Rig, rig, until
from tests.world import make_world

__all__ = ["rig"]  # the fixture, shared with test_ingest_passes


async def test_a_receipt_detail_quoting_a_peers_control_characters_goes_out_escaped(
    tmp_path: Path,
) -> None:
    world = make_world()
    sent: list[tuple[str, str, bytes]] = []
    loop = asyncio.get_running_loop()

    def send(channel: str, org: str, payload: bytes) -> asyncio.Future[bool]:
        sent.append((channel, org, payload))
        acked: asyncio.Future[bool] = loop.create_future()
        acked.set_result(True)
        return acked

    raw = "sender 'jl.gov\x1b[2J\x85\u202exx' is not the topic's\n" + "y" * 3000
    async with Store(f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}") as store:
        issuer = ReceiptIssuer(
            world.directory.hub_id, world.hub_key, store, send, lambda: world.now
        )
        issuer.issue(
            "jl.gov",
            "govnet",
            ReceiptEntry(
                msg_id=None,
                recipient=None,
                status=ReceiptStatus.REJECTED,
                at=1,
                subject=hashlib.sha256(b"x").digest(),
                classification=Classification.INTERNAL,
                reason="header.sender_mismatch",
                detail=raw[:2000],
                retriable=False,
            ),
        )
        await issuer.flush()

    [(_, _, payload)] = sent
    message = transport.decode(payload)
    assert isinstance(message, transport.ReceiptsMsg)
    [entry] = verify_receipts(message.frame, world.directory).batch.entries
    assert entry.detail is not None
    assert entry.detail.startswith("sender 'jl.gov\\x1b[2J\\x85\\u202exx' is not the topic's\\x0a")
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in entry.detail)
    assert len(entry.detail) == 2000
    assert entry.detail.endswith("…")


async def test_bytes_from_an_id_outside_the_directory_are_recorded_and_never_answered(
    rig: Rig,
) -> None:
    with capture_logs() as logs:
        rig.ingest.on_message(topics.up("govnet", "zz.stranger"), b"\x92not an envelope")
        rig.ingest.on_message(topics.up("govnet", "jl.gov"), b"\x92not an envelope")
        await until(lambda: rig.ingest.idle and len(rig.issuer.entries) == 1, "the answer")
        await until(lambda: rig.ingest.idle, "the ledger entries")

    # the listed sender hears of its refusal; the stranger hears nothing
    assert rig.issuer.statuses() == [ReceiptStatus.REJECTED]
    stranger = [e for e in logs if e["event"] == "message.stranger"]
    assert [(e["org"], e["channel"]) for e in stranger] == [("zz.stranger", "govnet")]
    rows = await rig.store.read(
        select(t.audit.c.org, t.audit.c.detail).where(t.audit.c.event == "message.rejected")
    )
    recorded = {org: json.loads(detail) for org, detail in rows}
    assert recorded["zz.stranger"]["answered"] is False
    assert recorded["zz.stranger"]["channel"] == "govnet"
    assert "answered" not in recorded["jl.gov"]
