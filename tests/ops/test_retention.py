"""Retention against a real hubd (issue 6, section 4): with a period of one second, what was
delivered loses its content (inline and spooled), what is still awaited keeps it, the
audit chain verifies after the purge and hubctl trace shows it."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path
from typing import Any

from schemas import transport
from schemas.ids import msg_id_text
from schemas.receipts import ReceiptStatus
from tests.hub.conftest import HubSpawner, SpokeSpawner, wait_for_log
from tests.hubproc import HubProcess
from tests.ops.test_hubctl import NO_RETRIES, WITHIN, accepted, as_json, hubctl, until

FAST_RETENTION = (
    NO_RETRIES + '\n[retention]\ndelivered_after = "1s"\ndead_after = "1h"\ninterval = "1s"\n'
)


def rows(hub: HubProcess, *msg_ids: bytes) -> dict[bytes, dict[str, Any]]:
    """The stored message rows, read-only (the hub is running)."""
    db = hub.folder / "state" / "hub.db"
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as raw:
        raw.row_factory = sqlite3.Row
        found = raw.execute(
            f"SELECT * FROM messages WHERE msg_id IN ({', '.join('?' * len(msg_ids))})",  # noqa: S608
            msg_ids,
        ).fetchall()
    return {bytes(r["msg_id"]): dict(r) for r in found}


async def test_delivered_messages_lose_their_content_and_the_ledger_still_verifies(
    spawn_hub: HubSpawner, spawn_spoke: SpokeSpawner, tmp_path: Path
) -> None:
    hub = spawn_hub(extra_toml=FAST_RETENTION)
    recipient = spawn_spoke(hub, "jl.cc")  # confirms what it receives; jl.jl stays offline
    await recipient.connect()
    sender = spawn_spoke(hub, "jl.gov")
    await sender.connect()
    small = await accepted(sender, ["jl.cc"])
    source, ciphertext = tmp_path / "large.bin", tmp_path / "large.sealed"
    source.write_bytes(os.urandom(transport.INLINE_BODY_MAX + 1000))
    sealed = await asyncio.to_thread(sender.seal_file, ["jl.cc"], source, ciphertext)
    assert sealed.body.size > transport.INLINE_BODY_MAX  # it travels in chunks: spooled
    await sender.send_file(sealed, ciphertext)
    large = sealed.header.msg_id
    await sender.wait_for(lambda: sender.has(large, ReceiptStatus.ACCEPTED), WITHIN)
    waiting = await accepted(sender, ["jl.jl"])
    for msg_id in (small, large):
        await sender.wait_for(lambda m=msg_id: sender.has(m, ReceiptStatus.DELIVERED), WITHIN)

    async def both_purged() -> bool:
        """The purge's end state: it marks the rows first (purged_at), removes the spooled
        file, then forgets its path; between the two a row is marked but still names it."""
        found = rows(hub, small, large)
        return all(
            found[m]["purged_at"] is not None and found[m]["body_path"] is None
            for m in (small, large)
        )

    await until(both_purged)
    stored = rows(hub, small, large, waiting)
    audit = await hubctl(hub, "audit", "verify")
    trace = await as_json(hub, "trace", msg_id_text(large))
    text = await hubctl(hub, "trace", msg_id_text(small))
    logged = await wait_for_log(hub, lambda e: e.get("event") == "retention.purged")
    spool: Path = hub.folder / "state" / "spool"

    for msg_id in (small, large):
        row = stored[msg_id]
        assert (row["frame"], row["body"], row["body_path"]) == (None, None, None)
        assert len(row["frame_sha256"]) == 32  # what the receipts speak of stays
        assert row["body_size"] > 0
    assert stored[large]["body_size"] == sealed.body.size
    assert not (spool / f"{msg_id_text(large)}.body").exists()
    kept = stored[waiting]  # to an offline recipient: untouched
    assert kept["purged_at"] is None
    assert kept["frame"] is not None
    assert kept["body"] is not None
    assert audit.exit_code == 0, audit.output
    assert "the chain is intact" in audit.stdout
    purge = [s for s in trace["timeline"] if s["event"] == "message.purged"]
    assert len(purge) == 1
    assert purge[0]["detail"]["spooled"] is True  # it was in the spool, now it is not
    assert purge[0]["detail"]["frame_sha256"] == trace_frame_sha256(trace)
    assert trace["message"]["purged_at"] is not None
    assert text.exit_code == 0, text.output
    assert "content purged by retention at" in text.stdout
    assert "PURGED" in text.stdout
    assert isinstance(logged["messages"], int)
    assert logged["messages"] >= 1
    assert {"spool_files", "content_bytes", "batches"} <= set(logged)


def trace_frame_sha256(trace: dict[str, Any]) -> str:
    """The frame's hash as the ledger recorded it when the message was accepted."""
    [accepted_step] = [s for s in trace["timeline"] if s["event"] == "message.accepted"]
    return str(accepted_step["detail"]["frame_sha256"])
