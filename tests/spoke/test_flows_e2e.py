"""Recall (撤回) and return (退文) end to end (issue 16, parts 1 and 5): real spoke
processes, a real hubd, the embedded broker, the commands and folders as integrators use
them. One exchange for the module (hub, jl.gov, jl.cc; jl.jl offline until a test starts
it); each test sends its own documents.

The hub's own judgements (each refusal, repeats, replicas) are tested against a real hubd
with simulated spokes in tests/hub/test_flows_hub.py; the spoke's cases one by one, with
the hub played by the test, in tests/spoke/test_flows.py.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.spoke.procs import Exchange, SpokeProcess, eventually, make_exchange
from tests.world import World

WITHIN = 30.0


@pytest.fixture(scope="module")
def exchange(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exchange]:
    ex = make_exchange(tmp_path_factory.mktemp("flows"), world, "embedded")
    try:
        asyncio.run(ex.running("jl.gov", "jl.cc"))
        yield ex
    finally:
        ex.close()


def letter(title: str, to: str | list[str]) -> dict[str, object]:
    return {"主送": to, "密级": "内部", "文种": "通知", "标题": title}


def status_of(spoke: SpokeProcess, msg_id: str) -> dict[str, object]:
    path = spoke.sent / msg_id / "status.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def recipient(status: dict[str, object], org: str) -> dict[str, object]:
    recipients = status.get("recipients", {})
    assert isinstance(recipients, dict)
    found = recipients.get(org, {})
    assert isinstance(found, dict)
    return found


async def sent_and_delivered(gov: SpokeProcess, name: str, to: str | list[str], org: str) -> str:
    gov.drop(name, f"{name} 正文\n".encode(), letter(name, to))
    status = await gov.wait_status(name, org, within=WITHIN)
    return str(status["msg_id"])


async def test_recall_withdraws_an_unsigned_copy_and_the_offline_recipient_never_gets_it(
    exchange: Exchange,
) -> None:
    gov, cc = exchange.spokes["jl.gov"], exchange.spokes["jl.cc"]
    msg_id = await sent_and_delivered(gov, "错发通知.txt", ["jl.cc", "jl.jl"], "jl.cc")
    assert (cc.inbox / msg_id).is_dir()

    done = gov.cli("recall", msg_id, "--reason", "附件有误，请勿办理")
    assert done.returncode == 0, done.stderr

    def settled() -> dict[str, object] | None:
        status = status_of(gov, msg_id)
        recall = status.get("recall")
        ok = (
            isinstance(recall, dict)
            and recall.get("hub") == "RECORDED"
            and recipient(status, "jl.cc").get("recall") == "withdrawn"
            and recipient(status, "jl.jl").get("recall") == "recalled"
        )
        return status if ok else None

    status = await eventually(settled, "the recall recorded, withdrawn by jl.cc", within=WITHIN)
    assert status["recall"]["reason"] == "附件有误，请勿办理"  # type: ignore[index]
    assert not (cc.inbox / msg_id).exists()
    recalled = cc.root / "recalled" / msg_id
    record = json.loads((recalled / "recall.json").read_text(encoding="utf-8"))
    assert record["decision"] == "withdrawn"
    assert record["reason"] == "附件有误，请勿办理", "the recipient reads the sender's reason"
    assert (recalled / "错发通知.txt").read_bytes() == "错发通知.txt 正文\n".encode()
    assert exchange.hub is not None
    hub_log = (exchange.hub.folder / "hubd.log").read_text(encoding="utf-8")
    assert "附件有误" not in hub_log, "the hub never sees the reason"

    jl = await exchange.spoke("jl.jl").started()  # offline until now
    await jl.wait_logged("recall.withdrawn", within=WITHIN)
    await asyncio.sleep(1.0)  # anything the hub would (wrongly) deliver meanwhile
    assert not (jl.inbox / msg_id).exists(), "a recalled document is never delivered"

    def answered() -> dict[str, object] | None:  # the hub stopped it; then jl.jl's own word
        entry = recipient(status_of(gov, msg_id), "jl.jl")
        return entry if entry.get("recall") == "withdrawn" else None

    entry = await eventually(answered, "jl.jl's WITHDRAWN at the sender", within=WITHIN)
    assert entry["delivery_stopped"] is True


async def test_a_signed_for_copy_waits_for_its_document_system_which_refuses_the_recall(
    exchange: Exchange,
) -> None:
    gov, cc = exchange.spokes["jl.gov"], exchange.spokes["jl.cc"]
    msg_id = await sent_and_delivered(gov, "部署通知.txt", "jl.cc", "jl.cc")
    assert cc.cli("sign-for", msg_id).returncode == 0
    await gov.wait_status("部署通知.txt", "jl.cc", "SIGNED_FOR", within=WITHIN)

    assert gov.cli("recall", msg_id, "--reason", "口径调整").returncode == 0
    pending = cc.inbox / msg_id / "recall.json"
    await eventually(pending.exists, "jl.cc's pending recall.json", within=WITHIN)
    assert json.loads(pending.read_text(encoding="utf-8"))["decision"] == "pending"

    refused = cc.cli("recall-answer", msg_id, "--refuse", "--reason", "已按此文部署工作")
    assert refused.returncode == 0, refused.stderr

    def answered() -> dict[str, object] | None:
        entry = recipient(status_of(gov, msg_id), "jl.cc")
        return entry if entry.get("recall") == "refused" else None

    entry = await eventually(answered, "jl.cc's refusal at the sender", within=WITHIN)
    assert entry["recall_note"] == "已按此文部署工作"
    assert (cc.inbox / msg_id).is_dir(), "a refused recall leaves the document where it is"


async def test_a_recipient_returns_a_misaddressed_document_and_the_sender_gets_it_back(
    exchange: Exchange,
) -> None:
    gov, cc = exchange.spokes["jl.gov"], exchange.spokes["jl.cc"]
    msg_id = await sent_and_delivered(gov, "误投函.txt", "jl.cc", "jl.cc")

    done = cc.cli("return", msg_id, "--reason", "非我单位职责，请改送省教育厅")
    assert done.returncode == 0, done.stderr

    back = gov.root / "returned" / msg_id
    note = back / "jl.cc.return.json"
    await eventually(note.exists, "the returned document at the sender", within=WITHIN)
    assert json.loads(note.read_text(encoding="utf-8"))["reason"] == "非我单位职责，请改送省教育厅"
    assert (back / "误投函.txt").read_bytes() == "误投函.txt 正文\n".encode()
    assert (cc.root / "sentback" / msg_id / "return.json").exists()
    assert not (cc.inbox / msg_id).exists()

    def shown() -> dict[str, object] | None:  # status.json is rewritten a moment later
        returned = recipient(status_of(gov, msg_id), "jl.cc").get("returned")
        return returned if isinstance(returned, dict) else None

    returned = await eventually(shown, "the return in the sender's status.json", within=WITHIN)
    assert returned["reason"] == "非我单位职责，请改送省教育厅"


async def test_an_organisation_cannot_recall_a_document_it_did_not_send(
    exchange: Exchange,
) -> None:
    gov, cc = exchange.spokes["jl.gov"], exchange.spokes["jl.cc"]
    msg_id = await sent_and_delivered(gov, "他人来文.txt", "jl.cc", "jl.cc")

    refused = cc.cli("recall", msg_id, "--reason", "试图撤回")
    assert refused.returncode != 0
    (line,) = refused.stderr.strip().splitlines()
    assert "flow.not_sender" in line
    assert msg_id in line
    request: Path = cc.root / "recall" / msg_id  # the drop form is refused the same way
    await asyncio.to_thread(request.write_text, "试图撤回", encoding="utf-8")
    error = cc.root / "recall" / f"{msg_id}.error.txt"
    await eventually(error.exists, "the refused request's error file", within=WITHIN)
    assert "flow.not_sender" in error.read_text(encoding="utf-8")
    assert (cc.inbox / msg_id).is_dir()
    assert status_of(gov, msg_id).get("recall") is None
