"""The status page's data without a server: the flow history, the summary and the tree's
rows.

Both are pure (the caller says what time it is), so every expectation here is exact.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from hubd.core.states import DeliveryState
from hubd.engine.presencebook import PresenceBook, presence_state
from hubd.ops.query import Delivery
from hubd.web.flow import FlowHistory
from hubd.web.statustree import OrgTree, org_tree
from hubd.web.statusview import DeadLetters, Facts, build_snapshot, org_state
from schemas.directory import Directory
from schemas.labels import Classification, Precedence
from tests.national import Waiting
from tests.world import NOW, World

# ---------------------------------------------------------------------------- flow


def totals(
    accepted: int = 0, delivered: int = 0, rejected: int = 0, quarantined: int = 0
) -> dict[str, Any]:
    return {
        "accepted": accepted,
        "delivered": delivered,
        "rejected": rejected,
        "quarantined": quarantined,
    }


def test_each_bucket_holds_what_the_counters_grew_by_in_its_interval() -> None:
    flow = FlowHistory(keep=10, step_ms=10_000)
    flow.start(NOW, totals())
    flow.sample(NOW + 10_000, totals(accepted=5, delivered=3))
    flow.sample(NOW + 20_000, totals(accepted=7, delivered=8, rejected=1))

    buckets = flow.buckets()

    assert [(b.start, b.end) for b in buckets] == [
        (NOW, NOW + 10_000),
        (NOW + 10_000, NOW + 20_000),
    ]
    assert buckets[0].counts == totals(accepted=5, delivered=3)
    assert buckets[1].counts == totals(accepted=2, delivered=5, rejected=1)


def test_only_the_last_buckets_are_kept() -> None:
    flow = FlowHistory(keep=3, step_ms=10)
    flow.start(0, totals())
    for n in range(1, 6):
        flow.sample(n * 10, totals(accepted=n * n))

    assert [b.counts["accepted"] for b in flow.buckets()] == [5, 7, 9]  # 9-4, 16-9, 25-16


def test_the_open_interval_and_the_window_totals_count_what_came_since_the_last_sample() -> None:
    flow = FlowHistory(keep=2, step_ms=10)
    flow.start(0, totals())
    flow.sample(10, totals(accepted=1))
    flow.sample(20, totals(accepted=3))
    flow.sample(30, totals(accepted=6))  # the first bucket (1) falls out of the window

    view = flow.as_json(34, totals(accepted=10, quarantined=1))

    assert view["current"] == {"start": 30, "end": 34, **totals(accepted=4, quarantined=1)}
    assert view["totals"] == totals(accepted=2 + 3 + 4, quarantined=1)
    assert view["since"] == 10
    assert [b["accepted"] for b in view["buckets"]] == [2, 3]


def test_before_the_sampler_starts_the_flow_is_empty_and_says_so() -> None:
    view = FlowHistory().as_json(NOW, totals(accepted=3))

    assert view["buckets"] == []
    assert view["current"] is None
    assert view["since"] is None
    assert view["totals"] == totals()


def test_a_clock_that_steps_back_closes_no_bucket() -> None:
    flow = FlowHistory(step_ms=10)
    flow.start(100, totals())
    flow.sample(90, totals(accepted=2))

    assert flow.buckets() == ()
    assert flow.as_json(110, totals(accepted=2))["current"]["accepted"] == 2


def test_counters_that_restarted_from_zero_count_as_new() -> None:
    flow = FlowHistory(step_ms=10)
    flow.start(0, totals(accepted=50))
    flow.sample(10, totals(accepted=4))

    assert flow.buckets()[0].counts["accepted"] == 4


@pytest.mark.parametrize(("keep", "step"), [(0, 10), (5, 0)])
def test_a_history_without_room_or_step_is_refused(keep: int, step: int) -> None:
    with pytest.raises(ValueError, match="must be positive"):
        FlowHistory(keep=keep, step_ms=step)


# ---------------------------------------------------------------------------- the tree


def test_the_tree_follows_parent_links_from_the_state_council_down(world: World) -> None:
    roots = org_tree(world.directory)

    # the congresses stand outside the government tree: roots of their own, not orphans
    assert [r.org.id for r in roots] == ["cn.gov", "jl.congress", "jl.cc.congress"]
    assert [(r.orphan, r.children) for r in roots[1:]] == [(False, ()), (False, ())]
    (province,) = roots[0].children
    assert province.org.id == "jl.gov"
    below = [c.org.id for c in province.children]
    prefectures = [o.id for o in world.directory.orgs if o.level.value == "prefecture"]
    departments = [o.id for o in world.directory.orgs if o.level.value == "department"]
    assert below == prefectures + departments  # directory order: governments, then departments
    changchun = next(c for c in province.children if c.org.id == "jl.cc")
    assert [c.org.id for c in changchun.children] == [
        "jl.cc.nongan",
        "jl.cc.yushu",
        "jl.cc.dehui",
    ]
    assert sorted(o.id for r in roots for o in r.walk()) == sorted(
        o.id for o in world.directory.orgs
    )


def with_parents(directory: Directory, parents: dict[str, str | None]) -> Directory:
    orgs = tuple(
        o.model_copy(update={"parent": parents[o.id]}) if o.id in parents else o
        for o in directory.orgs
    )
    return directory.model_copy(update={"orgs": orgs})


def test_an_org_whose_parent_is_missing_or_in_a_cycle_is_shown_as_an_orphan_root(
    world: World,
) -> None:
    odd = with_parents(
        world.directory,
        {"jl.dept.health": "zz.gone", "jl.yb": "jl.yb.yanji", "jl.yb.yanji": "jl.yb"},
    )

    roots = {r.org.id: r for r in org_tree(odd)}

    assert roots["jl.dept.health"].orphan
    assert not roots["cn.gov"].orphan
    cycle = roots["jl.yb"]  # the first of the cycle in directory order
    assert cycle.orphan
    assert [c.org.id for c in cycle.children] == ["jl.yb.yanji", "jl.yb.tumen", "jl.yb.dunhua"]
    assert cycle.children[0].children == (), "the cycle is cut where it comes back"
    placed = [o.id for r in roots.values() for o in r.walk()]
    assert sorted(placed) == sorted(o.id for o in odd.orgs), "every org exactly once"


@pytest.mark.parametrize(
    ("states", "word"),
    [
        ([], "none"),
        (["online", "online"], "online"),
        (["online", "offline"], "partial"),
        (["online", "unseen"], "partial"),
        (["offline", "unseen"], "offline"),
        (["unseen"], "unseen"),
        (["unknown", "unknown"], "unknown"),
        (["unknown", "unseen"], "unknown"),
        (["online", "unknown"], "partial"),
        (["offline", "unknown"], "offline"),
    ],
)
def test_an_organisation_is_summed_up_over_its_channels(states: list[str], word: str) -> None:
    assert org_state(states) == word


# ---------------------------------------------------------------------------- the snapshot


NO_DEAD = DeadLetters(0, 0, ())
READY = {"status": "ok", "directory_version": 1, "brokers": {"embedded": True}, "store": "writable"}


def facts(
    directory: Directory | None,
    *,
    presence: dict[tuple[str, str], tuple[bool, int]] | None = None,
    pending: list[Waiting] | None = None,
    dead: DeadLetters = NO_DEAD,
    at: int = NOW,
    book: PresenceBook | None = None,
    expiring: dict[str, int] | None = None,
) -> Facts:
    known = presence or {}
    return Facts.gather(
        at=at,
        directory=directory,
        presence=(lambda channel, org: presence_state(known.get((channel, org))))
        if book is None
        else book.state,
        pending=pending or [],
        dead=dead,
        expiring=expiring,
    )


def snapshot(directory: Directory | None, **given: Any) -> dict[str, Any]:
    """The summary /status.json carries."""
    known = facts(directory, **given)
    result = build_snapshot(
        known,
        started_at=NOW - 60_000,
        version="0.1.0",
        readiness=READY,
        ready=True,
        flow=FlowHistory().as_json(known.at, {}),
    )
    json.dumps(result)  # JSON-able as it is
    return result


def nodes(directory: Directory, **given: Any) -> dict[str, dict[str, Any]]:
    """Every organisation's row as the tree's pages give it, with its depth."""
    known, tree = facts(directory, **given), OrgTree(directory)
    found: dict[str, dict[str, Any]] = {}

    def visit(under: str | None, depth: int) -> None:
        page = tree.page(known, under, 0, 1000)
        json.dumps(page)
        for row in page["orgs"]:
            found[row["id"]] = {**row, "depth": depth}
            visit(row["id"], depth + 1)

    visit(None, 0)
    return found


def test_presence_maps_to_online_offline_and_unseen_per_channel_with_since(world: World) -> None:
    presence = {
        ("govnet", "jl.gov"): (True, NOW - 5_000),
        ("classified", "jl.gov"): (False, NOW - 90_000),
        ("govnet", "jl.cc"): (True, NOW - 1_000),
        ("govnet", "jl.jl"): (False, NOW - 2_000),
    }

    orgs = nodes(world.directory, presence=presence)

    gov = {c["id"]: (c["state"], c["since"]) for c in orgs["jl.gov"]["channels"]}
    assert gov == {
        "internet": ("unseen", None),
        "govnet": ("online", NOW - 5_000),
        "classified": ("offline", NOW - 90_000),
    }
    assert orgs["jl.gov"]["state"] == "partial"
    assert orgs["jl.cc"]["state"] == "online"
    assert orgs["jl.jl"]["state"] == "offline"
    assert orgs["jl.sp"]["state"] == "unseen"
    ceilings = {c["id"]: c["ceiling"]["name"] for c in orgs["jl.gov"]["channels"]}
    assert ceilings == {"internet": "PUBLIC", "govnet": "INTERNAL", "classified": "SECRET"}
    assert orgs["jl.cc.nongan"]["depth"] == 3
    assert orgs["jl.dept.health"]["depth"] == 2
    assert orgs["cn.gov"]["clearance"] == {"name": "SECRET", "zh": "机密"}
    assert orgs["jl.cc"]["level"] == {"name": "prefecture", "zh": "地市级"}


def test_spokes_and_channels_are_counted_from_presence(world: World) -> None:
    presence = {
        ("govnet", "jl.cc"): (True, NOW),
        ("govnet", "jl.jl"): (False, NOW),
        ("govnet", "jl.gov"): (True, NOW),
    }

    snap = snapshot(world.directory, presence=presence)

    assert snap["spokes"]["orgs"] == len(world.directory.orgs)
    assert snap["spokes"]["online"] == 1  # jl.cc: jl.gov is online on govnet only
    assert snap["spokes"]["partial"] == 1
    assert snap["spokes"]["offline"] == 1
    channels = {c["id"]: c for c in snap["channels"]}
    assert channels["govnet"]["online"] == 2
    assert channels["govnet"]["provisioned"] == sum(
        "govnet" in o.channels for o in world.directory.orgs
    )
    assert channels["core"]["provisioned"] == 0
    assert channels["core"]["ceiling"] == {"name": "TOP_SECRET", "zh": "绝密"}


def test_a_lost_broker_shows_its_spokes_unknown_never_offline(world: World) -> None:
    book = PresenceBook(lambda: NOW)
    book.set("govnet", "jl.cc", online=True)
    book.set("govnet", "jl.jl", online=False)
    book.set("internet", "jl.gov", online=True)

    book.lost(["govnet"])  # the hub's link to govnet's broker went down
    snap = snapshot(world.directory, book=book)

    orgs = nodes(world.directory, book=book)
    assert orgs["jl.cc"]["state"] == "unknown"
    assert orgs["jl.jl"]["state"] == "unknown"
    gov = {c["id"]: c["state"] for c in orgs["jl.gov"]["channels"]}
    assert gov["govnet"] == "unknown"
    assert gov["internet"] == "online"
    assert snap["spokes"]["offline"] == 0
    channels = {c["id"]: c for c in snap["channels"]}
    assert channels["govnet"]["unknown"] == channels["govnet"]["provisioned"]
    assert channels["govnet"]["online"] == 0


def job(n: int, recipient: str, **kw: object) -> Waiting:
    fields: dict[str, Any] = {
        "msg_id": bytes([n]) * 16,
        "recipient": recipient,
        "channel": "govnet",
        "precedence": Precedence.ROUTINE,
        "state": DeliveryState.PENDING,
        "accepted_at": NOW - n * 1000,
    }
    return Waiting(**{**fields, **kw})


def test_queue_depth_oldest_and_most_urgent_are_per_organisation_and_channel(
    world: World,
) -> None:
    pending = [  # neither the oldest nor the most urgent comes last
        job(9, "jl.cc"),
        job(2, "jl.cc", state=DeliveryState.SENT, precedence=Precedence.FLASH),
        job(1, "jl.cc"),
        job(3, "jl.gov", channel="classified", precedence=Precedence.URGENT),
        job(4, "jl.gov"),
    ]

    snap = snapshot(world.directory, pending=pending)
    orgs = nodes(world.directory, pending=pending)

    cc = orgs["jl.cc"]["queue"]
    assert cc["pending"] == 3
    assert cc["sent"] == 1
    assert cc["oldest_at"] == NOW - 9000
    assert cc["oldest_age_ms"] == 9000
    assert cc["most_urgent"] == {"name": "FLASH", "zh": "特提"}
    gov = {c["id"]: c["pending"] for c in orgs["jl.gov"]["channels"]}
    assert gov == {"internet": 0, "govnet": 1, "classified": 1}
    assert orgs["jl.gov"]["queue"]["pending"] == 2
    assert orgs["jl.gov"]["queue"]["most_urgent"]["name"] == "URGENT"
    assert orgs["jl.jl"]["queue"] == {
        "pending": 0,
        "sent": 0,
        "oldest_at": None,
        "oldest_age_ms": None,
        "most_urgent": None,
    }
    assert snap["pending"]["total"] == 5
    assert snap["pending"]["sent"] == 1
    oldest = snap["pending"]["oldest"]
    assert (oldest["recipient"], oldest["age_ms"]) == ("jl.cc", 9000)
    assert oldest["msg_id"] == "09" * 16
    channels = {c["id"]: c["pending"] for c in snap["channels"]}
    assert channels == {"internet": 0, "govnet": 4, "classified": 1, "core": 0}


def test_deliveries_to_an_organisation_the_directory_dropped_are_listed_apart(
    world: World,
) -> None:
    snap = snapshot(world.directory, pending=[job(1, "zz.removed"), job(2, "jl.cc")])

    assert snap["unlisted"] == {
        "recipients": [
            {
                "recipient": "zz.removed",
                "pending": 1,
                "sent": 0,
                "oldest_at": NOW - 1000,
                "oldest_age_ms": 1000,
                "most_urgent": {"name": "ROUTINE", "zh": "平件"},
            }
        ],
        "more": 0,
    }
    assert snap["pending"]["total"] == 2


def test_names_and_ids_travel_raw_and_nothing_but_ids_and_labels_describe_a_delivery(
    world: World,
) -> None:
    orgs = tuple(
        o.model_copy(update={"name_en": '<img src=x onerror=alert(1)> & "co"'})
        if o.id == "jl.cc"
        else o
        for o in world.directory.orgs
    )
    directory = world.directory.model_copy(update={"orgs": orgs})
    dead = DeadLetters(
        1,
        0,
        (
            Delivery(
                msg_id=b"\xab" * 16,
                recipient="jl.cc",
                channel="govnet",
                state=DeliveryState.DEAD,
                attempts=30,
                precedence=Precedence.URGENT,
                classification=Classification.INTERNAL,
                sender="jl.gov",
                created_at=NOW - 600_000,
                updated_at=NOW - 5_000,
                expires_at=None,
            ),
        ),
    )

    snap = snapshot(directory, pending=[job(1, "jl.cc")], dead=dead)
    rows = nodes(directory, pending=[job(1, "jl.cc")], dead=dead)
    text = json.dumps([snap, rows], ensure_ascii=False)

    assert rows["jl.cc"]["name_en"] == '<img src=x onerror=alert(1)> & "co"'
    assert "&lt;" not in text
    assert "&amp;" not in text
    assert snap["dead"] == {
        "total": 1,
        "dead": 1,
        "expired": 0,
        "recent": [
            {
                "msg_id": "ab" * 16,
                "recipient": "jl.cc",
                "sender": "jl.gov",
                "channel": "govnet",
                "state": "DEAD",
                "attempts": 30,
                "at": NOW - 5_000,
                "precedence": {"name": "URGENT", "zh": "加急"},
                "classification": {"name": "INTERNAL", "zh": "内部"},
            }
        ],
        "problem": None,
    }
    assert set(snap["pending"]["oldest"]) == {
        "msg_id",
        "recipient",
        "channel",
        "precedence",
        "accepted_at",
        "age_ms",
    }


def test_dead_letters_that_could_not_be_read_are_unknown_not_zero() -> None:
    unread = DeadLetters(0, 0, (), "the store did not answer within 3 s")

    dead = unread.as_json()

    assert dead["total"] is None
    assert dead["dead"] is None
    assert dead["problem"] == "the store did not answer within 3 s"


def test_directory_expiry_is_flagged_three_days_ahead_and_once_passed(world: World) -> None:
    expires = world.directory.expires_at

    early = snapshot(world.directory, at=expires - 4 * 86_400_000)["directory"]
    soon = snapshot(world.directory, at=expires - 2 * 86_400_000)["directory"]
    gone = snapshot(world.directory, at=expires + 1)["directory"]

    assert (early["expires_soon"], early["expired"]) == (False, False)
    assert (soon["expires_soon"], soon["expired"]) == (True, False)
    assert soon["expires_in_ms"] == 2 * 86_400_000
    assert (gone["expires_soon"], gone["expired"]) == (False, True)
    assert early["version"] == world.directory.version


def test_without_a_directory_the_snapshot_still_carries_readiness_and_queues() -> None:
    snap = snapshot(None, pending=[job(1, "jl.cc")])

    assert snap["attention"]["orgs"] == []
    assert snap["directory"] is None
    assert snap["pending"]["total"] == 1
    assert snap["readiness"] == READY


# ---------------------------------------------------------------------------- attention

DAY = 86_400_000


@pytest.mark.parametrize(
    ("online", "waiting", "dead", "keys_until", "reasons"),
    [
        (True, 0, 0, None, []),  # healthy: not listed, only counted
        (True, 2, 0, None, []),  # online, its deliveries on their way
        (False, 2, 0, None, ["offline_waiting"]),
        (False, 0, 0, None, ["offline"]),
        (None, 2, 0, None, ["unseen_waiting"]),
        (None, 0, 0, None, []),  # no spoke yet, nothing for it: counted as not seen
        (True, 0, 3, None, ["dead_letters"]),
        (True, 0, 0, NOW + 2 * DAY, ["keys_expiring"]),
        (True, 0, 0, NOW - 1, ["keys_expired"]),
        (False, 1, 1, NOW + DAY, ["offline_waiting", "dead_letters", "keys_expiring"]),
    ],
)
def test_an_organisation_needs_attention_for_each_of_its_reasons_most_pressing_first(
    world: World,
    *,
    online: bool | None,
    waiting: int,
    dead: int,
    keys_until: int | None,
    reasons: list[str],
) -> None:
    presence = {} if online is None else {("govnet", "jl.jl"): (online, NOW - 9_000)}
    given: dict[str, Any] = {
        "presence": presence,
        "pending": [job(n + 1, "jl.jl") for n in range(waiting)],
        "dead": DeadLetters(dead, 0, (), by_org={"jl.jl": dead} if dead else {}),
        "expiring": {} if keys_until is None else {"jl.jl": keys_until},
    }

    row = nodes(world.directory, **given)["jl.jl"]
    listed = {o["id"]: o for o in snapshot(world.directory, **given)["attention"]["orgs"]}

    assert row["attention"] == reasons
    assert ("jl.jl" in listed) is bool(reasons)


def test_a_lost_broker_makes_presence_unknown_a_reason_of_its_own(world: World) -> None:
    book = PresenceBook(lambda: NOW)
    book.set("govnet", "jl.jl", online=True)
    book.lost(["govnet"])

    rows = nodes(world.directory, book=book, pending=[job(1, "jl.jl")])
    summary = snapshot(world.directory, book=book, pending=[job(1, "jl.jl")])

    assert rows["jl.jl"]["attention"] == ["unknown_waiting"]
    assert rows["jl.cc"]["attention"] == ["unknown"]
    assert summary["attention"]["orgs"][0]["id"] == "jl.jl", "something waits for it"
    on_govnet = sum("govnet" in o.channels for o in world.directory.orgs)
    assert summary["attention"]["by_reason"]["unknown"] == on_govnet - 1  # all but jl.jl


def test_organisations_listed_before_their_keys_came_are_counted_and_named(
    world: World,
) -> None:
    orgs = tuple(
        o.model_copy(update={"sign_keys": (), "enc_keys": ()}) if o.id == "jl.yb.tumen" else o
        for o in world.directory.orgs
    )
    directory = Directory.model_construct(**{**dict(world.directory), "orgs": orgs})

    summary = snapshot(directory)

    assert summary["spokes"]["awaiting_keys"] == 1
    govnet = next(c for c in summary["channels"] if c["id"] == "govnet")
    assert govnet["awaiting_keys"] == 1
    assert [o["id"] for o in summary["attention"]["orgs"]] == ["jl.yb.tumen"]
    assert summary["attention"]["orgs"][0]["awaiting_keys"] is True
