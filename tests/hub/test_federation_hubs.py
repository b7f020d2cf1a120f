"""Two real hubds, one a member of the other (docs/architecture.md, "Hubs under hubs"): the
national hub with the State Council's General Office as its spoke, Jilin's hub with its
own, connected by Jilin's uplink to the national hub's broker. A document crosses both
hubs unchanged each way, every hop answers the one before with its own signed ACCEPTED,
and the recipient's DELIVERED comes back to the sender through the same hubs."""

from __future__ import annotations

import asyncio
import json
import os
import re
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from hubd.cli import hubctl_app
from runtime.clock import now_ms
from schemas import transport
from schemas.directory import Directory
from schemas.ids import msg_id_text
from schemas.keys import SigningKey
from schemas.labels import Classification, DocType
from schemas.notes import open_note, seal_note
from schemas.receipts import ReceiptEntry, ReceiptStatus, sign_receipts, subject_of
from schemas.seal import Sealed
from tests.federation import LIAONING, NATIONAL, national_view, provincial_view
from tests.hub.conftest import wait_for_log
from tests.hubproc import HubProcess, Mosquitto, live_directory
from tests.spokesim import SimSpoke
from tests.world import World

NATIONAL_KEY = SigningKey.generate()


@dataclass
class Federation:
    national: HubProcess
    jilin: HubProcess
    national_dir: Directory
    jilin_dir: Directory


@pytest.fixture
def brokers() -> str:
    return "embedded"  # each hub's own; "mosquitto": a Mosquitto each, which outlives its hub


@pytest.fixture
def revoked() -> tuple[str, ...]:
    return ()  # key ids the national directory revokes


@pytest.fixture
def federation(
    world: World, tmp_path: Path, brokers: str, revoked: tuple[str, ...]
) -> Iterator[Federation]:
    base = live_directory(world)
    national_dir = national_view(world, base, NATIONAL_KEY)
    if revoked:  # "jilin-hub-key": the kid of Jilin's hub key, known only here
        kids = tuple(world.hub_key.kid if k == "jilin-hub-key" else k for k in revoked)
        national_dir = national_dir.model_copy(update={"revoked": (*national_dir.revoked, *kids)})
    jilin_dir = provincial_view(base, NATIONAL_KEY)
    fast = "[delivery]\nretry_initial = 1.0\nretry_max = 4.0\n"
    mosquittos = (
        [Mosquitto(tmp_path / "m-national").start(), Mosquitto(tmp_path / "m-jilin").start()]
        if brokers == "mosquitto"
        else []
    )
    ports: list[int | None] = [m.port for m in mosquittos] or [None, None]
    national = HubProcess(
        tmp_path / "national", NATIONAL_KEY, national_dir, broker_port=ports[0], extra_toml=fast
    )
    uplink = "[upstream]\nhello_every = 2.0\n" + "".join(
        f'[upstream.channels.{ch}]\nurl = "mqtt://127.0.0.1:{national.port}"\n'
        for ch in ("govnet", "classified")
    )
    jilin = HubProcess(
        tmp_path / "jilin",
        world.hub_key,
        jilin_dir,
        broker_port=ports[1],
        extra_toml=fast + "\n" + uplink,
    )
    try:
        national.start()
        jilin.start()
        yield Federation(national, jilin, national_dir, jilin_dir)
    finally:
        jilin.stop()
        national.stop()
        for m in mosquittos:
            m.stop()


@pytest.fixture
async def spoke_of(world: World, federation: Federation) -> AsyncIterator[object]:
    made: list[SimSpoke] = []

    async def make(
        org: str, hub: HubProcess, directory: Directory, *, reliable: bool = False
    ) -> SimSpoke:
        keys = world.keys[org]
        spoke = SimSpoke(org, keys.signing, keys.encryption, directory, "127.0.0.1", hub.port)
        if reliable:
            spoke.start_reliable(resend_every=1.0)
        await spoke.connect()
        made.append(spoke)
        return spoke

    yield make
    for spoke in made:
        await spoke.disconnect()


async def test_a_document_from_the_state_council_reaches_jilin_through_both_hubs(
    federation: Federation, spoke_of: object
) -> None:
    cn_gov = await spoke_of("cn.gov", federation.national, federation.national_dir)  # type: ignore[operator]
    jl_gov = await spoke_of("jl.gov", federation.jilin, federation.jilin_dir)  # type: ignore[operator]
    sealed, body = cn_gov.seal(("jl.gov",))
    msg_id = sealed.header.msg_id

    await cn_gov.publish_envelope(sealed, body)

    await cn_gov.wait_for(lambda: cn_gov.has(msg_id, ReceiptStatus.DELIVERED, "jl.gov"), 30)
    assert jl_gov.received[msg_id].envelope.frame == sealed.frame  # end to end, unchanged
    accepted = [e for e in cn_gov.receipts[msg_id] if e.status is ReceiptStatus.ACCEPTED]
    assert len(accepted) == 1  # its own hub's: the hop beyond stays between the hubs
    relayed = await wait_for_log(
        federation.national, lambda e: e.get("event") == "delivery.relayed"
    )
    assert relayed["hub"] == "jl.hub"


async def test_a_large_notice_to_three_organisations_of_jilin_crosses_once_in_chunks(
    federation: Federation, spoke_of: object
) -> None:
    """A body of several chunks for three recipients behind Jilin's hub: the national hub
    hands Jilin's hub one copy (the chunks once, resumed where Jilin's spool stands), and
    Jilin delivers each; all three DELIVERED reach the sender."""
    cn_gov = await spoke_of("cn.gov", federation.national, federation.national_dir, reliable=True)  # type: ignore[operator]
    recipients = ("jl.gov", "jl.cc", "jl.jl")
    spokes = [
        await spoke_of(org, federation.jilin, federation.jilin_dir, reliable=True)  # type: ignore[operator]
        for org in recipients
    ]

    sealed = await cn_gov.send_reliably(recipients, contents=(os.urandom(700_000),))
    msg_id = sealed.header.msg_id

    await cn_gov.wait_for(
        lambda: all(cn_gov.has(msg_id, ReceiptStatus.DELIVERED, r) for r in recipients), 40
    )
    shown = json.loads(await trace(federation.national, msg_id, "--json"))
    sent = {s["org"] for s in shown["timeline"] if s["event"] == "delivery.sent"}
    assert len(sent) == 1, sent  # one copy for the three (its chunks resumed as Jilin asked)
    assert {d["state"] for d in shown["deliveries"]} == {"DELIVERED"}

    # and the other way: a large report up, its chunks asked for by the national hub
    jl_gov = spokes[0]
    report = await jl_gov.send_reliably(
        ("cn.gov",), doc_type=DocType.REPORT, signatory="王五", contents=(os.urandom(600_000),)
    )
    await jl_gov.wait_for(
        lambda: jl_gov.has(report.header.msg_id, ReceiptStatus.DELIVERED, "cn.gov"), 40
    )


async def test_a_large_group_crosses_with_every_slot_and_each_recipient_gets_its_own(
    federation: Federation, spoke_of: object
) -> None:
    """A notice to twenty of Jilin's organisations (more than a header names: their sealed
    keys travel as slots): the national hub hands Jilin's hub one copy with every slot,
    which checks them against the signed root and delivers each recipient its own part."""
    cn_gov = await spoke_of("cn.gov", federation.national, federation.national_dir)  # type: ignore[operator]
    jilin = [o.id for o in federation.jilin_dir.orgs if o.id.startswith("jl.") and o.via is None]
    recipients = tuple(r for r in jilin if r != "jl.gov")[:20]
    listening = recipients[:3]
    for org in listening:
        await spoke_of(org, federation.jilin, federation.jilin_dir)  # type: ignore[operator]
    sealed, body = cn_gov.seal(recipients)
    assert sealed.header.slots is not None
    msg_id = sealed.header.msg_id

    await cn_gov.publish_envelope(sealed, body)

    await cn_gov.wait_for(
        lambda: all(cn_gov.has(msg_id, ReceiptStatus.DELIVERED, r) for r in listening), 30
    )
    shown = json.loads(await trace(federation.national, msg_id, "--json"))
    assert len({s["org"] for s in shown["timeline"] if s["event"] == "delivery.sent"}) == 1
    states = {d["recipient"]: d["state"] for d in shown["deliveries"]}
    assert {states[r] for r in recipients if r not in listening} == {"RELAYED"}


async def test_a_large_group_for_a_member_that_is_down_goes_after_the_hub_above_restarts(
    federation: Federation, spoke_of: object
) -> None:
    """The same notice while Jilin's hub is stopped: the national hub keeps it, is killed
    and started again (the copy's slots come back from its store), and hands it over once
    Jilin's hub is back."""
    cn_gov = await spoke_of("cn.gov", federation.national, federation.national_dir, reliable=True)  # type: ignore[operator]
    jilin = [o.id for o in federation.jilin_dir.orgs if o.id.startswith("jl.") and o.via is None]
    recipients = tuple(r for r in jilin if r != "jl.gov")[:20]
    federation.jilin.stop()
    sealed = await cn_gov.send_reliably(recipients)
    msg_id = sealed.header.msg_id
    await cn_gov.wait_for(lambda: cn_gov.has(msg_id, ReceiptStatus.ACCEPTED), 20)

    federation.national.kill9()
    federation.national.start()
    federation.jilin.start()
    listening = await spoke_of(recipients[0], federation.jilin, federation.jilin_dir)  # type: ignore[operator]

    await listening.wait_for(lambda: msg_id in listening.received, 40)
    await cn_gov.wait_for(lambda: cn_gov.has(msg_id, ReceiptStatus.DELIVERED, recipients[0]), 40)


async def test_a_report_from_jilin_reaches_the_state_council_and_its_delivered_comes_back(
    federation: Federation, spoke_of: object
) -> None:
    jl_gov = await spoke_of("jl.gov", federation.jilin, federation.jilin_dir)  # type: ignore[operator]
    cn_gov = await spoke_of("cn.gov", federation.national, federation.national_dir)  # type: ignore[operator]
    sealed, body = jl_gov.seal(("cn.gov",), doc_type=DocType.REPORT, signatory="王五")
    msg_id = sealed.header.msg_id

    await jl_gov.publish_envelope(sealed, body)

    await jl_gov.wait_for(lambda: jl_gov.has(msg_id, ReceiptStatus.DELIVERED, "cn.gov"), 30)
    assert msg_id in cn_gov.received
    relayed = await wait_for_log(federation.jilin, lambda e: e.get("event") == "delivery.relayed")
    assert relayed["hub"] == NATIONAL

    # each hub's trace shows its own hop and names the next hub (or the one it came from)
    here = await trace(federation.jilin, msg_id)
    assert "handed on to hub cn.hub" in here
    assert re.search(r"cn\.gov .* DELIVERED .* cn\.hub", here), here
    assert "went on through cn.hub" in here
    there = await trace(federation.national, msg_id)
    assert "relayed by hub jl.hub" in there
    assert re.search(r"cn\.gov .* DELIVERED .* -", there), there


async def status(hub: HubProcess) -> dict[str, Any]:
    """``hubctl status --json`` of a running hub."""
    asked = await asyncio.to_thread(
        CliRunner().invoke,
        hubctl_app,
        ["status", "--json", "--config", str(hub.folder / "hub.toml")],
    )
    assert asked.exit_code == 0, asked.output
    answer: dict[str, Any] = json.loads(asked.stdout)
    return answer


def online(entry: dict[str, Any]) -> dict[str, bool | None]:
    return {ch: None if p is None else p["online"] for ch, p in entry["channels"].items()}


async def test_hubctl_status_shows_the_other_level_as_hubs_and_only_its_own_spokes(
    federation: Federation,
) -> None:
    """At the national hub its members, Jilin online on both channels of its link and
    Liaoning (no process runs it) not; at Jilin's hub its upstream online. The organisations
    reached through another hub are that hub's spokes, not offline ones of this hub."""
    for _ in range(2):  # one connection per channel of the link
        await wait_for_log(federation.jilin, lambda e: e.get("event") == "uplink.connected")

    async def linked() -> dict[str, Any]:
        while True:  # the national hub hears the member's presence a moment later
            here = await status(federation.national)
            hubs = {h["hub"]: h for h in here["hubs"]}
            if all(online(hubs["jl.hub"]).values()):
                return here
            await asyncio.sleep(0.1)

    async with asyncio.timeout(20):
        national = await linked()
    hubs = {h["hub"]: h for h in national["hubs"]}
    assert set(hubs) == {"jl.hub", LIAONING}
    assert (hubs["jl.hub"]["role"], hubs["jl.hub"]["prefixes"]) == ("member", ["jl"])
    assert online(hubs["jl.hub"]) == {"govnet": True, "classified": True}
    assert online(hubs[LIAONING]) == {"govnet": False}  # never seen: its hub is not running
    assert [s["org"] for s in national["spokes"]] == ["cn.gov"]
    jilin = await status(federation.jilin)
    assert [(h["hub"], h["role"], online(h)) for h in jilin["hubs"]] == [
        (NATIONAL, "upstream", {"govnet": True, "classified": True})
    ]  # Liaoning's hub is remote: listed for its keys, not linked to Jilin's
    spokes = {s["org"] for s in jilin["spokes"]}
    assert "jl.gov" in spokes
    assert not spokes & {"cn.gov", "ln.gov", "ln.sy"}
    shown = await asyncio.to_thread(
        CliRunner().invoke,
        hubctl_app,
        ["status", "--config", str(federation.national.folder / "hub.toml")],
    )
    assert re.search(
        r"(?m)^jl\.hub \S+ +member +jl +govnet,classified +govnet online for \S+, "
        r"classified online for",
        shown.stdout,
    ), shown.stdout


async def test_a_member_hub_that_stops_says_so_and_the_national_hub_parks_what_is_for_it(
    federation: Federation, spoke_of: object
) -> None:
    """A clean stop leaves no will at the broker: without the member's own offline the
    national hub went on publishing to it as if it were online, spending the delivery's
    retries (DEAD after max_attempts) on a hub that was down for maintenance."""
    cn_gov = await spoke_of("cn.gov", federation.national, federation.national_dir)  # type: ignore[operator]
    for _ in range(2):
        await wait_for_log(federation.jilin, lambda e: e.get("event") == "uplink.connected")
    await wait_for_log(
        federation.national, lambda e: e.get("event") == "spoke.online" and e["org"] == "jl.hub"
    )

    assert federation.jilin.terminate() == 0  # SIGTERM: the operator stops it

    closed = [e for e in federation.jilin.log_events() if e.get("event") == "uplink.closed"]
    assert sorted(str(e["channel"]) for e in closed) == ["classified", "govnet"]
    assert not [e for e in federation.jilin.log_events() if e.get("event") == "uplink.lost"]
    async with asyncio.timeout(10):
        while True:
            hubs = {h["hub"]: h for h in (await status(federation.national))["hubs"]}
            if online(hubs["jl.hub"]) == {"govnet": False, "classified": False}:
                break
            await asyncio.sleep(0.1)
    sealed, body = cn_gov.seal(("jl.gov",))
    await cn_gov.publish_envelope(sealed, body)
    await cn_gov.wait_for(lambda: cn_gov.has(sealed.header.msg_id, ReceiptStatus.ACCEPTED), 10)
    await asyncio.sleep(1.5)  # a publish would have come by now ([delivery] of the fixture)
    assert not [
        e
        for e in federation.national.log_events()
        if e.get("event") in {"delivery.relayed", "delivery.retry"}
    ]  # parked: nothing published to the hub that is gone
    queued = await hubctl(federation.national, "queue")
    assert "jl.gov (reached through hub jl.hub) offline on govnet since" in queued, queued


async def trace(hub: HubProcess, msg_id: bytes, *more: str) -> str:
    traced = await asyncio.to_thread(
        CliRunner().invoke,
        hubctl_app,
        ["trace", msg_id_text(msg_id), "--config", str(hub.folder / "hub.toml"), *more],
    )
    assert traced.exit_code == 0, traced.output
    return traced.stdout


async def test_a_label_the_link_beyond_cannot_carry_is_refused_at_the_national_hub(
    federation: Federation, spoke_of: object
) -> None:
    """秘密 from Jilin's general office to Liaoning's: Jilin's link to the national hub is
    classified, Liaoning's only the government network. Jilin accepts and hands it on; the
    national hub refuses it (no channel carries 秘密 to Liaoning) with its own signed
    REJECTED, which reaches the sender through Jilin's hub: the recipient is REFUSED."""
    jl_gov = await spoke_of("jl.gov", federation.jilin, federation.jilin_dir)  # type: ignore[operator]
    jl_gov.channels = ("classified",)
    await jl_gov.disconnect()
    await jl_gov.connect()
    sealed, body = jl_gov.seal(
        ("ln.gov",), classification=Classification.CONFIDENTIAL, doc_type=DocType.LETTER
    )
    msg_id = sealed.header.msg_id

    await jl_gov.publish_envelope(sealed, body)

    await jl_gov.wait_for(lambda: len(jl_gov.receipts[msg_id]) >= 2, 30)
    accepted, refused = jl_gov.receipts[msg_id][:2]
    assert accepted.status is ReceiptStatus.ACCEPTED  # its own hub's hop
    assert refused.status is ReceiptStatus.REJECTED
    assert refused.reason == "policy.no_channel"
    assert "ln.gov" in (refused.detail or "")
    event = await wait_for_log(federation.jilin, lambda e: e.get("event") == "delivery.refused")
    assert (event["recipient"], event["hub"]) == ("ln.gov", NATIONAL)


async def test_a_recipient_the_national_hub_does_not_know_is_refused_there_and_told_back(
    federation: Federation, spoke_of: object
) -> None:
    """Jilin's directory still lists Dalian, the national one no longer does: the national
    hub cannot authenticate the envelope's recipients and refuses the bytes (its REJECTED
    names only their hash); Jilin's hub finds the document by it, and the sender hears."""
    jl_gov = await spoke_of("jl.gov", federation.jilin, federation.jilin_dir)  # type: ignore[operator]
    sealed, body = jl_gov.seal(("ln.dl",), doc_type=DocType.LETTER)
    msg_id = sealed.header.msg_id

    await jl_gov.publish_envelope(sealed, body)

    subject = subject_of(sealed.frame)  # unread, the bytes are named by their hash

    def refused() -> bool:
        return any(
            e.status is ReceiptStatus.REJECTED and e.subject == subject
            for e in jl_gov.receipts[None]
        )

    await jl_gov.wait_for(refused, 30)
    assert jl_gov.has(msg_id, ReceiptStatus.ACCEPTED)
    event = await wait_for_log(federation.jilin, lambda e: e.get("event") == "delivery.refused")
    assert (event["recipient"], event["hub"]) == ("ln.dl", NATIONAL)


@pytest.mark.parametrize("revoked", [("jilin-hub-key",)])
async def test_a_member_whose_key_the_national_directory_revokes_relays_nothing(
    federation: Federation, spoke_of: object
) -> None:
    """The national operator revoked Jilin's membership key: Jilin's hub still takes its
    spokes' documents, the national hub refuses every one it relays, and the sender hears
    that refusal with its reason; nothing reaches the State Council."""
    jl_gov = await spoke_of("jl.gov", federation.jilin, federation.jilin_dir)  # type: ignore[operator]
    cn_gov = await spoke_of("cn.gov", federation.national, federation.national_dir)  # type: ignore[operator]
    sealed, body = jl_gov.seal(("cn.gov",), doc_type=DocType.REPORT, signatory="王五")
    msg_id = sealed.header.msg_id

    await jl_gov.publish_envelope(sealed, body)

    await jl_gov.wait_for(lambda: jl_gov.has(msg_id, ReceiptStatus.REJECTED), 30)
    (refused,) = [e for e in jl_gov.receipts[msg_id] if e.status is ReceiptStatus.REJECTED]
    assert refused.reason == "federation.membership_invalid"
    assert msg_id not in cn_gov.received


async def test_the_operator_sees_the_uplink_in_status_metrics_and_log_and_its_loss(
    federation: Federation,
) -> None:
    jilin = federation.jilin
    shown = await hubctl(jilin, "status")
    assert re.search(r"upstream   cn\.hub, channels govnet: on mqtt://127\.0\.0\.1:\d+", shown), (
        shown
    )
    metrics = await asyncio.to_thread(urlopen_text, f"{jilin.metrics_url}/metrics")
    assert 'govxchg_uplink_up{channel="classified"} 1.0' in metrics
    national = await hubctl(federation.national, "status")
    assert re.search(r"jl\.hub\s.*online", national), national  # the member, as its spoke

    federation.national.stop()  # its embedded broker goes with it

    await wait_for_log(jilin, lambda e: e.get("event") == "uplink.lost")
    shown = await hubctl(jilin, "status")
    assert "documents to and from the hub above wait here" in shown, shown
    metrics = await asyncio.to_thread(urlopen_text, f"{jilin.metrics_url}/metrics")
    assert 'govxchg_uplink_up{channel="govnet"} 0.0' in metrics


def urlopen_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as answer:  # noqa: S310 - our own loopback
        return str(answer.read().decode())


async def hubctl(hub: HubProcess, *args: str) -> str:
    ran = await asyncio.to_thread(
        CliRunner().invoke, hubctl_app, [*args, "--config", str(hub.folder / "hub.toml")]
    )
    assert ran.exit_code == 0, ran.output
    return ran.stdout


def statement(spoke: SimSpoke, status: ReceiptStatus, sealed: Sealed, note: str) -> bytes:
    """``spoke``'s signed flow statement about ``sealed``, its words sealed for the parties."""
    msg_id = sealed.header.msg_id
    entry = ReceiptEntry(
        msg_id=msg_id,
        recipient=spoke.org if status is not ReceiptStatus.RECALL else None,
        status=status,
        at=now_ms(),
        subject=subject_of(sealed.frame),
        classification=sealed.header.classification,
        reason=None,
        detail=None,
        retriable=False,
        note=seal_note(sealed.note_key, note, msg_id=msg_id, status=status.value, issuer=spoke.org),
    )
    frame = sign_receipts(spoke.org, spoke.signing, [entry], at=now_ms())
    return transport.encode(transport.ReceiptsMsg(frame, 0))


async def test_a_report_and_a_recall_cross_the_hubs_to_whom_they_concern(
    federation: Federation, spoke_of: object
) -> None:
    """Jilin's general office reports 已阅 on the State Council's notice: the report reaches
    the sender through both hubs, its words still sealed. Then the State Council recalls a
    second notice that 吉林市 (offline) never received: Jilin's hub stops it and tells 吉林市
    when it comes back; the sender hears RECALLED."""
    cn_gov = await spoke_of("cn.gov", federation.national, federation.national_dir)  # type: ignore[operator]
    jl_gov = await spoke_of("jl.gov", federation.jilin, federation.jilin_dir)  # type: ignore[operator]
    sealed, body = cn_gov.seal(("jl.gov",))
    msg_id = sealed.header.msg_id
    await cn_gov.publish_envelope(sealed, body)
    await cn_gov.wait_for(lambda: cn_gov.has(msg_id, ReceiptStatus.DELIVERED, "jl.gov"), 30)

    await jl_gov.publish_raw(statement(jl_gov, ReceiptStatus.READ, sealed, "已阅，照办"))

    await cn_gov.wait_for(lambda: cn_gov.has(msg_id, ReceiptStatus.READ, "jl.gov"), 30)
    (read,) = [e for e in cn_gov.receipts[msg_id] if e.status is ReceiptStatus.READ]
    words = open_note(
        sealed.note_key, read.note or b"", msg_id=msg_id, status="READ", issuer="jl.gov"
    )
    assert words == "已阅，照办"

    second, body = cn_gov.seal(("jl.jl",))
    recalled = second.header.msg_id
    await cn_gov.publish_envelope(second, body)
    await cn_gov.wait_for(lambda: cn_gov.has(recalled, ReceiptStatus.ACCEPTED), 30)
    await wait_for_log(
        federation.national,
        lambda e: e.get("event") == "delivery.relayed" and e.get("msg_id") == msg_id_text(recalled),
    )
    await cn_gov.publish_raw(statement(cn_gov, ReceiptStatus.RECALL, second, "发错了"))

    # Jilin's hub stopped it (the national hub had handed it over: not its to stop), and
    # its RECALLED for 吉林市 reaches the sender through the national hub
    await cn_gov.wait_for(lambda: cn_gov.has(recalled, ReceiptStatus.RECALLED, "jl.jl"), 30)
    jl_jl = await spoke_of("jl.jl", federation.jilin, federation.jilin_dir)  # type: ignore[operator]
    await jl_jl.wait_for(lambda: jl_jl.has(recalled, ReceiptStatus.RECALL), 30)
    assert recalled not in jl_jl.received


@pytest.mark.parametrize("brokers", ["mosquitto"])
async def test_documents_both_ways_survive_kill9_of_each_hub_in_turn_once_each(
    federation: Federation, spoke_of: object
) -> None:
    """Under load both ways, each hubd is killed -9 in turn and started again: every
    document reaches its recipient once, and every sender holds its recipient's DELIVERED."""
    jl_gov = await spoke_of("jl.gov", federation.jilin, federation.jilin_dir, reliable=True)  # type: ignore[operator]
    cn_gov = await spoke_of("cn.gov", federation.national, federation.national_dir, reliable=True)  # type: ignore[operator]
    up: list[bytes] = []
    down: list[bytes] = []

    async def load(rounds: int) -> None:
        for _ in range(rounds):
            up.append(
                (
                    await jl_gov.send_reliably(
                        ("cn.gov",), doc_type=DocType.REPORT, signatory="王五"
                    )
                ).header.msg_id
            )
            down.append((await cn_gov.send_reliably(("jl.gov",))).header.msg_id)
            await asyncio.sleep(0.05)

    await load(5)
    federation.jilin.kill9()  # the member, with documents on their way both ways
    await load(5)
    federation.jilin.start()
    await load(5)
    federation.national.kill9()  # the hub above
    await load(5)
    federation.national.start()
    await load(5)

    def complete() -> bool:
        return all(jl_gov.has(m, ReceiptStatus.DELIVERED, "cn.gov") for m in up) and all(
            cn_gov.has(m, ReceiptStatus.DELIVERED, "jl.gov") for m in down
        )

    await jl_gov.wait_for(
        lambda: all(jl_gov.has(m, ReceiptStatus.DELIVERED, "cn.gov") for m in up), 90
    )
    await cn_gov.wait_for(complete, 90)  # jl_gov's part holds already
    assert set(cn_gov.received) == set(up)  # nothing lost, nothing that was not sent
    assert set(jl_gov.received) == set(down)
    assert not jl_gov.outstanding()
    assert not cn_gov.outstanding()
    assert not [e for m in up for e in jl_gov.receipts[m] if e.status is ReceiptStatus.REJECTED]
