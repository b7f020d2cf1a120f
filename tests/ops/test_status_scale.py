"""The status page and /metrics with a national directory (issue 14), without a server.

Directories of 1,000 and 10,000 organisations are built in-process (tests/national.py).
The summary the page polls must not grow with the number of healthy organisations, the
tree's pages must give every organisation exactly once, an answer that only the clock
changed keeps its ETag (the page gets 304), and the series per organisation in /metrics
follow ``[metrics] per_organisation``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from hubd.config import HubConfig, load_config
from hubd.engine.presencebook import PresenceBook
from hubd.web.metrics import PER_ORG_AUTO, HubMetrics, PerOrganisation
from hubd.web.server import Request
from hubd.web.statuspage import StatusPage
from hubd.web.statustree import PAGE_MAX, OrgTree, org_tree
from hubd.web.statusview import ATTENTION_SHOWN, DeadLetters, etag
from schemas.clock import DAY_MS
from schemas.directory import Directory
from schemas.errors import ConfigError
from tests.national import Clock, PageDispatcher, PageHub, national_directory
from tests.ops.test_status_snapshot import facts, job, snapshot
from tests.world import NOW, REPO, World

# ---------------------------------------------------------------------------- helpers


def all_online(directory: Directory, *, but: Iterable[str] = ()) -> dict[Any, tuple[bool, int]]:
    """Presence with every spoke online since a minute ago, those in ``but`` offline."""
    down = set(but)
    return {
        (channel, org.id): (org.id not in down, NOW - 60_000)
        for org in directory.orgs
        for channel in org.channels
    }


def troubled(directory: Directory) -> dict[str, Any]:
    """The same few problems in any directory built by national_directory: three
    organisations offline with deliveries waiting, two never seen with deliveries waiting,
    one with dead letters."""
    offline = ["jl.cc.x000", "jl.jl.x000", "jl.sp.x000"]
    unseen = ["jl.ly.x000", "jl.th.x000"]
    presence = all_online(directory, but=offline)
    for org in unseen:
        del presence[("govnet", org)]
    pending = [job(n + 1, org) for n, org in enumerate(offline + unseen) for _ in range(n + 1)]
    dead = DeadLetters(2, 0, (), by_org={"jl.bs.x000": 2}, by_channel={"govnet": 2})
    return {"presence": presence, "pending": pending, "dead": dead}


# ---------------------------------------------------------------------------- the summary


def test_the_summary_for_ten_thousand_healthy_organisations_is_the_one_for_a_thousand(
    world: World,
) -> None:
    small = national_directory(world.directory, 1_000)
    big = national_directory(world.directory, 10_000)

    one = json.dumps(snapshot(small, **troubled(small)), ensure_ascii=False)
    ten = json.dumps(snapshot(big, **troubled(big)), ensure_ascii=False)

    # The same text but for the counts: nothing in it is per healthy organisation.
    assert re.sub(r"\d+", "N", ten) == re.sub(r"\d+", "N", one)
    assert len(ten.encode()) <= len(one.encode()) + 32  # a digit more in a few counts
    listed = [o["id"] for o in json.loads(ten)["attention"]["orgs"]]
    assert listed == [
        "jl.sp.x000",  # offline, three waiting
        "jl.jl.x000",
        "jl.cc.x000",
        "jl.th.x000",  # never seen, five waiting
        "jl.ly.x000",
        "jl.bs.x000",  # dead letters
    ]


def test_the_attention_list_shows_the_worst_hundred_and_counts_the_rest(world: World) -> None:
    big = national_directory(world.directory, 10_000)
    quiet = [o.id for o in big.orgs if o.id.endswith(".t001")][:150]  # offline, nothing waiting
    given = troubled(big)
    given["presence"] |= {("govnet", org): (False, NOW - 5_000) for org in quiet}

    summary = snapshot(big, **given, expiring={"jl.yb.x000": NOW + 3 * DAY_MS})
    attention = summary["attention"]

    assert len(attention["orgs"]) == ATTENTION_SHOWN
    assert attention["total"] == 6 + 1 + 150
    assert attention["more"] == attention["total"] - ATTENTION_SHOWN
    assert attention["by_reason"]["offline_waiting"] == 3
    assert attention["by_reason"]["unseen_waiting"] == 2
    assert attention["by_reason"]["dead_letters"] == 1
    assert attention["by_reason"]["keys_expiring"] == 1
    assert attention["by_reason"]["offline"] == 150
    shown = [o["attention"][0] for o in attention["orgs"]]
    assert shown[:7] == ["offline_waiting"] * 3 + ["unseen_waiting"] * 2 + [
        "dead_letters",
        "keys_expiring",
    ]
    assert set(shown[7:]) == {"offline"}
    assert attention["orgs"][6]["keys_until"] == NOW + 3 * DAY_MS
    assert summary["spokes"]["offline"] == 153
    govnet = next(c for c in summary["channels"] if c["id"] == "govnet")
    assert govnet["provisioned"] == sum("govnet" in o.channels for o in big.orgs)
    assert (govnet["offline"], govnet["unseen"], govnet["dead"]) == (153, 2, 2)
    assert govnet["online"] == govnet["provisioned"] - 155


# ---------------------------------------------------------------------------- the tree


def test_paging_the_tree_gives_every_organisation_exactly_once_in_tree_order(
    world: World,
) -> None:
    big = national_directory(world.directory, 10_000)
    known, tree = facts(big, presence=all_online(big)), OrgTree(big)
    seen: list[str] = []
    sizes: list[int] = []

    def level(under: str | None) -> None:
        offset: int | None = 0
        while offset is not None:
            page = tree.page(known, under, offset, 37)
            sizes.append(len(page["orgs"]))
            for row in page["orgs"]:
                seen.append(row["id"])
                if row["children"]:
                    level(row["id"])
            offset = page["next_offset"]

    level(None)

    assert len(seen) == len(big.orgs) == len(set(seen))
    assert seen == [org.id for root in org_tree(big) for org in root.walk()]
    assert max(sizes) == 37
    assert tree.page(known, "jl.cc", 10_000, 37)["orgs"] == []
    below_cc = tree.page(known, "jl.cc", 0, PAGE_MAX)
    assert below_cc["total"] == 3 + 100  # its three counties and the hundred added
    assert below_cc["next_offset"] is None


def test_an_answer_that_only_the_clock_changed_keeps_its_etag(world: World) -> None:
    directory = world.directory
    given: dict[str, Any] = {"presence": all_online(directory), "pending": [job(1, "jl.cc")]}

    now = snapshot(directory, **given)
    later = snapshot(directory, **given, at=NOW + 7_000)
    moved = snapshot(directory, **{**given, "presence": all_online(directory, but=["jl.jl"])})
    tree = OrgTree(directory)
    page = tree.page(facts(directory, **given), "jl.gov", 0, 10)
    page_later = tree.page(facts(directory, **given, at=NOW + 7_000), "jl.gov", 0, 10)

    assert later["at"] != now["at"]
    assert later["pending"]["oldest"]["age_ms"] != now["pending"]["oldest"]["age_ms"]
    assert etag(later) == etag(now)
    assert etag(moved) != etag(now)
    assert etag(page_later) == etag(page)
    assert etag(now).startswith('W/"')


# ---------------------------------------------------------------------------- the page


def running(directory: Directory, clock: Clock, *, offline: Iterable[str] = ()) -> PageHub:
    book = PresenceBook(clock)
    down = set(offline)
    for org in directory.orgs:
        for channel in org.channels:
            book.set(channel, org.id, online=org.id not in down)
    hub = PageHub(directory, PageDispatcher(book, []))
    hub.metrics = HubMetrics(hub)
    return hub


def get(path: str, query: str = "", tag: str | None = None) -> Request:
    return Request("GET", path, "127.0.0.1:9464", query, tag)


async def test_the_summary_is_304_without_a_body_until_something_changes(world: World) -> None:
    clock = Clock()
    hub = running(world.directory, clock)
    page = StatusPage(hub, clock=clock)

    first = await page.answer(get("/status.json"))
    tag = dict(first.headers)["ETag"]
    clock.now += 2_000  # the page's next refresh: a new build, nothing else changed
    same = await page.answer(get("/status.json", tag=tag))
    hub.dispatcher.spokes.set("govnet", "jl.cc", online=False)
    clock.now += 2_000
    changed = await page.answer(get("/status.json", tag=tag))

    assert first.status == 200
    assert (same.status, same.body, dict(same.headers)["ETag"]) == (304, b"", tag)
    assert changed.status == 200
    assert dict(changed.headers)["ETag"] != tag
    assert json.loads(changed.body)["spokes"]["offline"] == 1


async def test_a_tree_page_is_one_level_below_the_organisation_asked_for(world: World) -> None:
    clock = Clock()
    page = StatusPage(running(world.directory, clock, offline=["jl.cc"]), clock=clock)

    top = await page.answer(get("/status/orgs.json"))
    below = await page.answer(get("/status/orgs.json", "under=jl.gov&offset=2&limit=3"))
    again = await page.answer(
        get("/status/orgs.json", "under=jl.gov&offset=2&limit=3", dict(below.headers)["ETag"])
    )

    assert [o["id"] for o in json.loads(top.body)["orgs"]] == [
        "cn.gov",
        "jl.congress",
        "jl.cc.congress",
    ]
    rows = json.loads(below.body)
    assert [o["id"] for o in rows["orgs"]] == ["jl.sp", "jl.ly", "jl.th"]
    assert (rows["under"], rows["offset"], rows["limit"], rows["next_offset"]) == (
        "jl.gov",
        2,
        3,
        5,
    )
    cc = json.loads((await page.answer(get("/status/orgs.json", "under=jl.gov&limit=1"))).body)
    assert cc["orgs"][0]["id"] == "jl.cc"
    assert cc["orgs"][0]["state"] == "offline"
    assert cc["orgs"][0]["children"] == 3
    assert again.status == 304


@pytest.mark.parametrize(
    ("query", "status", "says"),
    [
        ("limit=0", 400, "limit must be a whole number from 1 to 500"),
        (f"limit={PAGE_MAX + 1}", 400, "limit must be a whole number from 1 to 500"),
        ("offset=-1", 400, "offset must be a whole number"),
        ("offset=x", 400, "offset must be a whole number"),
        ("offset=" + "9" * 5000, 400, "offset must be a whole number"),  # int() would raise
        ("under=jl.cc&depth=9", 400, "unknown parameter 'depth'"),
        ("under=zz.nowhere", 404, "'zz.nowhere' is not in directory v"),
        ("under", 400, "each as name=value"),
        ("&".join(["limit=1"] * 9), 400, "at most under, offset and limit"),
    ],
)
async def test_a_tree_query_that_cannot_be_answered_says_what_to_ask(
    world: World, query: str, status: int, says: str
) -> None:
    clock = Clock()
    page = StatusPage(running(world.directory, clock), clock=clock)

    answer = await page.answer(get("/status/orgs.json", query))

    assert answer.status == status
    assert says in answer.body.decode()


async def test_keys_ending_within_the_warning_days_bring_organisations_to_attention(
    world: World,
) -> None:
    ending = world.rebuild(version=2, not_after=NOW + 2 * DAY_MS)
    clock = Clock()
    page = StatusPage(running(ending, clock), clock=clock)

    soon = json.loads((await page.answer(get("/status.json"))).body)
    clock.now = NOW + 3 * DAY_MS
    gone = json.loads((await page.answer(get("/status.json"))).body)

    assert soon["attention"]["by_reason"]["keys_expiring"] == len(ending.orgs)
    assert soon["attention"]["orgs"][0]["keys_until"] == NOW + 2 * DAY_MS
    assert gone["attention"]["by_reason"]["keys_expired"] == len(ending.orgs)
    assert gone["attention"]["by_reason"]["keys_expiring"] == 0


# ---------------------------------------------------------------------------- /metrics


def scrape(directory: Directory, setting: PerOrganisation, **kw: Any) -> dict[str, list[Any]]:
    clock = Clock()
    hub = running(directory, clock, **kw)
    metrics = HubMetrics(hub, per_organisation=setting)
    return {
        family.name: family.samples
        for family in text_string_to_metric_families(metrics.exposition().decode())
    }


@pytest.mark.parametrize(
    ("setting", "orgs", "each"),
    [
        ("auto", 28, True),
        ("auto", PER_ORG_AUTO - 1, True),
        ("auto", PER_ORG_AUTO, False),
        ("auto", 10_000, False),
        (True, 10_000, True),
        (False, 28, False),
    ],
)
def test_series_per_organisation_follow_the_setting_and_the_aggregates_are_always_there(
    world: World, setting: PerOrganisation, orgs: int, each: bool
) -> None:
    directory = national_directory(world.directory, orgs)
    provisioned = sum(len(o.channels) for o in directory.orgs)

    families = scrape(directory, setting, offline=["jl.cc"])

    if each:
        assert len(families["govxchg_spoke_up"]) == provisioned  # none is unknown
        assert len(families["govxchg_spoke_presence_known"]) == provisioned
    else:
        assert "govxchg_spoke_up" not in families
        assert "govxchg_spoke_presence_known" not in families
    spokes = families["govxchg_spokes"]
    assert len(spokes) == 4 * len(directory.channels)  # every state of every channel
    assert sum(s.value for s in spokes) == provisioned
    by = {(s.labels["channel"], s.labels["state"]): s.value for s in spokes}
    assert by[("govnet", "offline")] == 1
    assert by[("govnet", "unknown")] == 0


def test_organisations_offline_with_deliveries_waiting_are_counted_per_channel(
    world: World,
) -> None:
    directory = national_directory(world.directory, 10_000)
    clock = Clock()
    hub = running(directory, clock, offline=["jl.cc", "jl.jl", "jl.sp"])
    hub.dispatcher.jobs += [job(1, "jl.cc"), job(2, "jl.cc"), job(3, "jl.jl"), job(4, "jl.gov")]
    metrics = HubMetrics(hub, per_organisation="auto")

    families = {
        f.name: f.samples for f in text_string_to_metric_families(metrics.exposition().decode())
    }

    waiting = {s.labels["channel"]: s.value for s in families["govxchg_spokes_offline_waiting"]}
    assert waiting == {"internet": 0, "govnet": 2, "classified": 0, "core": 0}
    assert "govxchg_spoke_up" not in families


def test_per_organisation_is_auto_unless_set_to_true_or_false(tmp_path: Path) -> None:
    bad = tmp_path / "hub.toml"
    bad.write_text('[metrics]\nper_organisation = "sometimes"\n')
    on = tmp_path / "on.toml"
    on.write_text("[metrics]\nper_organisation = true\n")

    assert HubConfig().metrics.per_organisation == "auto"
    assert load_config(on).metrics.per_organisation is True
    assert load_config(REPO / "config" / "hub.toml").metrics.per_organisation == "auto"
    with pytest.raises(ConfigError, match=r"metrics\.per_organisation"):
        load_config(bad)
