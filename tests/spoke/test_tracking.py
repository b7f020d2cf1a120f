"""A sent document's status moves on with every receipt (spoke.tracking), DEAD included.

After ``hubctl redeliver`` the recipient's DELIVERED follows the hub's DEAD: status.json
and ``spoke status`` must say DELIVERED, per recipient and overall, and keep the history.
The receipts are the ones the hub sends (the DEAD as hubd's outcome makes it, signed by
the hub; the DELIVERED signed by the recipient), verified as the agent verifies them.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from runtime.clock import now_ms
from schemas.keys import SigningKey
from schemas.labels import Classification
from schemas.receipts import ReceiptEntry, ReceiptStatus, sign_receipts, verify_receipts
from spoke.sender import Sender
from spoke.state import Outbound, SpokeState
from spoke.tools import status_table
from spoke.tracking import overall_status, recipient_status
from tests.spoke.conftest import OfflineSpoke, OfflineSpokeFactory
from tests.spoke.procs import toml_meta
from tests.world import World

TO_TWO = (
    'to = "jl.cc, jl.jl"\nclassification = "内部"\ndoc_type = "通知"\ntitle = "关于供暖的通知"\n'
)


@pytest.mark.parametrize(
    ("receipts", "status"),
    [
        ([], "PENDING"),
        (["DEAD"], "DEAD"),
        (["DEAD", "DELIVERED"], "DELIVERED"),  # redelivered
        (["DEAD", "SIGNED_FOR"], "SIGNED_FOR"),
        (["DEAD", "DELIVERED", "SIGNED_FOR"], "SIGNED_FOR"),
        (["EXPIRED", "DELIVERED"], "DELIVERED"),  # its inbox holds it after all
        (["DELIVERED", "DEAD"], "DELIVERED"),  # a late DEAD changes nothing
        (["SIGNED_FOR", "DELIVERED"], "SIGNED_FOR"),  # SIGNED_FOR implies DELIVERED
        (["DEAD", "EXPIRED"], "EXPIRED"),  # redelivered, then its expiry passed
        (["DEAD", "DEAD"], "DEAD"),  # redelivered and given up again
    ],
)
def test_a_recipients_status_follows_its_receipts_in_arrival_order(
    receipts: list[str], status: str
) -> None:
    assert recipient_status(receipts) == status


@pytest.mark.parametrize(
    ("statuses", "overall"),
    [
        (["DELIVERED", "DEAD"], "DEAD"),
        (["DELIVERED", "EXPIRED", "DEAD"], "DEAD"),
        (["PENDING", "EXPIRED"], "EXPIRED"),
        (["DELIVERED", "PENDING"], "PENDING"),
        (["SIGNED_FOR", "DELIVERED"], "DELIVERED"),
        (["SIGNED_FOR", "SIGNED_FOR"], "SIGNED_FOR"),
    ],
)
def test_a_documents_status_is_its_most_needy_recipients(statuses: list[str], overall: str) -> None:
    assert overall_status(statuses) == overall


def entry(out: Outbound, status: ReceiptStatus, recipient: str | None, **more: Any) -> ReceiptEntry:
    fields: dict[str, Any] = {
        "msg_id": out.msg_id,
        "recipient": recipient,
        "status": status,
        "at": now_ms(),
        "subject": hashlib.sha256(out.frame).digest(),
        "classification": Classification.INTERNAL,
        "reason": None,
        "detail": None,
        "retriable": False,
    } | more
    return ReceiptEntry(**fields)


def deliver(spoke: OfflineSpoke, issuer: str, key: SigningKey, *entries: ReceiptEntry) -> None:
    """A signed batch, verified as the agent does, each entry handed to the sender."""
    frame = sign_receipts(issuer, key, list(entries), at=now_ms())
    for verified in verify_receipts(frame, spoke.directory).batch.entries:
        spoke.sender.receipt(verified)


def status_json(spoke: OfflineSpoke, out: Outbound) -> dict[str, Any]:
    path = spoke.ctx.config.folder("sent") / out.msg_id.hex() / "status.json"
    loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return loaded


async def test_a_dead_delivery_redelivered_and_confirmed_shows_delivered_with_its_history(
    offline_spoke: OfflineSpokeFactory, world: World
) -> None:
    gov = offline_spoke("jl.gov")
    gov.drop("通知.txt", "关于做好冬季供暖工作的通知。\n".encode(), TO_TWO)
    await gov.settle()
    [out] = gov.outbound()
    hub = gov.directory.hub_id
    deliver(gov, hub, world.hub_key, entry(out, ReceiptStatus.ACCEPTED, None))
    gave_up = "jl.cc did not confirm after 8 attempts; an operator can redeliver it"
    deliver(
        gov,
        hub,
        world.hub_key,
        entry(out, ReceiptStatus.DEAD, "jl.cc", reason="delivery.gave_up", detail=gave_up),
    )
    deliver(gov, "jl.jl", world.keys["jl.jl"].signing, entry(out, ReceiptStatus.DELIVERED, "jl.jl"))

    dead = status_json(gov, out)
    assert dead["recipients"]["jl.cc"]["status"] == "DEAD"
    assert dead["recipients"]["jl.cc"]["reason"] == "delivery.gave_up"
    assert dead["status"] == "DEAD"

    # hubctl redeliver: the hub sends it again, and jl.cc's spoke says DELIVERED, then 签收
    deliver(gov, "jl.cc", world.keys["jl.cc"].signing, entry(out, ReceiptStatus.DELIVERED, "jl.cc"))

    after = status_json(gov, out)
    cc = after["recipients"]["jl.cc"]
    assert cc["status"] == "DELIVERED"
    assert "reason" not in cc  # no longer why it stands
    assert [h["status"] for h in cc["history"]] == ["DEAD", "DELIVERED"]
    assert cc["history"][0]["reason"] == "delivery.gave_up"
    assert {"dead_at", "delivered_at"} <= set(cc)
    assert after["status"] == "DELIVERED"
    assert "jl.cc: DELIVERED" in status_table(gov.ctx.state, msg_id=None, limit=5)

    deliver(
        gov, "jl.cc", world.keys["jl.cc"].signing, entry(out, ReceiptStatus.SIGNED_FOR, "jl.cc")
    )
    assert status_json(gov, out)["recipients"]["jl.cc"]["status"] == "SIGNED_FOR"
    assert status_json(gov, out)["status"] == "DELIVERED"  # jl.jl has not signed for it


def test_a_state_file_from_before_the_receipt_log_keeps_its_receipts_as_history(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    SpokeState(path).close()
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("DROP TABLE receipt_log")
    db.execute(
        "INSERT INTO receipts (msg_id, recipient, status, at) VALUES "
        "(x'01', 'jl.cc', 'DELIVERED', 20), (x'01', 'jl.cc', 'DEAD', 10)"
    )
    db.close()

    state = SpokeState(path)
    try:
        assert [r[1] for r in state.receipts(b"\x01")] == ["DEAD", "DELIVERED"]
    finally:
        state.close()


async def test_receipts_from_a_large_group_rewrite_status_json_once_not_once_each(
    offline_spoke: OfflineSpokeFactory, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A notice to 10,000 gets 10,000 DELIVERED: the agent hands each to the sender with
    write=False and then status_later, so status.json is rewritten once for all that came
    together (it was rewritten, whole, for each: quadratic in the group)."""
    gov = offline_spoke("jl.gov")
    everyone = world.directory.group("channel.govnet")
    assert everyone is not None
    members = [m for m in everyone.members if m != "jl.gov"]
    meta = {"主送": ["@channel.govnet"], "密级": "内部", "文种": "通知", "签发人": "王某"}
    gov.drop("通知.txt", "通知。\n".encode(), toml_meta({**meta, "标题": "关于值班的通知"}))
    await gov.settle()
    [out] = gov.outbound()
    deliver(gov, gov.directory.hub_id, world.hub_key, entry(out, ReceiptStatus.ACCEPTED, None))
    writes: list[bytes] = []
    real = gov.sender.status.write

    def counted(msg_id: bytes) -> None:
        writes.append(msg_id)
        real(msg_id)

    monkeypatch.setattr(gov.sender.status, "write", counted)

    changed = set()
    for member in members:
        frame = sign_receipts(
            member,
            world.keys[member].signing,
            [entry(out, ReceiptStatus.DELIVERED, member)],
            at=now_ms(),
        )
        for verified in verify_receipts(frame, gov.directory).batch.entries:
            changed.add(gov.sender.receipt(verified, write=False))
    gov.sender.status_later(changed - {None})  # type: ignore[arg-type]
    await gov.sender.stop()  # writes what is stale, as the agent's stop does

    assert writes == [out.msg_id]
    status = status_json(gov, out)
    assert status["status"] == "DELIVERED"
    assert {r["status"] for r in status["recipients"].values()} == {"DELIVERED"}
    assert len(status["recipients"]) == len(members)


async def test_receipts_a_crash_kept_from_status_json_are_shown_after_the_restart(
    offline_spoke: OfflineSpokeFactory, world: World
) -> None:
    """The rewrite waits a moment (status_later); a kill -9 meanwhile must not leave
    status.json behind the receipts the state holds (the hub will not send them again)."""
    gov = offline_spoke("jl.gov")
    gov.drop("通知.txt", "关于做好冬季供暖工作的通知。\n".encode(), TO_TWO)
    await gov.settle()
    [out] = gov.outbound()
    deliver(gov, gov.directory.hub_id, world.hub_key, entry(out, ReceiptStatus.ACCEPTED, None))
    frame = sign_receipts(
        "jl.cc", world.keys["jl.cc"].signing, [entry(out, ReceiptStatus.DELIVERED, "jl.cc")],
        at=now_ms(),
    )  # fmt: skip
    for verified in verify_receipts(frame, gov.directory).batch.entries:
        assert gov.sender.receipt(verified, write=False) == out.msg_id
    assert status_json(gov, out)["recipients"]["jl.cc"]["status"] == "PENDING"  # not yet

    gov.sender = Sender(gov.ctx)  # killed before the rewrite: a new agent's sender
    gov.sender.recover()

    assert status_json(gov, out)["recipients"]["jl.cc"]["status"] == "DELIVERED"
    assert gov.ctx.state.status_due() == []
