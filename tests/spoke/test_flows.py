"""Recall (撤回) and return (退文) at the spokes (spoke.flows), against the hub's contract.

Two offline spokes on real folders (tests/spoke/conftest.py: OfflineSpoke), jl.gov sending
to jl.cc, each with a link that records what it publishes. The test plays the hub: it
answers with batches signed by the hub key and forwards a spoke's signed statement
unchanged to the other, each verified and taken as the agent takes a receipt batch.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
from structlog.testing import capture_logs
from typer.testing import CliRunner

from runtime.clock import now_ms
from runtime.link import Link
from schemas import transport
from schemas.notes import open_note, seal_note
from schemas.receipts import (
    ReceiptBatch,
    ReceiptEntry,
    ReceiptStatus,
    sign_receipts,
    verify_receipts,
)
from spoke.cli import app
from spoke.flows import Flows
from spoke.receiver import Receiver
from spoke.state import Outbound
from spoke.tracking import (
    hub_recall,
    overall_with_recall,
    recall_state,
)
from tests.spoke.conftest import OfflineSpoke, OfflineSpokeFactory
from tests.spoke.test_tracking import entry, status_json
from tests.world import World

TO_CC = 'to = "jl.cc"\nclassification = "内部"\ndoc_type = "通知"\ntitle = "关于供暖的通知"\n'
WHY = "文号有误，请勿办理"  # never in a log


# ---------------------------------------------------------------- pure tables


@pytest.mark.parametrize(
    ("requested", "statuses", "state"),
    [
        (False, [], None),
        (True, [], "pending"),
        (True, ["WITHDRAWN"], "withdrawn"),
        (True, ["RECALLED"], "recalled"),  # the hub stopped it before it was delivered
        (True, ["WITHDRAWN", "RECALLED"], "recalled"),
        # the hub stopped a SENT delivery that had reached it: its own word wins
        (True, ["RECALLED", "WITHDRAWN"], "withdrawn"),
        (True, ["RECALLED", "RECALL_REFUSED"], "refused"),
        (True, ["RECALLED", "RECALL_ACCEPTED"], "accepted"),
        (True, ["RECALLED", "RECALL_REFUSED", "RECALL_ACCEPTED"], "accepted"),
        (True, ["RECALL_REFUSED"], "refused"),
        (True, ["RECALL_REFUSED", "RECALL_ACCEPTED"], "accepted"),  # changed its mind
        (True, ["RECALL_ACCEPTED", "RECALL_REFUSED"], "accepted"),  # too late to keep it
        (True, ["DELIVERED"], "pending"),  # delivery statuses are not recall states
        (False, ["WITHDRAWN"], "withdrawn"),  # a recall this spoke forgot it asked for
    ],
)
def test_a_recipients_recall_state_follows_its_statements(
    requested: bool, statuses: list[str], state: str | None
) -> None:
    assert recall_state(statuses, requested=requested) == state


@pytest.mark.parametrize(
    ("hub", "status", "after"),
    [
        ("SENT", "RECALLED", "RECORDED"),
        ("SENT", "REFUSED", "REFUSED"),
        ("RECORDED", "RECALLED", "RECORDED"),  # the hub's answer to a repeat
        ("RECORDED", "REFUSED", "RECORDED"),
    ],
)
def test_the_recall_moves_with_the_hubs_answer(hub: str, status: str, after: str) -> None:
    assert hub_recall(hub, status) == after


@pytest.mark.parametrize(
    ("pairs", "overall"),
    [
        ([("PENDING", True), ("DELIVERED", False)], "DELIVERED"),
        ([("PENDING", True), ("PENDING", True)], "PENDING"),
        ([("DEAD", False), ("DELIVERED", False)], "DEAD"),
        ([("SIGNED_FOR", False)], "SIGNED_FOR"),
    ],
)
def test_recipients_whose_delivery_a_recall_stopped_are_not_waited_for(
    pairs: list[tuple[str, bool]], overall: str
) -> None:
    assert overall_with_recall(pairs) == overall


# ---------------------------------------------------------------- two spokes, the test as hub


class Recorder:
    """A link always connected, keeping what is published on it."""

    def __init__(self) -> None:
        self.published: list[tuple[str, bytes]] = []
        self.connected = asyncio.Event()
        self.connected.set()

    async def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> bool:
        del retain  # kept or not, it was published
        self.published.append((topic, payload))
        return True


@dataclass
class Party:
    spoke: OfflineSpoke
    receiver: Receiver
    flows: Flows
    link: Recorder
    channel: str
    seen: int = field(default=0)

    @property
    def root(self) -> Path:
        return self.spoke.ctx.config.spoke.root

    def frames(self) -> list[bytes]:
        """Every receipt batch frame published, oldest first."""
        out = []
        for _, payload in self.link.published:
            message = transport.decode(payload)
            if isinstance(message, transport.ReceiptsMsg):
                out.append(message.frame)
        return out

    def new_frames(self) -> list[bytes]:
        frames = self.frames()
        new, self.seen = frames[self.seen :], len(frames)
        return new

    def batch(self, frame: bytes) -> ReceiptBatch:
        return verify_receipts(frame, self.spoke.directory).batch

    async def take(self, frame: bytes) -> None:
        """A batch from the hub (its own, or forwarded), as the agent takes it."""
        verified = verify_receipts(frame, self.spoke.directory)
        changed = await self.flows.batch(self.channel, verified)
        for one in verified.batch.entries:
            if not one.status.flow:
                self.spoke.sender.receipt(one)
        for msg_id in changed:
            self.spoke.sender.status.write(msg_id)

    async def request(self, folder: str, name: str, text: str = "") -> Path:
        path = self.root / folder / name
        path.write_text(text, encoding="utf-8")
        await self.flows.requests()
        return path


def party(spoke: OfflineSpoke, channel: str) -> Party:
    link = Recorder()
    spoke.ctx.links[channel] = cast("Link", link)
    receiver = Receiver(spoke.ctx)
    return Party(spoke, receiver, Flows(spoke.ctx, receiver, spoke.sender), link, channel)


@dataclass
class Pair:
    gov: Party
    cc: Party
    out: Outbound
    world: World

    @property
    def name(self) -> str:
        return self.out.msg_id.hex()

    def hub(self, *entries: ReceiptEntry) -> bytes:
        return sign_receipts(
            self.gov.spoke.directory.hub_id, self.world.hub_key, list(entries), at=now_ms()
        )

    async def deliver(self) -> None:
        body = (self.gov.spoke.queue / f"{self.name}.body").read_bytes()
        await self.cc.receiver.envelope(self.out.channel, self.out.frame, body)

    async def forward(self, source: Party, target: Party) -> list[ReceiptBatch]:
        """What ``source`` published since last asked, forwarded unchanged to ``target``."""
        frames = source.new_frames()
        for frame in frames:
            await target.take(frame)
        return [source.batch(f) for f in frames]


async def sent(offline_spoke: OfflineSpokeFactory, world: World, *, delivered: bool = True) -> Pair:
    """jl.gov's notice to jl.cc, accepted by the hub (and in jl.cc's inbox)."""
    gov_spoke = offline_spoke("jl.gov")
    gov_spoke.drop("通知.txt", "关于做好冬季供暖工作的通知。\n".encode(), TO_CC)
    await gov_spoke.settle()
    [out] = gov_spoke.outbound()
    pair = Pair(
        party(gov_spoke, out.channel), party(offline_spoke("jl.cc"), out.channel), out, world
    )
    if delivered:
        await pair.deliver()
    await pair.gov.take(pair.hub(entry(out, ReceiptStatus.ACCEPTED, None)))
    return pair


def recalled_entry(pair: Pair, recipient: str | None) -> ReceiptEntry:
    return entry(pair.out, ReceiptStatus.RECALLED, recipient)


def read_json(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return loaded


async def test_a_recall_file_publishes_a_recall_whose_note_opens_and_resends_it_until_recorded(
    offline_spoke: OfflineSpokeFactory, world: World
) -> None:
    pair = await sent(offline_spoke, world)
    gov = pair.gov
    with capture_logs() as logs:
        request = await gov.request("recall", pair.name, WHY + "\n")
    assert not request.exists()
    [frame] = gov.new_frames()
    batch = gov.batch(frame)
    assert batch.v == 2
    assert len(batch.entries) == 1
    [recall] = batch.entries
    assert (recall.status, recall.msg_id, recall.recipient) == (
        ReceiptStatus.RECALL,
        pair.out.msg_id,
        None,
    )
    assert recall.subject == hashlib.sha256(pair.out.frame).digest()
    assert recall.note is not None
    key = gov.spoke.ctx.state.note_key(pair.out.msg_id)
    assert key is not None
    assert (
        open_note(key, recall.note, msg_id=pair.out.msg_id, status="RECALL", issuer="jl.gov") == WHY
    )
    # the recipient opened the document: it holds the same note key
    assert pair.cc.spoke.ctx.state.note_key(pair.out.msg_id) == key
    assert WHY not in json.dumps(logs, ensure_ascii=False, default=str)
    assert status_json(gov.spoke, pair.out)["recall"]["hub"] == "SENT"

    await gov.flows.resend()  # as at a reconnection, or a minute later
    assert gov.new_frames() == [frame]  # the same bytes: the hub answers a repeat again

    await gov.take(pair.hub(recalled_entry(pair, None)))
    status = status_json(gov.spoke, pair.out)
    assert status["recall"]["hub"] == "RECORDED"
    assert status["recall"]["reason"] == WHY
    assert status["recipients"]["jl.cc"]["recall"] == "pending"
    await gov.flows.resend()
    assert gov.new_frames() == []  # answered: no longer sent


async def test_a_recall_the_hub_refuses_shows_the_refusal_in_status_json(
    offline_spoke: OfflineSpokeFactory, world: World
) -> None:
    pair = await sent(offline_spoke, world)
    await pair.gov.request("recall", pair.name)
    [frame] = pair.gov.new_frames()
    detail = "jl.gov did not send this message"
    refused = entry(
        pair.out,
        ReceiptStatus.REFUSED,
        None,
        subject=hashlib.sha256(frame).digest(),
        reason="flow.not_sender",
        detail=detail,
    )
    with capture_logs() as logs:
        await pair.gov.take(pair.hub(refused))
    recall = status_json(pair.gov.spoke, pair.out)["recall"]
    assert recall["hub"] == "REFUSED"
    assert recall["refusal"] == {"reason": "flow.not_sender", "detail": detail}
    assert any(e["event"] == "recall.refused" for e in logs)


async def test_a_held_document_not_signed_for_moves_to_recalled_and_the_sender_hears_withdrawn(
    offline_spoke: OfflineSpokeFactory, world: World
) -> None:
    pair = await sent(offline_spoke, world)
    cc = pair.cc
    await pair.gov.request("recall", pair.name, WHY)
    with capture_logs() as logs:
        await pair.forward(pair.gov, cc)
    assert not (cc.root / "inbox" / pair.name).exists()
    folder = cc.root / "recalled" / pair.name
    assert (folder / "meta.json").is_file()
    assert (folder / "通知.txt").is_file()
    record = read_json(folder / "recall.json")
    assert (record["decision"], record["reason"], record["sender"]) == ("withdrawn", WHY, "jl.gov")
    assert "撤回" in (folder / "recall.txt").read_text(encoding="utf-8")
    assert WHY not in json.dumps(logs, ensure_ascii=False, default=str)

    [withdrawn] = await pair.forward(cc, pair.gov)
    [said] = withdrawn.entries
    assert (said.status, said.recipient) == (ReceiptStatus.WITHDRAWN, "jl.cc")
    assert said.subject == hashlib.sha256(pair.out.frame).digest()
    assert status_json(pair.gov.spoke, pair.out)["recipients"]["jl.cc"]["recall"] == "withdrawn"
    assert not await cc.receiver.sign_for(pair.out.msg_id)  # no 签收 of what was recalled


async def test_the_same_recall_twice_is_answered_twice_and_moves_nothing_twice(
    offline_spoke: OfflineSpokeFactory, world: World
) -> None:
    pair = await sent(offline_spoke, world)
    await pair.gov.request("recall", pair.name, WHY)
    [frame] = pair.gov.new_frames()
    await pair.cc.take(frame)
    await pair.cc.take(frame)  # a numbered batch replayed after a hello
    first, again = pair.cc.new_frames()
    assert first == again
    assert (pair.cc.root / "recalled" / pair.name / "meta.json").is_file()
    assert not (pair.cc.root / "inbox" / pair.name).exists()


async def test_a_recall_of_a_document_not_held_yet_files_it_straight_into_recalled_when_it_comes(
    offline_spoke: OfflineSpokeFactory, world: World
) -> None:
    pair = await sent(offline_spoke, world, delivered=False)  # accepted, not delivered yet
    await pair.gov.request("recall", pair.name, WHY)
    [withdrawn] = [pair.cc.batch(f) for f in (await _forward_and_collect(pair))]
    assert withdrawn.entries[0].status is ReceiptStatus.WITHDRAWN
    recall = pair.cc.spoke.ctx.state.recall_received(pair.out.msg_id)
    assert recall is not None
    assert recall.decision == "withdrawn"


async def _forward_and_collect(pair: Pair) -> list[bytes]:
    await pair.forward(pair.gov, pair.cc)
    return pair.cc.new_frames()


async def test_a_document_arriving_after_its_recall_goes_to_recalled_not_the_inbox(
    offline_spoke: OfflineSpokeFactory, world: World
) -> None:
    gov_spoke = offline_spoke("jl.gov")
    gov_spoke.drop("通知.txt", "关于做好冬季供暖工作的通知。\n".encode(), TO_CC)
    await gov_spoke.settle()
    [out] = gov_spoke.outbound()
    body = out.body_path.read_bytes()  # the hub's copy: the sender's goes at ACCEPTED
    pair = Pair(
        party(gov_spoke, out.channel), party(offline_spoke("jl.cc"), out.channel), out, world
    )
    await pair.gov.take(pair.hub(entry(out, ReceiptStatus.ACCEPTED, None)))
    await pair.gov.request("recall", pair.name, WHY)
    await pair.forward(pair.gov, pair.cc)
    [withdrawn] = pair.cc.new_frames()
    assert pair.cc.batch(withdrawn).entries[0].status is ReceiptStatus.WITHDRAWN

    await pair.cc.receiver.envelope(out.channel, out.frame, body)  # still arriving, then in

    assert not (pair.cc.root / "inbox" / pair.name).exists()
    record = read_json(pair.cc.root / "recalled" / pair.name / "recall.json")
    assert record["decision"] == "withdrawn"
    assert (pair.cc.root / "recalled" / pair.name / "通知.txt").is_file()


async def test_a_recall_signed_by_someone_other_than_the_sender_is_ignored(
    offline_spoke: OfflineSpokeFactory, world: World
) -> None:
    pair = await sent(offline_spoke, world)
    forged = entry(pair.out, ReceiptStatus.RECALL, None)
    frame = sign_receipts("jl.jl", world.keys["jl.jl"].signing, [forged], at=now_ms())
    with capture_logs() as logs:
        await pair.cc.take(frame)
    ignored = [e for e in logs if e["event"] == "flow.ignored"]
    assert ignored
    assert ignored[0]["reason"] == "not its sender"
    assert (pair.cc.root / "inbox" / pair.name / "meta.json").is_file()
    assert pair.cc.new_frames() == []
    assert pair.cc.spoke.ctx.state.recall_received(pair.out.msg_id) is None


async def test_a_signed_for_document_waits_for_an_answer_then_refuse_and_accept_by_file(
    offline_spoke: OfflineSpokeFactory, world: World
) -> None:
    pair = await sent(offline_spoke, world)
    cc, gov = pair.cc, pair.gov
    assert await cc.receiver.sign_for(pair.out.msg_id)
    await gov.request("recall", pair.name, WHY)
    await pair.forward(gov, cc)
    inbox = cc.root / "inbox" / pair.name
    assert read_json(inbox / "recall.json")["decision"] == "pending"
    assert cc.new_frames() == []  # nothing said until the organisation answers

    keep = "已按此文部署，不同意撤回"
    await cc.request("recall-answers", f"{pair.name}.refuse", keep)
    assert read_json(inbox / "recall.json")["decision"] == "refused"
    [refusal] = await pair.forward(cc, gov)
    assert refusal.entries[0].status is ReceiptStatus.RECALL_REFUSED
    mine = status_json(gov.spoke, pair.out)["recipients"]["jl.cc"]
    assert (mine["recall"], mine["recall_note"]) == ("refused", keep)

    await cc.request("recall-answers", f"{pair.name}.accept")
    assert not inbox.exists()
    assert read_json(cc.root / "recalled" / pair.name / "recall.json")["decision"] == "accepted"
    [accepted] = await pair.forward(cc, gov)
    assert accepted.entries[0].status is ReceiptStatus.RECALL_ACCEPTED
    assert status_json(gov.spoke, pair.out)["recipients"]["jl.cc"]["recall"] == "accepted"


def config_file(spoke: OfflineSpoke, tmp_path: Path) -> Path:
    root = spoke.ctx.config.spoke.root
    path = tmp_path / f"{spoke.org}.toml"
    path.write_text(
        f'[spoke]\norg = "{spoke.org}"\nroot = "{root}"\nsign_key = "{root}/k"\n'
        f'enc_key = "{root}/e"\nhub_key = "{root}/h"\n'
        '[channels.govnet]\nurl = "mqtt://127.0.0.1:1"\n',
        encoding="utf-8",
    )
    return path


async def test_the_recall_answer_command_asks_the_agent_and_refuses_a_recall_that_is_not_there(
    offline_spoke: OfflineSpokeFactory, world: World, tmp_path: Path
) -> None:
    pair = await sent(offline_spoke, world)
    config = str(config_file(pair.cc.spoke, tmp_path))
    runner = CliRunner()
    nothing = runner.invoke(app, ["recall-answer", pair.name, "--accept", "--config", config])
    assert nothing.exit_code == 2
    assert "flow.not_recalled" in nothing.output
    assert "Traceback" not in nothing.output

    assert await pair.cc.receiver.sign_for(pair.out.msg_id)
    await pair.gov.request("recall", pair.name, WHY)
    await pair.forward(pair.gov, pair.cc)
    done = runner.invoke(
        app, ["recall-answer", pair.name, "--refuse", "--reason", "仍需办理", "--config", config]
    )
    assert done.exit_code == 0, done.output
    assert (pair.cc.root / "recall-answers" / f"{pair.name}.refuse").read_text(
        encoding="utf-8"
    ) == "仍需办理"
    await pair.cc.flows.requests()
    [refusal] = [pair.cc.batch(f) for f in pair.cc.new_frames()]
    assert refusal.entries[0].status is ReceiptStatus.RECALL_REFUSED


async def test_a_return_moves_the_document_to_sentback_and_the_sender_gets_a_returned_folder(
    offline_spoke: OfflineSpokeFactory, world: World, tmp_path: Path
) -> None:
    pair = await sent(offline_spoke, world)
    because = "附件缺失，请补齐后重发"
    result = CliRunner().invoke(
        app,
        [
            "return",
            pair.name,
            "--reason",
            because,
            "--config",
            str(config_file(pair.cc.spoke, tmp_path)),
        ],
    )
    assert result.exit_code == 0, result.output
    await pair.cc.flows.requests()
    back = pair.cc.root / "sentback" / pair.name
    assert read_json(back / "return.json")["reason"] == because
    assert (back / "通知.txt").is_file()
    assert not (pair.cc.root / "inbox" / pair.name).exists()

    [returned] = await pair.forward(pair.cc, pair.gov)
    assert returned.entries[0].status is ReceiptStatus.RETURNED
    folder = pair.gov.root / "returned" / pair.name
    assert sorted(p.name for p in folder.iterdir()) == [
        "jl.cc.return.json",
        "jl.cc.return.txt",
        "通知.txt",
        "通知.txt.meta.toml",
    ]
    assert read_json(folder / "jl.cc.return.json")["reason"] == because
    assert "退回" in (folder / "jl.cc.return.txt").read_text(encoding="utf-8")
    assert (
        status_json(pair.gov.spoke, pair.out)["recipients"]["jl.cc"]["returned"]["reason"]
        == because
    )


async def test_a_statement_whose_note_does_not_open_is_recorded_without_its_words(
    offline_spoke: OfflineSpokeFactory, world: World
) -> None:
    pair = await sent(offline_spoke, world)
    wrong = seal_note(
        bytes(32), "别的钥匙", msg_id=pair.out.msg_id, status="RETURNED", issuer="jl.cc"
    )
    said = entry(pair.out, ReceiptStatus.RETURNED, "jl.cc", note=wrong)
    frame = sign_receipts("jl.cc", world.keys["jl.cc"].signing, [said], at=now_ms())
    with capture_logs() as logs:
        await pair.gov.take(frame)
    assert any(e["event"] == "flow.bad_note" for e in logs)
    returned = status_json(pair.gov.spoke, pair.out)["recipients"]["jl.cc"]["returned"]
    assert returned["reason"] is None


@pytest.mark.parametrize(
    ("folder", "name", "text", "rule"),
    [
        ("recall", "not-a-msg-id", "", "flow.bad_request"),
        ("recall", "0" * 32, WHY, "flow.not_sender"),
        ("return", "SENT", "", "flow.no_reason"),
        ("return", "0" * 32, "理由", "flow.not_received"),
        ("recall-answers", "SENT.accept", "", "flow.not_recalled"),
        ("recall-answers", "SENT.maybe", "", "flow.bad_request"),
    ],
)
async def test_a_request_that_cannot_be_done_gets_an_error_file_and_is_removed(  # noqa: PLR0917 - parametrized
    offline_spoke: OfflineSpokeFactory, world: World, folder: str, name: str, text: str, rule: str
) -> None:
    pair = await sent(offline_spoke, world)
    spoke = pair.cc if folder != "recall" else pair.gov
    name = name.replace("SENT", pair.name)
    request = await spoke.request(folder, name, text)
    assert not request.exists()
    error = (request.parent / f"{name}.error.txt").read_text(encoding="utf-8")
    assert rule in error
    zh, en = error.splitlines()
    assert any("\u4e00" <= c <= "\u9fff" for c in zh)
    assert en.isascii()
    assert spoke.new_frames() == []
