"""The topology's neighbour hubs (``[[hubs]]``): a member of this hub or its upstream, and
every mistake an operator can make writing one, said at its key."""

from __future__ import annotations

import pytest

from schemas.errors import ConfigError
from schemas.topology import Topology, parse_topology
from tests.schemas.test_topology import BASE, SOURCE, edit

MEMBER = """
[[hubs]]
id = "yb.hub"
name_zh = "延边州交换中心"
name_en = "Yanbian hub"
role = "member"
prefixes = ["t.yb"]
channels = ["govnet"]
key = "federation/yb.hub.pub.json"
"""

UPSTREAM = """
[[hubs]]
id = "cn.hub"
name_zh = "国家交换中心"
name_en = "National hub"
role = "upstream"
channels = ["govnet", "classified"]
key = "federation/cn.hub.pub.json"
directory = "federation/cn.hub.directory.bin"
"""


def problems(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_topology(text, source=SOURCE)
    return str(info.value)


def test_a_topology_with_a_member_and_an_upstream_is_valid() -> None:
    topology = parse_topology(BASE + MEMBER + UPSTREAM, source=SOURCE)

    member, upstream = topology.hubs
    assert (member.id, member.role, member.prefixes, member.directory) == (
        "yb.hub",
        "member",
        ("t.yb",),
        None,
    )
    assert (upstream.id, upstream.role, upstream.prefixes) == ("cn.hub", "upstream", ())
    assert upstream.key == "federation/cn.hub.pub.json"
    assert topology.upstream == upstream
    assert topology.members() == (member,)


def test_a_topology_without_hubs_has_none() -> None:
    topology: Topology = parse_topology(BASE, source=SOURCE)

    assert topology.hubs == ()
    assert topology.upstream is None


def test_with_an_upstream_an_own_parent_may_come_from_its_directory() -> None:
    text = edit('id = "t.gov"', 'id = "t.gov"\nparent = "cn.gov"') + UPSTREAM

    topology = parse_topology(text, source=SOURCE)

    assert topology.org("t.gov") is not None


def test_without_an_upstream_an_unknown_parent_is_still_refused() -> None:
    text = edit('id = "t.gov"', 'id = "t.gov"\nparent = "cn.gov"') + MEMBER

    assert "orgs[0] (t.gov).parent: unknown parent 'cn.gov'" in problems(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            MEMBER + MEMBER,
            "hubs[1] (yb.hub).id: duplicate hub id 'yb.hub'",
        ),
        (
            MEMBER.replace('id = "yb.hub"', 'id = "t.hub"'),
            "hubs[0] (t.hub).id: this hub's own id ([hub] id)",
        ),
        (
            MEMBER.replace('id = "yb.hub"', 'id = "t.pa"'),
            "hubs[0] (t.pa).id: 't.pa' is also an organisation id",
        ),
        (
            UPSTREAM + UPSTREAM.replace("cn.hub", "xx.hub"),
            "hubs[1] (xx.hub).role: a second upstream",
        ),
        (
            UPSTREAM.replace('role = "upstream"', 'role = "upstream"\nprefixes = ["cn"]'),
            (
                "hubs[0] (cn.hub).prefixes: an upstream serves everyone this hub and its members "
                "do not: it claims no prefix"
            ),
        ),
        (
            UPSTREAM.replace('directory = "federation/cn.hub.directory.bin"\n', ""),
            "hubs[0] (cn.hub).directory: required for an upstream",
        ),
        (
            MEMBER.replace('prefixes = ["t.yb"]\n', ""),
            (
                "hubs[0] (yb.hub).prefixes: a member serves the ids under its prefixes: give at "
                "least one"
            ),
        ),
        (
            MEMBER.replace('channels = ["govnet"]', "channels = []"),
            "hubs[0] (yb.hub).channels: the link is on no channel",
        ),
        (
            MEMBER.replace('channels = ["govnet"]', 'channels = ["core"]'),
            "hubs[0] (yb.hub).channels: undefined channel 'core' (defined: govnet, classified)",
        ),
        (
            MEMBER.replace('prefixes = ["t.yb"]', 'prefixes = ["t.pa"]'),
            (
                "hubs[0] (yb.hub).prefixes: organisation 't.pa' of [[orgs]] lies within prefix "
                "'t.pa'"
            ),
        ),
        (
            MEMBER + MEMBER.replace("yb.hub", "yj.hub").replace('"t.yb"', '"t.yb.yj"'),
            "hubs[1] (yj.hub).prefixes: prefix 't.yb.yj' overlaps yb.hub's prefix 't.yb'",
        ),
        (
            MEMBER.replace('role = "member"', 'role = "remote"'),
            "hubs[0] (yb.hub).role: Input should be 'member' or 'upstream'",
        ),
        (
            MEMBER.replace('key = "federation/yb.hub.pub.json"\n', ""),
            "hubs[0] (yb.hub).key: required key is missing",
        ),
        (
            MEMBER.replace('id = "yb.hub"', 'id = "YB/hub"'),
            "hubs[0] (YB/hub).id: hub id 'YB/hub' contains '/'",
        ),
        (
            MEMBER.replace('role = "member"', 'role = "member"\nvia = "cn.hub"'),
            "hubs[0] (yb.hub).via: unknown key; allowed keys: id, name_zh, name_en, role",
        ),
    ],
)
def test_a_mistake_in_a_hub_entry_is_reported_at_its_key(text: str, expected: str) -> None:
    assert expected in problems(BASE + text)


def test_hubs_that_are_not_an_array_of_tables_are_reported() -> None:
    assert "hubs: must be an array of tables ([[hubs]])" in problems('hubs = "cn.hub"\n' + BASE)


def test_a_member_overlapping_another_is_reported_once_at_the_later_entry() -> None:
    text = MEMBER + MEMBER.replace("yb.hub", "yj.hub").replace('"t.yb"', '"t.yb.yj"')

    assert problems(BASE + text).count("overlaps") == 1
