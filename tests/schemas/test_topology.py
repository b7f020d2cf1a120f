"""The topology file: the real Jilin one, and every class of mistake an operator can make."""

from __future__ import annotations

import pytest

from schemas.clock import DAY_MS
from schemas.directory import KeyEntry, OrgLevel
from schemas.errors import ConfigError
from schemas.keys import PublicKeys
from schemas.labels import Classification
from schemas.topology import DirectoryPlan, Topology, build_directory, parse_topology
from tests.world import NOW, TOPOLOGY_PATH, World

SOURCE = "conf/bad-topology.toml"

# A minimal valid topology; the tests below damage it one edit at a time.
BASE = """
[hub]
id = "t.hub"

[[channels]]
id = "govnet"
name = "政务专网"
ceiling = "INTERNAL"

[[channels]]
id = "classified"
name = "涉密通道"
ceiling = "机密"

[[orgs]]
id = "t.gov"
name_zh = "省政府办公厅"
name_en = "Provincial office"
level = "province"
clearance = "SECRET"
channels = ["govnet", "classified"]

[[orgs]]
id = "t.pa"
name_zh = "甲市"
name_en = "City A"
level = "prefecture"
parent = "t.gov"
code = "990100"
clearance = "内部"
channels = ["govnet"]

[[orgs]]
id = "t.pa.x"
name_zh = "甲市X县"
name_en = "County X"
level = "county"
parent = "t.pa"
clearance = "INTERNAL"
channels = ["govnet"]

[[orgs]]
id = "t.pa.y"
name_zh = "甲市Y县"
name_en = "County Y"
level = "county"
parent = "t.pa"
clearance = "INTERNAL"
channels = ["govnet"]

[[groups]]
id = "special"
name_zh = "专项"
name_en = "special"
members = ["t.pa", "t.pa.x"]
"""

ORG_X = 'id = "t.pa.x"'


def edit(old: str, new: str, text: str = BASE, count: int = 1) -> str:
    assert old in text, f"{old!r} is not in the base topology"
    return text.replace(old, new, count)


def problems(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_topology(text, source=SOURCE)
    return info.value


def assert_reported(error: ConfigError, path: str, *words: str) -> None:
    """One line of the error names the file, the key path and the problem's words."""
    lines = str(error).splitlines()
    hits = [line for line in lines if line.startswith(f"{SOURCE}: {path}: ")]
    assert hits, f"no line for {path!r} in:\n{error}"
    assert any(all(w in line for w in words) for line in hits), f"{words} not in:\n{error}"


@pytest.fixture(scope="module")
def jilin() -> Topology:
    return parse_topology(TOPOLOGY_PATH.read_text(encoding="utf-8"), source=str(TOPOLOGY_PATH))


# ---------------------------------------------------------------- the Jilin topology


def test_base_topology_is_valid() -> None:
    topology = parse_topology(BASE, source=SOURCE)

    assert [o.id for o in topology.orgs] == ["t.gov", "t.pa", "t.pa.x", "t.pa.y"]


def test_jilin_has_four_channels_with_their_ceilings(jilin: Topology) -> None:
    assert [(c.id, c.ceiling) for c in jilin.channels] == [
        ("internet", Classification.PUBLIC),
        ("govnet", Classification.INTERNAL),
        ("classified", Classification.SECRET),
        ("core", Classification.TOP_SECRET),
    ]


def test_jilin_core_channel_is_provisioned_for_nobody(jilin: Topology) -> None:
    assert [o.id for o in jilin.orgs if "core" in o.channels] == []


def test_jilin_state_council_is_national_on_govnet_and_classified(jilin: Topology) -> None:
    cn = jilin.org("cn.gov")

    assert cn is not None
    assert cn.level is OrgLevel.NATIONAL
    assert cn.parent is None
    assert set(cn.channels) == {"govnet", "classified"}
    assert cn.clearance is Classification.SECRET


def test_jilin_provincial_office_is_on_internet_govnet_and_classified(jilin: Topology) -> None:
    jl = jilin.org("jl.gov")

    assert jl is not None
    assert jl.level is OrgLevel.PROVINCE
    assert jl.parent == "cn.gov"
    assert set(jl.channels) == {"internet", "govnet", "classified"}
    assert jl.clearance is Classification.SECRET


def test_jilin_has_all_nine_prefectures_with_their_codes(jilin: Topology) -> None:
    found = [o for o in jilin.orgs if o.level is OrgLevel.PREFECTURE]
    prefectures = {o.id: o.code for o in found}

    assert prefectures == {
        "jl.cc": "220100",
        "jl.jl": "220200",
        "jl.sp": "220300",
        "jl.ly": "220400",
        "jl.th": "220500",
        "jl.bs": "220600",
        "jl.sy": "220700",
        "jl.bc": "220800",
        "jl.yb": "222400",
    }
    assert {o.parent for o in found} == {"jl.gov"}


@pytest.mark.parametrize(
    ("name", "code", "parent"),
    [
        ("农安县", "220122", "jl.cc"),
        ("榆树市", "220182", "jl.cc"),
        ("德惠市", "220183", "jl.cc"),
        ("舒兰市", "220283", "jl.jl"),
        ("磐石市", "220284", "jl.jl"),
        ("延吉市", "222401", "jl.yb"),
        ("图们市", "222402", "jl.yb"),
    ],
)
def test_jilin_county_sits_under_its_prefecture(
    jilin: Topology, name: str, code: str, parent: str
) -> None:
    (county,) = [o for o in jilin.orgs if o.code == code]

    assert county.level is OrgLevel.COUNTY
    assert county.name_zh.startswith(name)
    assert county.parent == parent


def test_jilin_counties_sit_under_at_least_three_prefectures(jilin: Topology) -> None:
    parents = {o.parent for o in jilin.orgs if o.level is OrgLevel.COUNTY}

    assert len(parents) >= 3


def test_jilin_has_the_five_provincial_departments(jilin: Topology) -> None:
    departments = [o for o in jilin.orgs if o.level is OrgLevel.DEPARTMENT]

    for word in ("卫生厅", "财政厅", "公安厅", "人事厅", "信访局"):
        assert any(word in o.name_zh for o in departments), word
    assert {o.parent for o in departments} == {"jl.gov"}


def test_jilin_congresses_stand_outside_the_tree_linked_to_their_governments(
    jilin: Topology,
) -> None:
    congresses = [o for o in jilin.orgs if o.level is OrgLevel.CONGRESS]

    assert {o.id: o.congress_of for o in congresses} == {
        "jl.congress": "jl.gov",
        "jl.cc.congress": "jl.cc",
    }
    assert all("人民代表大会常务委员会" in o.name_zh for o in congresses)
    assert {o.parent for o in congresses} == {None}
    assert not [o.id for o in jilin.orgs if o.parent in {c.id for c in congresses}]
    assert [o.id for o in jilin.orgs if o.congress_of is not None] == [c.id for c in congresses]


def test_jilin_everyone_below_the_province_is_govnet_only_and_internal(jilin: Topology) -> None:
    others = [o for o in jilin.orgs if o.id not in {"cn.gov", "jl.gov"}]

    assert len(others) >= 9 + 7 + 5 + 2
    assert {(o.channels, o.clearance) for o in others} == {(("govnet",), Classification.INTERNAL)}


# ---------------------------------------------------------------- references


def test_unknown_parent_is_reported() -> None:
    error = problems(edit('parent = "t.pa"', 'parent = "t.pb"'))

    assert_reported(error, "orgs[2] (t.pa.x).parent", "unknown parent", "t.pb")


def test_two_node_parent_cycle_is_reported() -> None:
    text = edit('level = "province"', 'level = "province"\nparent = "t.pa"')

    error = problems(text)

    assert_reported(error, "orgs[0] (t.gov).parent", "cycle", "t.gov -> t.pa -> t.gov")
    assert_reported(error, "orgs[1] (t.pa).parent", "cycle")


def test_three_node_parent_cycle_is_reported() -> None:
    text = edit('level = "province"', 'level = "province"\nparent = "t.pa.x"')

    error = problems(text)

    assert_reported(error, "orgs[0] (t.gov).parent", "cycle", "t.gov -> t.pa.x -> t.pa -> t.gov")
    assert_reported(error, "orgs[1] (t.pa).parent", "cycle")
    assert_reported(error, "orgs[2] (t.pa.x).parent", "cycle")


def test_org_that_is_its_own_parent_is_a_cycle() -> None:
    error = problems(edit('parent = "t.pa"', 'parent = "t.pa.x"'))

    assert_reported(error, "orgs[2] (t.pa.x).parent", "cycle")


def test_duplicate_org_id_is_reported() -> None:
    error = problems(edit('id = "t.pa.y"', ORG_X))

    assert_reported(error, "orgs[3] (t.pa.x).id", "duplicate", "t.pa.x")


def test_duplicate_channel_id_is_reported() -> None:
    text = edit('id = "classified"', 'id = "govnet"').replace('"govnet", "classified"', '"govnet"')

    error = problems(text)

    assert_reported(error, "channels[1] (govnet).id", "duplicate", "govnet")


def test_undefined_channel_is_reported_with_the_defined_ones() -> None:
    text = edit(
        'channels = ["govnet"]\n\n[[orgs]]\nid = "t.pa.y"',
        'channels = ["satnet"]\n\n[[orgs]]\nid = "t.pa.y"',
    )

    error = problems(text)

    assert_reported(error, "orgs[2] (t.pa.x).channels", "undefined channel", "satnet", "govnet")


def test_clearance_above_every_channel_ceiling_is_reported() -> None:
    text = edit('code = "990100"\nclearance = "内部"', 'code = "990100"\nclearance = "绝密"')

    error = problems(text)

    assert_reported(error, "orgs[1] (t.pa).clearance", "TOP_SECRET", "govnet", "ceiling")


def test_clearance_equal_to_the_highest_channel_ceiling_is_accepted() -> None:
    text = edit('clearance = "SECRET"', 'clearance = "机密"')

    assert parse_topology(text, source=SOURCE).orgs[0].clearance is Classification.SECRET


def test_org_on_no_channel_is_reported() -> None:
    text = edit(
        'code = "990100"\nclearance = "内部"\nchannels = ["govnet"]',
        'code = "990100"\nclearance = "内部"\nchannels = []',
    )

    error = problems(text)

    assert_reported(error, "orgs[1] (t.pa).channels", "no channel")


def test_hub_id_equal_to_an_org_id_is_reported() -> None:
    error = problems(edit('id = "t.hub"', 'id = "t.gov"'))

    assert_reported(error, "orgs[0] (t.gov).id", "hub")


def test_group_member_unknown_is_reported() -> None:
    error = problems(edit('members = ["t.pa", "t.pa.x"]', 'members = ["t.pa", "t.pz"]'))

    assert_reported(error, "groups[0] (special).members", "unknown organisation", "t.pz")


def test_directive_target_unknown_is_reported() -> None:
    text = edit(
        'channels = ["govnet", "classified"]',
        'channels = ["govnet", "classified"]\ndirective_to = ["t.nobody"]',
    )

    error = problems(text)

    assert_reported(error, "orgs[0] (t.gov).directive_to", "t.nobody")


# ---------------------------------------------------------------- congresses

CONGRESS = """
[[orgs]]
id = "t.congress"
name_zh = "省人大常委会"
name_en = "Provincial congress standing committee"
level = "congress"
congress_of = "t.gov"
clearance = "INTERNAL"
channels = ["govnet"]
"""
WITH_CONGRESS = BASE + CONGRESS


def test_congress_linked_to_the_government_of_its_level_is_valid() -> None:
    topology = parse_topology(WITH_CONGRESS, source=SOURCE)

    congress = topology.org("t.congress")
    assert congress is not None
    assert congress.level is OrgLevel.CONGRESS
    assert (congress.parent, congress.congress_of) == (None, "t.gov")


def test_congress_of_a_county_government_is_valid() -> None:
    parse_topology(
        edit('congress_of = "t.gov"', 'congress_of = "t.pa.x"', WITH_CONGRESS), source=SOURCE
    )


@pytest.mark.parametrize(
    ("old", "new", "path", "words"),
    [
        pytest.param(
            'congress_of = "t.gov"\n',
            "",
            "orgs[4] (t.congress).congress_of",
            ("names the people's government of its level", 'congress_of = "jl.gov"'),
            id="congress_without_its_government_reported",
        ),
        pytest.param(
            'congress_of = "t.gov"',
            'congress_of = "t.gov"\nparent = "t.gov"',
            "orgs[4] (t.congress).parent",
            ("no government's reporting line", "leave parent out"),
            id="congress_under_a_government_reported",
        ),
        pytest.param(
            'congress_of = "t.gov"',
            'congress_of = "t.nobody"',
            "orgs[4] (t.congress).congress_of",
            ("unknown organisation", "'t.nobody'"),
            id="congress_of_unknown_reported",
        ),
        pytest.param(
            'congress_of = "t.gov"',
            'congress_of = "t.congress"',
            "orgs[4] (t.congress).congress_of",
            ("'t.congress' is a congress", "not a people's government"),
            id="congress_of_a_congress_reported",
        ),
        pytest.param(
            'code = "990100"',
            'code = "990100"\ncongress_of = "t.gov"',
            "orgs[1] (t.pa).congress_of",
            ("only a congress", 'level = "congress"'),
            id="congress_of_on_a_government_reported",
        ),
        pytest.param(
            'id = "t.pa.y"\nname_zh = "甲市Y县"\nname_en = "County Y"\nlevel = "county"\n'
            'parent = "t.pa"',
            'id = "t.pa.y"\nname_zh = "甲市Y县"\nname_en = "County Y"\nlevel = "county"\n'
            'parent = "t.congress"',
            "orgs[3] (t.pa.y).parent",
            ("'t.congress' is a congress", "no government's reporting line"),
            id="organisation_under_a_congress_reported",
        ),
    ],
)
def test_congress_mistakes_are_reported_at_their_key(
    old: str, new: str, path: str, words: tuple[str, ...]
) -> None:
    error = problems(edit(old, new, WITH_CONGRESS))

    assert_reported(error, path, *words)


# ---------------------------------------------------------------- ids, labels, keys, syntax

BAD_IDS = [
    ("t/pa", "'/'"),
    ("t+pa", "'+'"),
    ("t.#", "'#'"),
    ("T.pa", "capital"),
    ("t..pa", "'..'"),
    ("t.pä", "non-ASCII"),
]


@pytest.mark.parametrize(("bad", "word"), BAD_IDS)
def test_bad_org_id_is_reported(bad: str, word: str) -> None:
    error = problems(edit('id = "t.pa"', f'id = "{bad}"'))

    assert_reported(error, f"orgs[1] ({bad}).id", word)


@pytest.mark.parametrize(("bad", "word"), BAD_IDS)
def test_bad_parent_id_is_reported(bad: str, word: str) -> None:
    error = problems(edit('parent = "t.pa"', f'parent = "{bad}"'))

    assert_reported(error, "orgs[2] (t.pa.x).parent", word)


@pytest.mark.parametrize(("bad", "word"), BAD_IDS)
def test_bad_channel_id_is_reported(bad: str, word: str) -> None:
    error = problems(edit('id = "classified"', f'id = "{bad}"'))

    assert_reported(error, f"channels[1] ({bad}).id", word)


@pytest.mark.parametrize(("bad", "word"), BAD_IDS)
def test_bad_channel_reference_is_reported(bad: str, word: str) -> None:
    error = problems(edit('channels = ["govnet", "classified"]', f'channels = ["govnet", "{bad}"]'))

    assert_reported(error, "orgs[0] (t.gov).channels[1]", word)


def test_bad_hub_id_is_reported() -> None:
    error = problems(edit('id = "t.hub"', 'id = "t/hub"'))

    assert_reported(error, "hub.id", "'/'")


@pytest.mark.parametrize(
    ("where", "old", "new"),
    [
        ("orgs[0] (t.gov)", 'clearance = "SECRET"', 'clearance = "VERY_SECRET"'),
        ("orgs[1] (t.pa)", 'clearance = "内部"', 'clearance = "机要"'),
        ("channels[1] (classified)", 'ceiling = "机密"', 'ceiling = "TOPSECRET"'),
    ],
)
def test_bad_label_word_is_reported_with_the_choices(where: str, old: str, new: str) -> None:
    error = problems(edit(old, new))

    field = "ceiling" if "channels" in where else "clearance"
    assert_reported(
        error, f"{where}.{field}", "not a Classification", "INTERNAL 内部", "SECRET 机密"
    )


def test_bad_level_is_reported() -> None:
    error = problems(edit('level = "prefecture"', 'level = "city"'))

    assert_reported(error, "orgs[1] (t.pa).level", "prefecture", "county")


@pytest.mark.parametrize(
    ("old", "new", "path"),
    [
        ('name_en = "City A"', 'name_en = "City A"\ncolour = "red"', "orgs[1] (t.pa).colour"),
        (
            'ceiling = "机密"',
            'ceiling = "机密"\nbandwidth = 10',
            "channels[1] (classified).bandwidth",
        ),
        ('id = "t.hub"', 'id = "t.hub"\nport = 1883', "hub.port"),
        ("[hub]", "version = 2\n\n[hub]", "version"),
        (
            'members = ["t.pa", "t.pa.x"]',
            'members = ["t.pa", "t.pa.x"]\nowner = "t.gov"',
            "groups[0] (special).owner",
        ),
    ],
)
def test_unknown_key_is_reported(old: str, new: str, path: str) -> None:
    error = problems(edit(old, new))

    assert_reported(error, path)


def test_missing_required_key_is_reported() -> None:
    error = problems(edit('name_en = "City A"\n', ""))

    assert_reported(error, "orgs[1] (t.pa).name_en")


def test_invalid_toml_is_reported_with_the_file_name() -> None:
    error = problems(edit("[[orgs]]", "[[orgs]", count=1))

    assert str(error).startswith(f"{SOURCE}: ")
    assert "TOML" in str(error)


def test_several_reference_problems_are_all_reported() -> None:
    text = edit('parent = "t.pa"', 'parent = "t.pb"')
    text = edit(
        'code = "990100"\nclearance = "内部"\nchannels = ["govnet"]',
        'code = "990100"\nclearance = "内部"\nchannels = ["satnet"]',
        text,
    )
    text = edit('members = ["t.pa", "t.pa.x"]', 'members = ["t.pz"]', text)
    text = edit('id = "t.hub"', 'id = "t.gov"', text)

    error = problems(text)

    assert_reported(error, "orgs[2] (t.pa.x).parent", "t.pb")
    assert_reported(error, "orgs[1] (t.pa).channels", "satnet")
    assert_reported(error, "groups[0] (special).members", "t.pz")
    assert_reported(error, "orgs[0] (t.gov).id", "hub")
    assert len(error.problems) == 4


def test_several_schema_problems_are_all_reported() -> None:
    text = edit('id = "t.pa.y"', 'id = "t/pa/y"')
    text = edit('clearance = "SECRET"', 'clearance = "VERY_SECRET"', text)
    text = edit('name_en = "City A"', 'name_en = "City A"\ncolour = "red"', text)

    error = problems(text)

    assert_reported(error, "orgs[3] (t/pa/y).id", "'/'")
    assert_reported(error, "orgs[0] (t.gov).clearance", "not a Classification")
    assert_reported(error, "orgs[1] (t.pa).colour")
    assert len(error.problems) == 3


def test_schema_and_reference_problems_are_reported_together_at_their_file_positions() -> None:
    text = edit('level = "county"', 'level = "township"')  # t.pa.x becomes invalid
    text = edit('parent = "t.pa"\nclearance = "INTERNAL"\nchannels = ["govnet"]\n\n[[groups]]',
                'parent = "t.nowhere"\nclearance = "INTERNAL"\nchannels = ["govnet"]\n\n[[groups]]',
                text)  # fmt: skip

    error = problems(text)

    assert_reported(error, "orgs[2] (t.pa.x).level", "county")
    assert_reported(error, "orgs[3] (t.pa.y).parent", "unknown parent 't.nowhere'")
    # the invalid entry is not reported again as an unknown group member
    assert len(error.problems) == 2


def test_unknown_key_lists_the_allowed_keys() -> None:
    error = problems(edit('name_en = "City A"', 'name_en = "City A"\ncolour = "red"'))

    assert_reported(error, "orgs[1] (t.pa).colour", "unknown key", "allowed keys", "clearance")


def test_channel_and_hub_id_problems_name_their_kind() -> None:
    text = edit('id = "govnet"', 'id = "Govnet"', edit('id = "t.hub"', 'id = "t/hub"'))

    error = problems(text)

    assert_reported(error, "channels[0] (Govnet).id", "channel id 'Govnet'")
    assert_reported(error, "hub.id", "hub id 't/hub'")


# ---------------------------------------------------------------- build_directory


def test_build_directory_lists_orgs_without_keys_as_awaiting_them_still_in_their_groups(
    world: World,
) -> None:
    public = {
        o: [PublicKeys(o, k.signing.public, k.encryption.public, NOW, NOW + DAY_MS)]
        for o, k in world.keys.items()
        if o not in {"jl.cc.dehui", "jl.dept.finance"}
    }
    plan = DirectoryPlan(
        version=1,
        issued_at=NOW,
        expires_at=NOW + DAY_MS,
        hub_keys=(
            KeyEntry(
                kid=world.hub_key.kid,
                public=world.hub_key.public,
                not_before=NOW,
                not_after=NOW + DAY_MS,
            ),
        ),
    )

    directory = build_directory(world.topology, public, plan)

    assert directory.awaiting_keys() == ("jl.cc.dehui", "jl.dept.finance")
    dehui = directory.org("jl.cc.dehui")
    assert dehui is not None
    assert (dehui.sign_keys, dehui.enc_keys) == ((), ())
    assert dehui.parent == "jl.cc", "the tree stays whole"
    counties = directory.group("counties.jl.cc")
    assert counties is not None
    assert "jl.cc.dehui" in counties.members, "still a member: a group send names it left out"
    assert "jl.cc.nongan" in counties.members
    assert directory.expand(["@counties.jl.cc"]) == ("jl.cc.nongan", "jl.cc.yushu")
