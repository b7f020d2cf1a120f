"""hubd's log as an operator reads it (ARCHITECTURE section 7, docs/operations.md).

One JSON object per line on stdout, each with a documented, stable ``event`` name and the
fields its row in docs/operations.md promises; never a title, a signatory, a document
number or any content; a quarantine at error level. The hub here logs at debug level so
that every line it can write is held to the same rules.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from runtime.clock import now_ms
from schemas.labels import Classification
from schemas.receipts import ReceiptStatus
from tests.hub.conftest import NO_RETRIES, HubFactory, SpokeMaker
from tests.hubproc import HubProcess
from tests.world import REPO

TITLE = "测试文件"  # what SimSpoke.seal puts in every inner record
DOC_NUMBER = "吉政发〔2026〕77号"
SIGNATORY = "李某某"


class DebugLogHub(HubProcess):
    """A HubProcess whose configuration asks for debug-level logs."""

    def write(self) -> Path:
        config = super().write()
        text = config.read_text()
        assert 'level = "info"' in text
        config.write_text(text.replace('level = "info"', 'level = "debug"'))
        return config


@pytest.fixture
def hub(hub_factory: HubFactory) -> Iterator[HubProcess]:
    plain = hub_factory(extra_toml=NO_RETRIES, start=False)
    process = DebugLogHub(
        plain.folder,
        plain.hub_key,
        plain.directory,
        broker_port=plain.broker_port,
        extra_toml=plain.extra_toml,
    )
    process.start()
    yield process
    process.stop()


def documented_events() -> dict[str, str]:
    """event name -> documented level, from the table in docs/operations.md."""
    events: dict[str, str] = {}
    for line in (REPO / "docs" / "operations.md").read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`"):
            continue
        names = re.findall(r"`([a-z_]+\.[a-z_.]+)`", cells[0])
        levels = [lv.strip(" *") for lv in cells[1].split("/")]
        for n, name in enumerate(names):
            events[name] = levels[min(n, len(levels) - 1)]
    return events


@dataclass
class Exchange:
    accepted: bytes  # delivered to jl.cc
    skewed: bytes  # refused: created_at far outside the window
    quarantined: bytes  # SECRET on govnet
    content: bytes
    lines: list[str]


async def exchange(hub: HubProcess, spokes_at: SpokeMaker) -> Exchange:
    """One delivery, one refusal and one quarantine; then SIGTERM, so the log is complete."""
    gov, cc, national = (spokes_at(hub, org) for org in ("jl.gov", "jl.cc", "cn.gov"))
    for spoke in (cc, national, gov):
        await spoke.connect()
    content = f"CONTENT-{secrets.token_hex(8)}".encode()
    fields: dict[str, object] = {"doc_number": DOC_NUMBER, "signatory": SIGNATORY}
    accepted = await gov.send(["jl.cc"], contents=[content], **fields)
    skewed = await gov.send(["jl.cc"], contents=[content], created_at=now_ms() - 86_400_000)
    quarantined = await gov.send(
        ["cn.gov"], classification=Classification.SECRET, contents=[content], **fields
    )
    ids = (accepted, skewed, quarantined)
    await gov.wait_for(lambda: gov.has(accepted.header.msg_id, ReceiptStatus.DELIVERED))
    await gov.wait_for(lambda: all(gov.receipts.get(s.header.msg_id) for s in ids))
    for spoke in (cc, national, gov):
        await spoke.disconnect()
    assert hub.terminate() == 0
    text = (hub.folder / "hubd.log").read_text(encoding="utf-8", errors="replace")
    return Exchange(
        accepted.header.msg_id,
        skewed.header.msg_id,
        quarantined.header.msg_id,
        content,
        [line for line in text.splitlines() if line.strip()],
    )


def parsed(lines: list[str]) -> list[dict[str, object]]:
    events = []
    for line in lines:
        value = json.loads(line)
        assert isinstance(value, dict), line
        events.append(value)
    return events


def find(events: list[dict[str, object]], name: str, msg_id: bytes) -> dict[str, object]:
    matches = [e for e in events if e["event"] == name and e.get("msg_id") == msg_id.hex()]
    assert matches, f"no {name} for {msg_id.hex()}"
    return matches[0]


async def test_every_log_line_is_a_json_object_with_a_documented_event_name_and_level(
    hub: HubProcess, spokes_at: SpokeMaker
) -> None:
    run = await exchange(hub, spokes_at)
    documented = documented_events()
    assert "message.accepted" in documented  # the table was read

    not_json = [line for line in run.lines if not line.startswith("{")]
    assert not_json == [], "lines journald would hand to jq that are not JSON"
    events = parsed(run.lines)
    for event in events:
        assert {"event", "level", "timestamp"} <= set(event), event
        name = str(event["event"])
        assert name in documented, f"undocumented event {name!r}: {event}"
        assert event["level"] == documented[name], f"{name} logged at {event['level']}"
    names = {e["event"] for e in events}
    assert {
        "hub.starting",
        "hub.ready",
        "spoke.online",
        "spoke.hello",
        "message.accepted",
        "delivery.sent",
        "delivery.acked",
        "message.rejected",
        "message.quarantined",
        "hub.draining",
        "hub.stopped",
    } <= names


async def test_message_and_delivery_events_carry_ids_labels_and_channels(
    hub: HubProcess, spokes_at: SpokeMaker
) -> None:
    run = await exchange(hub, spokes_at)
    events = parsed(run.lines)

    accepted = find(events, "message.accepted", run.accepted)
    assert accepted["sender"] == "jl.gov"
    assert accepted["classification"] == "INTERNAL"
    assert accepted["precedence"] == "ROUTINE"
    assert accepted["channel"] == "govnet"
    assert accepted["recipients"] == 1
    for name in ("delivery.sent", "delivery.acked"):
        delivery = find(events, name, run.accepted)
        assert delivery["recipient"] == "jl.cc"
        assert delivery["channel"] == "govnet"
        assert delivery["classification"] == "INTERNAL"
    acked = find(events, "delivery.acked", run.accepted)
    assert isinstance(acked["latency_ms"], int)
    assert acked["latency_ms"] >= 0
    rejected = find(events, "message.rejected", run.skewed)
    assert rejected["reason"] == "replay.clock_skew"
    assert rejected["sender"] == "jl.gov"
    online = [e for e in events if e["event"] == "spoke.online" and e.get("org") == "jl.cc"]
    assert online
    assert online[0]["channel"] == "govnet"


async def test_a_quarantine_is_logged_as_an_error_naming_the_leak(
    hub: HubProcess, spokes_at: SpokeMaker
) -> None:
    run = await exchange(hub, spokes_at)
    events = parsed(run.lines)

    event = find(events, "message.quarantined", run.quarantined)
    assert event["level"] == "error"
    assert event["classification"] == "SECRET"
    assert event["channel"] == "govnet"
    assert event["sender"] == "jl.gov"
    assert event["reason"] == "policy.arrival_channel_below_label"
    assert not [e for e in events if e["event"] == "delivery.sent" and e["recipient"] == "cn.gov"]


async def test_no_log_line_carries_a_title_document_number_signatory_or_content(
    hub: HubProcess, spokes_at: SpokeMaker
) -> None:
    run = await exchange(hub, spokes_at)
    secrets_ = {
        "title": TITLE,
        "doc_number": DOC_NUMBER,
        "signatory": SIGNATORY,
        "content": run.content.decode(),
    }

    text = "\n".join(run.lines)
    values = [str(v) for e in parsed(run.lines) for v in e.values()]
    leaks = [
        (what, line)
        for what, secret in secrets_.items()
        for line in (text, *values)  # the raw lines (\\u-escaped) and the decoded values
        if secret in line or json.dumps(secret)[1:-1] in line
    ]
    assert leaks == []
