"""The spoke agent end to end: real spoke processes, a real hubd, real brokers.

Issue, section 7: "drop -> inbox in each recipient -> receipts back into the sender's
sent/; recipient offline for a while". Sections 1-2 and 4: the directory is verified
against the pinned hub key and cached (rollback and expiry refused, fail closed); the
spoke keeps working while the hub is away; ACCEPTED moves the drop to sent/<msg_id>/ with
status.json following DELIVERED and SIGNED_FOR; the hub's REJECTED moves it to failed/
with NAME.error.txt/json and the original bytes unaltered; received documents land in
inbox/<msg_id>/ with sanitised names and meta.json; sign-for by command and by file.

The first four tests share one exchange per broker (hub, jl.gov, jl.cc, jl.jl, cn.gov);
each sends its own documents and looks them up by name or title, never by counting.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import pytest

from runtime.clock import now_ms
from schemas import topics
from schemas.clock import DAY_MS
from tests.hubproc import live_directory
from tests.spoke.conftest import ExchangeFactory
from tests.spoke.procs import (
    Exchange,
    SpokeProcess,
    eventually,
    inbox_problems,
    make_exchange,
)
from tests.world import World, root_publication

PREFECTURES = ("jl.cc", "jl.jl", "jl.sp", "jl.ly", "jl.th", "jl.bs", "jl.sy", "jl.bc", "jl.yb")
RUNNING = ("jl.gov", "jl.cc", "jl.jl", "cn.gov")


@pytest.fixture(scope="module", params=["embedded", "mosquitto"])
def shared(
    request: pytest.FixtureRequest, world: World, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Exchange]:
    """One hub and the spokes of RUNNING, shared by the tests that only send and look."""
    kind = str(request.param)
    exchange = make_exchange(tmp_path_factory.mktemp(f"e2e-{kind}"), world, kind)
    try:
        asyncio.run(exchange.running(*RUNNING))
        yield exchange
    finally:
        exchange.close()


def notice(title: str, to: str | list[str], **more: object) -> dict[str, object]:
    return {"主送": to, "密级": "内部", "文种": "通知", "标题": title, **more}


def sent_copy(spoke: SpokeProcess, msg_id: str) -> Path:
    return spoke.sent / msg_id


# ------------------------------------------------------------------ drop -> inboxes -> receipts


async def test_notice_to_prefectures_lands_in_each_running_prefecture_and_receipts_come_back(
    shared: Exchange,
) -> None:
    gov, cc, jl = (shared.spokes[o] for o in ("jl.gov", "jl.cc", "jl.jl"))
    content = "各市（州）人民政府：请做好今冬明春供暖保障工作。\n".encode()
    meta = notice("关于做好供暖保障工作的通知", "@prefectures", 发文字号="吉政办发〔2026〕12号")
    gov.drop("供暖通知.txt", content, meta)

    for recipient in (cc, jl):
        status = await gov.wait_status("供暖通知.txt", recipient.org)
    msg_id = status["msg_id"]
    assert status["hub"] == "ACCEPTED"
    assert status["channel"] == "govnet"
    assert set(status["recipients"]) == set(PREFECTURES)
    waiting = {r for r, s in status["recipients"].items() if s["status"] == "PENDING"}
    assert waiting == set(PREFECTURES) - {"jl.cc", "jl.jl"}  # their spokes are not running
    folder = sent_copy(gov, msg_id)
    assert (folder / "供暖通知.txt").read_bytes() == content
    assert (folder / "供暖通知.txt.meta.toml").is_file()
    assert "供暖通知.txt" not in gov.inbox_entries()
    assert not [n for n in gov.outbox.iterdir() if n.name.startswith("供暖通知")]

    for recipient in (cc, jl):
        assert recipient.inbox_entries().count(msg_id) == 1
        inbox = recipient.inbox / msg_id
        assert inbox_problems(inbox) == []
        got = json.loads((inbox / "meta.json").read_text(encoding="utf-8"))
        assert got["sender"] == {"id": "jl.gov", "name": "吉林省人民政府办公厅"}
        assert got["to"] == list(PREFECTURES)
        assert got["cc"] == []
        assert got["classification"] == "INTERNAL"
        assert got["doc_type"] == "NOTICE"
        assert got["title"] == "关于做好供暖保障工作的通知"
        assert got["doc_number"] == "吉政办发〔2026〕12号"
        assert got["channel"] == "govnet"
        assert got["copy_number"] is None
        assert got["receipts"]["delivered_at"] is not None
        assert got["receipts"]["signed_for_at"] is None
        assert [f["name"] for f in got["files"]] == ["供暖通知.txt"]
        assert (inbox / "供暖通知.txt").read_bytes() == content


async def test_notice_to_everyone_on_govnet_travels_as_slots_and_each_inbox_names_only_itself(
    shared: Exchange, world: World
) -> None:
    """More than 16 recipients: the envelope signs the root of their slots (schemas.slots);
    the hub sends each recipient only its own, so an inbox names only its organisation
    and says how many the document was addressed to."""
    gov = shared.spokes["jl.gov"]
    everyone = world.directory.group("channel.govnet")
    assert everyone is not None
    addressed = [m for m in everyone.members if m != "jl.gov"]
    assert len(addressed) > 16
    content = "各地区、各部门：请做好节日期间值班工作。\n".encode()
    gov.drop(
        "值班通知.txt",
        content,
        notice("关于做好节日值班工作的通知", "@channel.govnet", 签发人="王某"),
    )

    running = [o for o in RUNNING if o != "jl.gov"]
    for org in running:
        status = await gov.wait_status("值班通知.txt", org)
    msg_id = status["msg_id"]
    assert status["hub"] == "ACCEPTED"
    assert set(status["recipients"]) == set(addressed)
    for org in running:
        recipient = shared.spokes[org]
        inbox = recipient.inbox / msg_id
        assert inbox_problems(inbox) == []
        got = json.loads((inbox / "meta.json").read_text(encoding="utf-8"))
        assert got["to"] == [org]
        assert got["cc"] == []
        assert got["recipients"] == len(addressed)
        assert (inbox / "值班通知.txt").read_bytes() == content


async def test_signing_for_by_command_and_by_file_reaches_the_sender_as_signed_for(
    shared: Exchange,
) -> None:
    gov, cc, jl = (shared.spokes[o] for o in ("jl.gov", "jl.cc", "jl.jl"))
    gov.drop("会议通知.txt", b"meeting on Monday\n", notice("关于召开会议的通知", "jl.cc, jl.jl"))
    for recipient in (cc, jl):
        status = await gov.wait_status("会议通知.txt", recipient.org)
    msg_id = status["msg_id"]

    done = cc.cli("sign-for", msg_id)  # 签收 by the command
    assert done.returncode == 0, done.stderr
    (jl.signfor / msg_id).touch()  # 签收 by the file convention

    for recipient in (cc, jl):
        status = await gov.wait_status("会议通知.txt", recipient.org, "SIGNED_FOR")
    for recipient in (cc, jl):
        entry = status["recipients"][recipient.org]
        assert entry["delivered_at"] is not None
        assert entry["signed_for_at"] is not None

        def signed(spoke: SpokeProcess = recipient) -> bool:
            meta = json.loads((spoke.inbox / msg_id / "meta.json").read_text(encoding="utf-8"))
            return meta["receipts"]["signed_for_at"] is not None

        await eventually(signed, f"signed_for_at in {recipient.org}'s meta.json")

        def taken(spoke: SpokeProcess = recipient) -> bool:  # and no NAME.error.txt left
            return not list(spoke.signfor.iterdir())

        await eventually(taken, f"{recipient.org}'s sign-for request to be taken")


async def test_folder_drop_with_attachments_arrives_with_safe_unique_names_and_same_bytes(
    shared: Exchange,
) -> None:
    gov, cc = shared.spokes["jl.gov"], shared.spokes["jl.cc"]
    files = {
        "正文.txt": "关于秋粮收购情况的通报正文\n".encode(),
        " 附件二.txt": b"attachment with a leading space in its name\n",  # trimmed
        "meta.json": b'{"not": "the spoke\'s metadata"}\n',  # clashes with meta.json
        "Report.txt": b"upper case\n",
        "report.txt": b"lower case: the same name on Windows\n",  # case-insensitive clash
        "数据.bin": bytes(range(256)) * 64,
    }
    gov.drop("通报", files, notice("关于秋粮收购情况的通报", "jl.cc", 文种="通报"))

    status = await gov.wait_status("通报", "jl.cc")
    msg_id = status["msg_id"]
    for name, data in files.items():  # the sender's copy keeps the original names
        assert (sent_copy(gov, msg_id) / "通报" / name).read_bytes() == data
    inbox = cc.inbox / msg_id
    assert inbox_problems(inbox) == []
    meta = json.loads((inbox / "meta.json").read_text(encoding="utf-8"))
    assert meta["msg_id"] == msg_id  # meta.json is still the spoke's own
    names = {f["original_name"]: f["name"] for f in meta["files"]}
    assert set(names) == set(files)
    for original, data in files.items():
        assert (inbox / names[original]).read_bytes() == data, original
    assert names["正文.txt"] == "正文.txt"
    assert names["数据.bin"] == "数据.bin"
    assert names[" 附件二.txt"] == "附件二.txt"
    assert names["meta.json"] != "meta.json"
    lowered = [n.lower() for n in names.values()]
    assert len(set(lowered)) == len(lowered)
    assert "meta.json" not in lowered


async def test_secret_report_to_the_state_council_travels_on_the_classified_channel(
    shared: Exchange,
) -> None:
    gov, cn = shared.spokes["jl.gov"], shared.spokes["cn.gov"]
    title = "关于边境口岸安全形势的报告（机密）"
    meta = {
        "主送": "cn.gov",
        "密级": "机密★1年",
        "紧急程度": "特急",
        "文种": "报告",
        "标题": title,
        "签发人": "李某",
    }
    gov.drop("口岸报告.txt", b"secret content\n", meta)

    status = await gov.wait_status("口岸报告.txt", "cn.gov")
    assert status["channel"] == "classified"
    assert status["classification"] == "SECRET"
    got = json.loads((cn.inbox / status["msg_id"] / "meta.json").read_text(encoding="utf-8"))
    assert got["channel"] == "classified"
    assert got["classification"] == "SECRET"
    assert got["classification_zh"] == "机密"
    assert got["secrecy_period"] == "1y"
    assert got["copy_number"] == "000001"
    assert got["precedence"] == "EXTRA_URGENT"
    assert got["signatory"] == "李某"
    assert (cn.inbox / status["msg_id"] / "口岸报告.txt").read_bytes() == b"secret content\n"
    assert shared.hub is not None
    logs = [gov.log, cn.log, shared.hub.folder / "hubd.log"]
    assert not [p for p in logs if title in p.read_text(encoding="utf-8", errors="replace")]


# ------------------------------------------------------------------ the hub says no


async def test_hub_rejection_moves_the_drop_to_failed_with_the_hubs_reason_and_bytes_unaltered(
    exchanges: ExchangeFactory,
) -> None:
    # A clock-skew window of 1 ms: every envelope arrives "too old", and only the hub can
    # tell (the spoke does not know the hub's window).
    exchange = exchanges(hub_toml="[delivery]\nretry_initial = 1.0\nmax_skew = 0.001\n")
    (gov,) = await exchange.running("jl.gov")
    content = "通知正文\n".encode()
    meta = notice("关于拨付专项资金的通知", "jl.cc")
    gov.drop("通知.txt", content, meta)

    failure = await eventually(lambda: gov.failure("通知.txt"), "通知.txt in failed/")
    text, detail = failure
    assert detail["rule"] == "replay.clock_skew"
    assert detail["msg_id"] is not None
    assert "the hub refused it" in text
    assert "from the hub's clock" in text  # the hub's own sentence
    assert "replay.clock_skew" in text
    assert (gov.failed / "通知.txt").read_bytes() == content
    meta_text = (gov.failed / "通知.txt.meta.toml").read_text(encoding="utf-8")
    assert "关于拨付专项资金的通知" in meta_text
    assert gov.sent_folders() == []
    assert not [p for p in gov.outbox.iterdir() if not p.name.startswith(".")]

    def settled() -> bool:  # the record and the sealed body follow the move to failed/
        rows = gov.state_rows("SELECT state FROM outbound")
        return rows == [("REJECTED",)] and not list((gov.work / "queue").iterdir())

    await eventually(settled, "the outbound record REJECTED and its sealed body removed")


# ------------------------------------------------------------------ a recipient away


@pytest.mark.parametrize("broker_kind", ["embedded", "mosquitto"])
async def test_recipient_offline_for_a_while_receives_everything_once_when_it_starts(
    exchanges: ExchangeFactory, broker_kind: str
) -> None:
    exchange = exchanges(broker_kind)
    gov, cc = await exchange.running("jl.gov", "jl.cc")
    assert cc.terminate() == 0  # away: its presence says offline
    names = [f"通知-{i}.txt" for i in range(6)]
    for i, name in enumerate(names):
        gov.drop(name, f"notice {i}\n".encode(), notice(f"例行通知 {i}", "jl.cc"))

    def all_accepted() -> bool:
        statuses = gov.statuses()
        return all(statuses.get(n, {}).get("hub") == "ACCEPTED" for n in names)

    await eventually(all_accepted, "every notice ACCEPTED by the hub")
    assert {gov.recipient_status(n, "jl.cc") for n in names} == {"PENDING"}
    assert cc.received() == {}

    await cc.started()
    for name in names:
        await gov.wait_status(name, "jl.cc")
    received = cc.received()
    assert sorted(m["title"] for m in received.values()) == [f"例行通知 {i}" for i in range(6)]
    assert {m["msg_id"] for m in received.values()} == {gov.statuses()[n]["msg_id"] for n in names}
    for msg_id in received:
        assert inbox_problems(cc.inbox / msg_id) == []
        assert len(cc.logged("inbox.received", msg_id=msg_id)) == 1  # written once


# ------------------------------------------------------------------ the directory


async def test_spoke_restarted_while_the_hub_is_away_keeps_its_directory_and_queues_drops(
    exchanges: ExchangeFactory,
) -> None:
    # The embedded broker lives in hubd: with the hub gone there is no broker either, so the
    # directory can only come from the spoke's own cache (.spoke/state.db).
    exchange = exchanges("embedded")
    gov, cc = await exchange.running("jl.gov", "jl.cc")
    gov.drop("第一件.txt", b"first\n", notice("第一件", "jl.cc"))
    await gov.wait_status("第一件.txt", "jl.cc")
    assert exchange.hub is not None
    assert exchange.hub.terminate() == 0
    assert gov.terminate() == 0

    gov.start()
    starting = await gov.wait_logged("spoke.starting", this_run=True)
    assert starting["directory_version"] == 1
    gov.drop("第二件.txt", b"second\n", notice("第二件", "jl.cc"))
    sealed = await gov.wait_logged("drop.sealed", this_run=True, name="第二件.txt")
    assert not (gov.outbox / "第二件.txt").exists()
    assert gov.status("第二件.txt") is None  # queued: no answer from a hub yet
    assert gov.state_rows("SELECT state FROM outbound WHERE name = '第二件.txt'") == [("QUEUED",)]
    assert gov.logged("spoke.no_directory", this_run=True) == []

    exchange.start_hub()
    status = await gov.wait_status("第二件.txt", "jl.cc")
    assert status["msg_id"] == sealed["msg_id"]
    assert (cc.inbox / sealed["msg_id"] / "第二件.txt").read_bytes() == b"second\n"


async def publish(port: int, topic: str, payload: bytes, *, retain: bool = False) -> None:
    async with aiomqtt.Client("127.0.0.1", port, identifier="test-publisher") as client:
        await client.publish(topic, payload, qos=1, retain=retain)


async def test_directory_of_a_lower_version_is_refused_as_a_rollback(
    exchanges: ExchangeFactory, world: World
) -> None:
    exchange = exchanges(directory=live_directory(world, version=2))
    gov, _ = await exchange.running("jl.gov", "jl.cc")
    await gov.wait_logged("directory.updated", version=2)

    older = root_publication(live_directory(world, version=1), world.hub_key)  # validly signed
    await publish(exchange.port, topics.dirroot("govnet"), older)

    refused = await gov.wait_logged("directory.refused")
    assert refused["reason"] == "directory.rollback"
    assert gov.logged("directory.updated", version=1) == []
    assert gov.state_rows("SELECT version FROM dir_root") == [(2,)]
    gov.drop("回滚之后.txt", b"still working\n", notice("回滚之后", "jl.cc"))
    await gov.wait_status("回滚之后.txt", "jl.cc")  # v2 kept: not failing closed either


async def test_expired_directory_is_refused_and_drops_wait_in_the_outbox_until_a_valid_one(
    exchanges: ExchangeFactory, world: World
) -> None:
    exchange = exchanges("mosquitto", start_hub=False)  # a broker, no hub yet
    gov = exchange.spoke("jl.gov")
    await gov.started(directory=False)
    now = now_ms()
    expired = world.rebuild(
        version=1,
        issued_at=now - 2 * DAY_MS,
        expires_at=now - 60_000,
        not_before=now - 10 * DAY_MS,
        not_after=now + 30 * DAY_MS,
    )
    frame = root_publication(expired, world.hub_key)
    for channel in gov.channels:
        await publish(exchange.port, topics.dirroot(channel), frame, retain=True)
    refused = await gov.wait_logged("directory.refused")
    assert refused["reason"] == "directory.expired"

    gov.drop("等待.txt", b"waits\n", notice("等待目录", "jl.cc"))
    # The agent looks at the outbox every 0.5 s and takes a stable drop within 0.2 s; over
    # several of those looks it must leave this one alone.
    await asyncio.sleep(3.0)  # an observation window, not a synchronisation
    (gov.signfor / "probe").touch()  # answered (with probe.error.txt) by the same loop
    await eventually((gov.signfor / "probe.error.txt").exists, "the outbox loop")
    assert (gov.outbox / "等待.txt").exists()
    assert (gov.outbox / "等待.txt.meta.toml").exists()
    assert gov.logged("spoke.no_directory")
    assert gov.logged("drop.claimed") == []
    assert gov.running

    exchange.start_hub()  # publishes a valid directory (retained), replacing the expired one
    status = await eventually(lambda: gov.status("等待.txt"), "等待.txt ACCEPTED")
    assert status["hub"] == "ACCEPTED"
