"""Where is my document? At the hub (issue 13): ``hubctl find`` without a msg_id, ``trace``
in time order, ``queue`` saying why each delivery waits and when it expires, and ``dead`` and
``redeliver --dead`` agreeing about EXPIRED dead letters.

In-process: a real SQLite store written through :class:`hubd.store.db.Store` as the hub
writes it, and the commands run through typer's CliRunner on a stopped hub's configuration
(the admin socket does not answer, so presence is unknown unless a test gives it).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, update
from sqlalchemy.dialects import sqlite
from typer.testing import CliRunner, Result

from hubd.cli import hubctl_app
from hubd.core.states import D, DeliveryState, F, P, S, X, Z
from hubd.core.timers import TimerSettings
from hubd.engine.rows import findable_doc_number
from hubd.ops.contact import SpokePresence, presence_answered
from hubd.ops.find import Search, find
from hubd.ops.query import Delivery, Listing, reading
from hubd.ops.waiting import (
    AWAITING_DELIVERED,
    EXPIRING,
    GIVING_UP,
    HUB_UNKNOWN,
    NEVER_SEEN,
    OFFLINE,
    PUBLISHING,
    explain,
    why_waiting,
)
from hubd.store import tables as t
from hubd.store.audit import AuditEvent
from hubd.store.db import Store
from hubd.store.writes import DirectWrite, NewMessage
from runtime.clock import now_ms
from schemas.clock import parse_moment
from schemas.labels import Classification, Precedence
from tests.hub.test_ledger_tamper import Hub, make_hub
from tests.world import World

MINUTE = 60_000
NUMBER = "吉政办发〔2026〕12号"
CLASSIFIED_NUMBER = "吉政发〔2026〕7号"
TITLE = "关于测试的通知"  # in no column: it must never be printed


# ---------------------------------------------------------------------------- a store


@dataclass(frozen=True)
class Doc:
    """A message for the store, with its deliveries' states now and its ledger entries."""

    hex_id: str
    sender: str
    to: dict[str, tuple[DeliveryState, int]]  # recipient -> (state now, attempts)
    at: int  # received (ms)
    classification: Classification = Classification.INTERNAL
    precedence: Precedence = Precedence.ROUTINE
    doc_number: str | None = None
    expires_at: int | None = None
    quarantined: bool = False

    @property
    def msg_id(self) -> bytes:
        return bytes.fromhex(self.hex_id)


@dataclass(slots=True)
class Situation(DirectWrite):
    """Deliveries set as the dispatcher's writes would leave them, and ledger entries."""

    states: list[tuple[bytes, str, DeliveryState, int, int]]  # msg, recipient, state, n, at
    audit: list[AuditEvent]

    def apply(self, conn: Connection) -> tuple[None, list[AuditEvent]]:
        d = t.deliveries
        for m, r, state, attempts, at in self.states:
            conn.execute(
                update(d)
                .where(d.c.msg_id == m, d.c.recipient == r)
                .values(state=state.value, attempts=attempts, updated_at=at)
            )
        return None, self.audit


def new_message(doc: Doc) -> NewMessage:
    frame = f"frame {doc.hex_id} {TITLE}".encode()  # a title inside the frame only
    row = {
        "msg_id": doc.msg_id,
        "sender": doc.sender,
        "classification": doc.classification.rank,
        "precedence": doc.precedence.rank,
        "doc_type": "NOTICE",
        "created_at": doc.at - 500,
        "expires_at": doc.expires_at,
        "received_at": doc.at,
        "arrival_channel": "govnet",
        "state": "QUARANTINED" if doc.quarantined else "ACCEPTED",
        "reason": "policy.arrival_channel_below_label" if doc.quarantined else None,
        "frame": frame,
        "frame_sha256": hashlib.sha256(frame).digest(),
        "body_size": 306,
        "body": b"body",
        "body_path": None,
        "doc_number": findable_doc_number(doc.doc_number, doc.classification),
    }
    routes = {} if doc.quarantined else dict.fromkeys(doc.to, "govnet")
    deliveries = [
        {
            "msg_id": doc.msg_id,
            "recipient": r,
            "channel": "govnet",
            "precedence": doc.precedence.rank,
            "state": P.value,
            "attempts": 0,
            "expires_at": doc.expires_at,
            "created_at": doc.at,
            "updated_at": doc.at,
        }
        for r in routes
    ]
    event = "message.quarantined" if doc.quarantined else "message.accepted"
    detail = {"channel": "govnet", "routes": routes}
    return NewMessage(row, deliveries, [AuditEvent(event, doc.at, doc.msg_id, doc.sender, detail)])


def situation(doc: Doc) -> Situation:
    """Each delivery's ledger entries up to its state now, a second per step."""
    states, audit = [], []
    for r, (state, attempts) in doc.to.items():
        at = doc.at
        for n in range(1, attempts + 1):
            at += 1000
            audit.append(
                AuditEvent("delivery.sent", at, doc.msg_id, r, {"channel": "govnet", "attempt": n})
            )
        if state in {D, F}:
            at += 1000
            audit.append(AuditEvent("receipt.delivered", at, doc.msg_id, r, {"issuer": r}))
        if state is F:
            at += 1000
            audit.append(AuditEvent("receipt.signed_for", at, doc.msg_id, r, {"issuer": r}))
        if state in {Z, X}:
            at += 1000
            event = "delivery.dead" if state is Z else "delivery.expired"
            audit.append(AuditEvent(event, at, doc.msg_id, r, {"attempts": attempts}))
        states.append((doc.msg_id, r, state, attempts, at))
    return Situation(states, audit)


def documents(base: int) -> list[Doc]:
    """The hub of docs/operations.md's samples (their msg_ids), received before ``base``."""

    def ago(minutes: int) -> int:
        return base - minutes * MINUTE

    return [
        Doc(
            "7606d5ad40c20a90b416f035998c79f7",
            "jl.gov",
            {"jl.jl": (F, 1)},
            ago(50),
            doc_number=NUMBER,
        ),
        Doc(
            "f38d1176b05cec1fa39ef2dce1710f11",
            "jl.gov",
            {"jl.sp": (Z, 2)},
            ago(45),
            precedence=Precedence.URGENT,
        ),
        Doc(
            "ad52c5e601c169c0334e4517130b9b6f",
            "jl.gov",
            {"jl.th": (X, 0)},
            ago(44),
            expires_at=ago(43),
        ),
        Doc(
            "51b2b78ccf6b2687b6fb59f97c73b7d6",
            "jl.cc.nongan",
            {"jl.gov": (P, 0)},
            ago(40),
            classification=Classification.SECRET,
            doc_number=CLASSIFIED_NUMBER,
            quarantined=True,
        ),
        Doc("5f454a71e6e70b3c8a14639fb9eb816c", "jl.jl", {"jl.cc": (Z, 30)}, ago(35)),
        Doc(
            "e1f0c2a39b8d4e5f60718293a4b5c6d7",
            "jl.gov",
            {"jl.bs": (S, 2)},
            ago(30),
            expires_at=base + 24 * 60 * MINUTE,
        ),
        Doc("8773cc9c2343fe52cb1c3c94426e96b0", "jl.gov", {"jl.cc": (P, 0)}, ago(20)),
        Doc(
            "a5033a878a423764f92e6382682790e9",
            "jl.gov",
            {"jl.bs": (P, 0), "jl.cc": (P, 0)},
            ago(15),
            precedence=Precedence.URGENT,
        ),
        Doc("12de7e45de9dd0174a3d89615db2c450", "jl.jl", {"jl.bs": (P, 0)}, ago(12)),
        Doc(
            "b5b147a0f61460f261913cdf2a201ca2",
            "jl.gov",
            {"jl.cc": (P, 0)},
            ago(10),
            precedence=Precedence.FLASH,
            classification=Classification.CONFIDENTIAL,
            doc_number=CLASSIFIED_NUMBER,
        ),
    ]


def fill(url: str, docs: list[Doc]) -> None:
    async def run() -> None:
        async with Store(url) as store:
            for doc in docs:
                await store.submit(new_message(doc))
            for doc in docs:
                if not doc.quarantined:
                    await store.submit(situation(doc))

    asyncio.run(run())


@pytest.fixture
def hub(tmp_path: Path, world: World) -> Hub:
    """A stopped hub whose store holds :func:`documents`, received in the last hour."""
    made = make_hub(tmp_path / "hub", world)
    fill(made.url, documents(now_ms()))
    return made


def hubctl(hub: Hub, *args: str) -> Result:
    return CliRunner().invoke(hubctl_app, [*args, "--config", str(hub.config)])


def as_json(hub: Hub, *args: str) -> dict[str, Any]:
    result = hubctl(hub, *args, "--json")
    assert result.exit_code == 0, result.output
    value = json.loads(result.stdout)
    assert isinstance(value, dict)
    return value


def ids(answer: dict[str, Any], key: str = "messages") -> list[str]:
    return [str(m["msg_id"])[:4] for m in answer[key]]


# ---------------------------------------------------------------------------- find


def test_find_by_sender_lists_its_messages_most_recent_first_with_recipients_states(
    hub: Hub,
) -> None:
    answer = as_json(hub, "find", "--from", "jl.gov")
    text = hubctl(hub, "find", "--from", "jl.gov")

    assert ids(answer) == ["b5b1", "a503", "8773", "e1f0", "ad52", "f38d", "7606"]
    first = answer["messages"][-1]
    assert first["recipients"] == [
        {
            "recipient": "jl.jl",
            "channel": "govnet",
            "state": "SIGNED_FOR",
            "attempts": 1,
            "updated_at": first["recipients"][0]["updated_at"],
        }
    ]
    assert (first["classification"], first["precedence"]) == ("INTERNAL", "ROUTINE")
    assert text.exit_code == 0, text.output
    assert "jl.bs PENDING, jl.cc PENDING" in text.stdout
    assert "NOTICE 通知, INTERNAL 内部, ROUTINE 平件" in text.stdout


def test_find_by_recipient_finds_what_was_routed_to_it_and_a_quarantine_by_its_sender(
    hub: Hub,
) -> None:
    to_cc = as_json(hub, "find", "--to", "jl.cc")
    from_nongan = hubctl(hub, "find", "--from", "jl.cc.nongan")

    assert ids(to_cc) == ["b5b1", "a503", "8773", "5f45"]
    assert "none: quarantined (policy.arrival_channel_below_label)" in from_nongan.stdout


def test_find_by_doc_number_finds_a_document_below_mimi_and_never_prints_the_number(
    hub: Hub,
) -> None:
    answer = as_json(hub, "find", "--doc-number", NUMBER)
    text = hubctl(hub, "find", "--doc-number", NUMBER)
    secret = as_json(hub, "find", "--doc-number", CLASSIFIED_NUMBER)

    assert ids(answer) == ["7606"]
    assert NUMBER not in json.dumps(answer, ensure_ascii=False)
    assert answer["search"]["by_doc_number"] is True
    assert text.exit_code == 0, text.output
    assert NUMBER not in text.stdout
    assert TITLE not in text.stdout
    assert "7606d5ad40c20a90b416f035998c79f7" in text.stdout
    # 秘密 and 机密 documents carry the same number in their headers, and are not found by it
    assert secret["total"] == 0
    assert "not found by 发文字号" in secret["note"]


@pytest.mark.parametrize(
    ("classification", "kept"),
    [
        (Classification.PUBLIC, True),
        (Classification.INTERNAL, True),
        (Classification.CONFIDENTIAL, False),
        (Classification.SECRET, False),
        (Classification.TOP_SECRET, False),
    ],
)
def test_the_store_keeps_the_doc_number_only_below_mimi(
    classification: Classification, kept: bool
) -> None:
    assert findable_doc_number(NUMBER, classification) == (NUMBER if kept else None)


def test_find_by_time_range_takes_the_formats_the_tools_print(hub: Hub) -> None:
    now = now_ms()
    iso = as_json(hub, "find", "--since", "25m", "--until", "11m")
    millis = as_json(hub, "find", "--since", str(now - 25 * MINUTE), "--until", "11m")
    both = as_json(hub, "find", "--from", "jl.jl", "--to", "jl.bs", "--since", "1h")
    nothing = hubctl(hub, "find", "--to", "jl.th", "--since", "30m")

    assert ids(iso) == ["12de", "a503", "8773"]
    assert ids(millis) == ids(iso)
    assert ids(both) == ["12de"]
    assert nothing.exit_code == 0, nothing.output
    assert "no message found (to jl.th, received since" in nothing.stdout
    assert "message.rejected" in nothing.stdout


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-25T17:52:20Z", 1795629140000),
        ("2026-11-25T17:52:20.892Z", 1795629140892),
        ("2026-11-26T01:52:20+08:00", 1795629140000),
        ("2026-11-25", 1795564800000),
        ("36h", 1795000000000 - 36 * 3_600_000),
        ("1795629140892", 1795629140892),
    ],
)
def test_a_moment_is_read_as_hubctl_prints_it(text: str, expected: int) -> None:
    assert parse_moment(text, now=1795000000000) == expected


def test_a_time_without_a_zone_or_an_unreadable_one_exits_2_naming_it(hub: Hub) -> None:
    naive = hubctl(hub, "find", "--since", "2026-11-25T17:52:20")
    junk = hubctl(hub, "find", "--until", "yesterday")

    assert naive.exit_code == 2
    assert "needs its zone" in naive.output
    assert junk.exit_code == 2
    assert "--until 'yesterday' is not a time" in junk.output
    assert "Traceback" not in naive.output + junk.output


# ---------------------------------------------------------------------------- trace


def test_trace_prints_in_time_order_when_the_ledger_holds_a_later_step_first(
    hub: Hub,
) -> None:
    m = bytes.fromhex("8773cc9c2343fe52cb1c3c94426e96b0")
    base = now_ms()

    async def late_entries() -> None:  # committed in this order; happened the other way
        async with Store(hub.url) as store:
            await store.submit(
                Situation(
                    [],
                    [
                        AuditEvent(
                            "receipt.delivered", base - 1000, m, "jl.cc", {"issuer": "jl.cc"}
                        ),
                        AuditEvent("delivery.sent", base - 3000, m, "jl.cc", {"attempt": 1}),
                        AuditEvent("hub.note", base - 3000, m, "jl.cc", {"same": "ms"}),
                    ],
                )
            )

    asyncio.run(late_entries())
    answer = as_json(hub, "trace", m.hex())
    text = hubctl(hub, "trace", m.hex())

    steps = [(s["event"], s["seq"]) for s in answer["timeline"]]
    assert [e for e, _ in steps] == [
        "message.accepted",
        "delivery.sent",
        "hub.note",  # the same millisecond: the ledger's order
        "receipt.delivered",
    ]
    assert steps[1][1] < steps[2][1]
    assert [s["at"] for s in answer["timeline"]] == sorted(s["at"] for s in answer["timeline"])
    lines = text.stdout.splitlines()
    sent = next(i for i, line in enumerate(lines) if " sent " in line)
    delivered = next(i for i, line in enumerate(lines) if "DELIVERED" in line)
    assert sent < delivered


# ---------------------------------------------------------------------------- queue


NOW = 1_795_000_000_000
TIMERS = TimerSettings(max_attempts=3, retry_initial_ms=10_000, retry_max_ms=300_000)


def delivery(
    state: DeliveryState, attempts: int, *, expires_at: int | None = None, last: int = 5_000
) -> Delivery:
    """A delivery to jl.cc whose last change (the last publish) was ``last`` ms ago."""
    return Delivery(
        msg_id=b"\x01" * 16,
        recipient="jl.cc",
        channel="govnet",
        state=state,
        attempts=attempts,
        precedence=Precedence.ROUTINE,
        classification=Classification.INTERNAL,
        sender="jl.gov",
        created_at=NOW - 60_000,
        updated_at=NOW - last,
        expires_at=expires_at,
    )


ONLINE = SpokePresence(online=True, since=NOW - 90_000)
OFFLINE_5M = SpokePresence(online=False, since=NOW - 300_000)
LINK_DOWN = SpokePresence(online=None, since=None)  # the hub's link to govnet's broker is down


@pytest.mark.parametrize(
    ("d", "presence", "known", "code", "words"),
    [
        (delivery(P, 0), OFFLINE_5M, True, OFFLINE, "offline on govnet since"),
        (delivery(P, 0), None, True, NEVER_SEEN, "has not been online"),
        (delivery(P, 0), ONLINE, True, PUBLISHING, "queued for the broker"),
        (delivery(P, 0), None, False, HUB_UNKNOWN, "whether jl.cc is online is unknown"),
        (delivery(P, 0), LINK_DOWN, True, HUB_UNKNOWN, "link to the broker of govnet is down"),
        # published twice 5 s ago: the third attempt 20 s after it, jitter 0.8..1.2
        (delivery(S, 2), ONLINE, True, AWAITING_DELIVERED, "attempt 3 between"),
        (delivery(S, 2), None, False, AWAITING_DELIVERED, "published 2 times"),
        # published once 20 s ago: attempt 2 was due 8 to 12 s after it
        (delivery(S, 1, last=20_000), None, False, AWAITING_DELIVERED, "attempt 2 was due by"),
        (delivery(S, 1, last=20_000), ONLINE, True, AWAITING_DELIVERED, "published again"),
        (delivery(S, 1, last=20_000), LINK_DOWN, True, AWAITING_DELIVERED, "link to the broker"),
        (delivery(S, 2), LINK_DOWN, True, AWAITING_DELIVERED, "attempt 3 between"),
        (delivery(S, 2), OFFLINE_5M, True, OFFLINE, "(published 2 times, no DELIVERED yet)"),
        (delivery(S, 3), ONLINE, True, GIVING_UP, "max_attempts (3) reached; DEAD between"),
        (delivery(S, 1, expires_at=NOW - 1), ONLINE, True, EXPIRING, "expires_at passed"),
    ],
)
def test_why_a_delivery_waits_follows_presence_and_the_retry_policy(
    d: Delivery, presence: SpokePresence | None, known: bool, code: str, words: str
) -> None:
    why = why_waiting(d, now=NOW, presence=presence, presence_known=known, timers=TIMERS)

    assert why.code == code
    assert words in why.detail
    if d.state is S and code != EXPIRING:  # 10 s doubling per attempt, times 0.8 to 1.2
        backoff = 10_000 * 2 ** (d.attempts - 1)
        assert (why.next_attempt_from, why.next_attempt_by) == (
            d.updated_at + backoff * 8 // 10,
            d.updated_at + backoff * 12 // 10,
        )


def test_queue_says_presence_unknown_not_never_seen_for_a_spoke_the_hub_reports_unknown() -> None:
    def spoke(org: str, online: bool | None, since: int | None) -> dict[str, object]:
        state = "unknown" if online is None else ("online" if online else "offline")
        return {"org": org, "channel": "govnet", "online": online, "state": state, "since": since}

    answer = {  # the admin socket's presence answer: govnet's broker link is down for jl.cc
        "spokes": [spoke("jl.cc", None, None), spoke("jl.bs", False, None)],
    }
    to_cc, to_bs = delivery(P, 0), replace(delivery(P, 0), recipient="jl.bs")
    listing = Listing(at=NOW, recipient=None, total=2, items=(to_cc, to_bs))

    queue = explain(listing, presence=presence_answered(answer), hub_problem=None, timers=TIMERS)

    assert queue.presence_known
    unknown, never_seen = queue.why
    assert unknown.code == HUB_UNKNOWN
    assert "the hub's link to the broker of govnet is down" in unknown.detail
    assert "whether jl.cc is online is unknown" in unknown.detail
    assert unknown.short(NOW) == "unknown"
    assert never_seen.code == NEVER_SEEN
    assert "jl.bs has not been online on govnet since the hub started" in never_seen.detail


def test_queue_says_per_delivery_why_it_waits_and_when_it_expires(hub: Hub) -> None:
    answer = as_json(hub, "queue")
    text = hubctl(hub, "queue")

    by_id = {(d["msg_id"][:4], d["recipient"]): d for d in answer["deliveries"]}
    sent = by_id[("e1f0", "jl.bs")]
    pending = by_id[("8773", "jl.cc")]
    assert answer["presence_known"] is False
    assert "no socket file" in answer["hub_problem"]
    assert sent["waiting"]["code"] == "awaiting_delivered"
    assert sent["waiting"]["next_attempt_from"] < sent["waiting"]["next_attempt_by"]
    assert sent["expires_at"] is not None
    assert pending["waiting"]["code"] == "presence_unknown"
    assert pending["expires_at"] is None
    assert text.exit_code == 0, text.output
    assert "why each waits:" in text.stdout
    # published twice 30 minutes ago, with no hub since: the retry is overdue
    assert (
        "e1f0c2a39b8d4e5f60718293a4b5c6d7 to jl.bs: published 2 times, no DELIVERED yet; "
        "attempt 3 was due by"
    ) in text.stdout
    assert "a started hub publishes it again" in text.stdout
    row = next(line for line in text.stdout.splitlines() if line.startswith("8773"))
    assert "never" in row  # expires
    assert "presence unknown: the hub did not answer" in text.stdout


# ---------------------------------------------------------------------------- dead


def test_dead_shows_expired_letters_apart_as_not_redeliverable(hub: Hub) -> None:
    answer = as_json(hub, "dead")
    text = hubctl(hub, "dead")

    assert (answer["total"], answer["gave_up"], answer["expired"]) == (3, 2, 1)
    by_id = {d["msg_id"][:4]: d for d in answer["deliveries"]}
    assert by_id["f38d"]["redeliverable"] is True
    assert by_id["ad52"]["redeliverable"] is False
    assert by_id["ad52"]["not_redeliverable"]["code"] == "redeliver.expired"
    lines = text.stdout.splitlines()
    gave_up = next(i for i, line in enumerate(lines) if line.startswith("gave up (2)"))
    expired = next(i for i, line in enumerate(lines) if line.startswith("expired (1)"))
    assert gave_up < expired
    assert any("f38d1176" in line for line in lines[gave_up:expired])
    assert any("ad52c5e6" in line for line in lines[expired:])


def test_redeliver_dead_names_the_expired_letters_it_leaves_and_why(
    tmp_path: Path, world: World
) -> None:
    only_expired = make_hub(tmp_path / "expired", world)
    fill(only_expired.url, [d for d in documents(now_ms()) if d.hex_id.startswith("ad52")])

    text = hubctl(only_expired, "redeliver", "--dead")
    answer = as_json(only_expired, "redeliver", "--dead")
    dead = as_json(only_expired, "dead")

    assert dead["total"] == 1  # 'hubctl dead' lists it ...
    assert text.exit_code == 0, text.output
    assert "no dead letter matches" not in text.stdout  # ... and redeliver says why it stays
    assert "1 expired document is not redelivered: their validity ended" in text.stdout
    assert "'hubctl dead' lists them under 'expired'" in text.stdout
    assert (answer["redelivered"], answer["refused"], answer["expired"]) == ([], [], 1)


def test_redeliver_dead_moves_the_dead_letters_and_counts_the_expired_ones(hub: Hub) -> None:
    answer = as_json(hub, "redeliver", "--dead")
    again = as_json(hub, "redeliver", "--dead", "--to", "jl.cc")

    moved = sorted(d["msg_id"][:4] for d in answer["redelivered"])
    assert moved == ["5f45", "f38d"]
    assert answer["expired"] == 1
    assert (again["redelivered"], again["expired"]) == ([], 0)


def test_find_queue_and_dead_read_a_postgresql_store(request: pytest.FixtureRequest) -> None:
    url = str(request.getfixturevalue("pg_url"))
    fill(url, documents(now_ms()))

    def ask(*args: str) -> dict[str, Any]:
        result = CliRunner().invoke(hubctl_app, [*args, "--store", url, "--json"])
        assert result.exit_code == 0, result.output
        value = json.loads(result.stdout)
        assert isinstance(value, dict)
        return value

    assert ids(ask("find", "--to", "jl.cc", "--since", "1h")) == ["b5b1", "a503", "8773", "5f45"]
    assert ids(ask("find", "--doc-number", NUMBER)) == ["7606"]
    assert ask("queue")["total"] == 6
    assert (ask("dead")["gave_up"], ask("dead")["expired"]) == (2, 1)


@pytest.mark.parametrize(
    ("search", "index"),
    [
        (Search(sender="jl.gov", since=1), "messages_by_sender"),
        (Search(doc_number=NUMBER), "messages_by_doc_number"),
        (Search(since=1, until=2), "messages_by_received"),
        (Search(recipient="jl.cc", since=1), "deliveries_by_recipient"),
    ],
)
def test_each_kind_of_find_searches_an_index_not_the_whole_table(
    hub: Hub, search: Search, index: str
) -> None:
    asked: list[Any] = []

    async def run() -> None:
        async with reading(hub.url) as read:

            async def recording(statement: Any) -> Sequence[Any]:
                asked.append(statement)
                return await read(statement)

            await find(recording, search, now=now_ms(), limit=50)

    asyncio.run(run())
    plans = []
    with sqlite3.connect(hub.db) as conn:
        for statement in asked[:2]:  # the count, then the page
            sql = str(
                statement.compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True})
            )
            plans.append(" ".join(r[3] for r in conn.execute(f"EXPLAIN QUERY PLAN {sql}")))
    for plan in plans:
        assert f"INDEX {index}" in plan, plan
        assert "SCAN messages" not in plan, plan
