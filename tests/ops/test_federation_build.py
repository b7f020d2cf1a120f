"""``hubctl directory build`` for hubs under hubs: a topology's ``[[hubs]]`` and the
organisations and hubs its build imports from the neighbours' signed directories
(hubd/provision/federation.py, docs/operations.md "Joining a province to the national
exchange").

Each hub operator has a folder of its own (tests/ops/fedsite.py); keys are made with the
project's commands and handed over as files, builds run as the operator types them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from runtime.clock import now_ms
from schemas import codec
from schemas.clock import DAY_MS
from schemas.directory import HubRole
from schemas.keys import PublicKeys
from tests.ops.fedsite import (
    BOTH,
    CHANNELS,
    GOVNET,
    Federation,
    HubSite,
    link,
    national,
    org,
    prefecture,
    province,
)
from tests.test_key_tools import Site, hubctl, ok


@pytest.fixture
def fed(tmp_path: Path) -> Federation:
    """The national hub and two provinces after the documented bootstrap: each knows the
    others' organisations."""
    made = Federation.make(tmp_path)
    made.bootstrap()
    return made


def refused(site: HubSite, *extra: str) -> str:
    """A build refused in one line on stderr, with nothing written."""
    before = site.out.read_bytes() if site.out.exists() else None
    register = site.imports.read_bytes() if site.imports.exists() else None
    result = site.try_build(*extra)
    assert result.exit_code == 2, result.output
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert (site.out.read_bytes() if site.out.exists() else None) == before
    assert (site.imports.read_bytes() if site.imports.exists() else None) == register
    return result.stderr


def sign_kid(site: HubSite, org_id: str) -> str:
    path = site.keys / f"{org_id}.pub.json"
    return PublicKeys.load(path.read_bytes(), source=str(path)).sign_kid


# ---------------------------------------------------------------- what each side lists


def test_the_national_hub_first_lists_its_members_by_their_keys_and_says_it_has_no_orgs_yet(
    tmp_path: Path,
) -> None:
    made = Federation.make(tmp_path)

    result = made.cn.build()

    d = made.cn.read()
    assert [o.id for o in d.orgs] == ["cn.gov"]
    assert [(h.id, h.role, h.prefixes) for h in d.hubs] == [
        ("jl.hub", HubRole.MEMBER, ("jl",)),
        ("ln.hub", HubRole.MEMBER, ("ln",)),
    ]
    assert [k.kid for k in d.hubs[0].keys] == [made.jl.pinned().kid]
    assert "no directory from jl.hub yet: its organisations are not listed" in result.stdout
    assert "no directory from ln.hub yet: its organisations are not listed" in result.stdout
    assert not made.cn.imports.exists()


def test_the_national_hub_lists_each_members_organisations_through_it_on_the_link_channels(
    fed: Federation,
) -> None:
    d = fed.cn.read()

    assert [(o.id, o.via) for o in d.orgs] == [
        ("cn.gov", None),
        ("jl.gov", "jl.hub"),
        ("jl.cc", "jl.hub"),
        ("ln.gov", "ln.hub"),
        ("ln.cc", "ln.hub"),
    ]
    jl_cc = d.org("jl.cc")
    assert jl_cc is not None
    assert jl_cc.channels == ("govnet", "classified")  # the link's, not its own govnet
    assert [k.kid for k in jl_cc.sign_keys] == [sign_kid(fed.jl, "jl.cc")]
    assert jl_cc.parent == "jl.gov"
    assert d.next_hop("jl.cc") == "jl.hub"
    jl = d.hub("jl.hub")
    assert jl is not None
    assert (jl.role, jl.channels, jl.via) == (HubRole.MEMBER, ("govnet", "classified"), None)
    assert [k.kid for k in jl.keys] == [fed.jl.pinned().kid]
    # the address groups are the national hub's own
    assert all(set(g.members) == {"cn.gov"} for g in d.groups)


def test_the_national_build_says_how_many_organisations_each_member_brought(
    tmp_path: Path,
) -> None:
    made = Federation.make(tmp_path)
    made.bootstrap()
    made.jl.send_directory_to(made.cn)

    result = made.cn.build()

    assert "imported 2 organisations from jl.hub (directory version 2)" in result.stdout
    assert "imported 2 organisations from ln.hub (directory version 1)" in result.stdout


def test_a_province_lists_the_national_organisations_and_the_other_province_through_its_upstream(
    fed: Federation,
) -> None:
    d = fed.jl.read()

    assert [(o.id, o.via) for o in d.orgs] == [
        ("jl.gov", None),
        ("jl.cc", None),
        ("cn.gov", "cn.hub"),
        ("ln.gov", "cn.hub"),
        ("ln.cc", "cn.hub"),
    ]
    assert [(h.id, h.role, h.prefixes, h.channels, h.via) for h in d.hubs] == [
        ("cn.hub", HubRole.UPSTREAM, (), ("govnet", "classified"), None),
        ("ln.hub", HubRole.REMOTE, ("ln",), (), "cn.hub"),
    ]
    upstream, remote = d.hubs
    assert [k.kid for k in upstream.keys] == [fed.cn.pinned().kid]
    assert [k.kid for k in remote.keys] == [fed.ln.pinned().kid]
    assert d.next_hop("ln.cc") == "cn.hub"
    assert d.upstream == upstream


def test_a_provinces_own_organisation_has_its_parent_from_the_national_directory(
    fed: Federation,
) -> None:
    d = fed.jl.read()

    assert d.ancestors("jl.cc") == ("jl.gov", "cn.gov")
    assert d.ancestors("ln.cc") == ("ln.gov", "cn.gov")


def test_a_members_own_members_are_remote_hubs_at_the_national_hub(tmp_path: Path) -> None:
    cn = HubSite.make(
        tmp_path / "cn", "cn.hub", national(members_directories=False, members=("jl",)), ("cn.gov",)
    )
    with_yb = link("yb.hub", "member", prefixes=("jl.yb",), channels=GOVNET, directory=False)
    jl = HubSite.make(
        tmp_path / "jl", "jl.hub", province("jl", "吉林省", extra=with_yb), ("jl.gov", "jl.cc")
    )
    yb = HubSite.make(tmp_path / "yb", "yb.hub", prefecture(), ("jl.yb", "jl.yb.yj"))
    jl.hand_key_to(cn)
    cn.hand_key_to(jl)
    yb.hand_key_to(jl)
    jl.hand_key_to(yb)
    cn.build()
    cn.send_directory_to(jl)
    jl.build()
    jl.send_directory_to(yb)
    yb.build()
    yb.send_directory_to(jl)
    jl.write(
        province(
            "jl", "吉林省", extra=link("yb.hub", "member", prefixes=("jl.yb",), channels=GOVNET)
        )
    )
    jl.build()
    jl.send_directory_to(cn)
    cn.write(national(members=("jl",)))

    cn.build()

    d = cn.read()
    assert [(o.id, o.via) for o in d.orgs] == [
        ("cn.gov", None),
        ("jl.gov", "jl.hub"),
        ("jl.cc", "jl.hub"),
        ("jl.yb", "jl.hub"),
        ("jl.yb.yj", "jl.hub"),
    ]
    assert [(h.id, h.role, h.prefixes, h.via) for h in d.hubs] == [
        ("jl.hub", HubRole.MEMBER, ("jl",), None),
        ("yb.hub", HubRole.REMOTE, ("jl.yb",), "jl.hub"),
    ]
    yb_hub = d.hub("yb.hub")
    assert yb_hub is not None
    assert [k.kid for k in yb_hub.keys] == [yb.pinned().kid]
    at_yb = yb.read()
    assert [(o.id, o.via) for o in at_yb.orgs][2:] == [
        ("jl.gov", "jl.hub"),
        ("jl.cc", "jl.hub"),
        ("cn.gov", "jl.hub"),
    ]


def test_a_topology_without_hubs_builds_as_before_without_hubs_via_or_a_register(
    tmp_path: Path,
) -> None:
    site = Site(tmp_path)

    result = ok(site.build())

    wire = codec.decode_map(
        codec.decode_map(site.out.read_bytes(), codec.DIRECTORY_FRAME_LIMITS)["dir"],
        codec.DIRECTORY_LIMITS,
    )
    assert "hubs" not in wire
    assert all("via" not in o for o in wire["orgs"])
    assert not (tmp_path / "imports.json").exists()
    assert "imported" not in result.stdout
    assert "capped" not in result.stdout


# ---------------------------------------------------------------- refused imports


def test_a_member_claiming_an_organisation_outside_its_prefix_refuses_the_build(
    fed: Federation,
) -> None:
    fed.cn.write(national(jl=("jl.cc",)))  # the national operator narrows Jilin's prefix

    stderr = refused(fed.cn)

    assert "a province cannot claim organisations outside its prefix" in stderr
    assert "lists jl.gov as its own, outside its prefixes jl.cc" in stderr
    assert "jl.hub's directory (" in stderr
    assert str(fed.cn.received_directory("jl.hub")) in stderr
    assert stderr.startswith("hubctl directory build: 未能导入 jl.hub 的目录：")


def test_a_members_own_member_outside_its_prefixes_refuses_the_build(fed: Federation) -> None:
    # Jilin takes a member hub for ids the national hub never gave it
    ok(hubctl("keys", "init", "--out", str(fed.jl.root / "xx")))
    shutil.copyfile(fed.jl.root / "xx" / "hub.pub.json", fed.jl.received_key("xx.hub"))
    stray = link("xx.hub", "member", prefixes=("xx",), directory=False)
    fed.jl.write(province("jl", "吉林省", extra=stray))
    fed.jl.build()
    fed.jl.send_directory_to(fed.cn)

    stderr = refused(fed.cn)

    assert "其下级枢纽 xx.hub 的前缀超出其前缀（jl）" in stderr
    assert "lists hub xx.hub under it with prefixes xx, outside its own (jl)" in stderr


def test_a_directory_of_another_hub_signed_with_the_members_key_refuses_the_build(
    fed: Federation,
) -> None:
    alone = province("jl", "吉林省").replace('id = "jl.hub"', 'id = "jlx.hub"', 1)
    fed.jl.write(alone.split("\n[[hubs]]")[0].replace('parent = "cn.gov"\n', ""))
    fed.jl.build()
    fed.jl.send_directory_to(fed.cn)

    stderr = refused(fed.cn)

    assert "未能导入 jl.hub 的目录：该目录属于 jlx.hub" in stderr
    assert "is the directory of jlx.hub, not of jl.hub" in stderr


def test_a_members_directory_with_a_bad_signature_refuses_the_build(fed: Federation) -> None:
    path = fed.cn.received_directory("jl.hub")
    outer = codec.decode_map(path.read_bytes(), codec.DIRECTORY_FRAME_LIMITS)
    sig = bytearray(outer["sig"])
    sig[0] ^= 0x01
    path.write_bytes(codec.encode({**outer, "sig": bytes(sig)}))

    stderr = refused(fed.cn)

    assert "未能导入 jl.hub 的目录：签名无法用其枢纽公钥验证" in stderr
    assert f"jl.hub's directory ({path})" in stderr
    assert "signature does not verify" in stderr
    assert "check that [[hubs]] key is that hub's hub.pub.json" in stderr


def test_a_directory_signed_by_another_hub_than_its_key_file_refuses_the_build(
    fed: Federation,
) -> None:
    shutil.copyfile(fed.ln.out, fed.cn.received_directory("jl.hub"))

    stderr = refused(fed.cn)

    assert "not by the pinned hub key" in stderr
    assert "jl.hub" in stderr


def test_a_file_that_is_no_signed_directory_refuses_the_build(fed: Federation) -> None:
    fed.cn.received_directory("jl.hub").write_bytes(b"not a directory")

    stderr = refused(fed.cn)

    assert "未能导入 jl.hub 的目录：无法解读该目录文件" in stderr
    assert "it is not a signed directory as 'hubctl directory build' writes it" in stderr


def test_a_hub_key_file_that_is_no_hub_key_refuses_the_build(fed: Federation) -> None:
    fed.cn.received_key("jl.hub").write_text("{}", encoding="utf-8")

    stderr = refused(fed.cn)

    assert "未能导入 jl.hub 的目录：其枢纽公钥文件无效" in stderr
    assert f"hub key file {fed.cn.received_key('jl.hub')}" in stderr
    assert "ask its operator for the hub.pub.json 'hubctl keys init' wrote there" in stderr


def test_an_expired_directory_of_a_member_refuses_the_build(tmp_path: Path) -> None:
    made = Federation.make(tmp_path)
    then = now_ms() - 40 * DAY_MS
    made.cn.build_at(then)
    for member in (made.jl, made.ln):
        made.cn.send_directory_to(member)
        member.build_at(then)  # valid 30 days: expired 10 days ago
        member.send_directory_to(made.cn)
    made.cn.write(national())

    stderr = refused(made.cn)

    assert "未能导入 jl.hub 的目录：目录已过期" in stderr
    assert "directory version 1 expired" in stderr
    assert "ask its operator for a fresh one" in stderr


def test_an_older_directory_than_the_one_imported_before_is_refused_as_a_rollback(
    fed: Federation,
) -> None:
    v1 = fed.cn.received_directory("jl.hub").read_bytes()
    fed.jl.send_directory_to(fed.cn)  # Jilin's version 2
    fed.cn.build()
    register = json.loads(fed.cn.imports.read_text(encoding="utf-8"))
    assert register["imported"]["jl.hub"]["version"] == 2
    fed.cn.received_directory("jl.hub").write_bytes(v1)

    stderr = refused(fed.cn)

    assert "目录版本低于此前已导入的版本" in stderr
    assert "directory version 1 is older than version 2 already seen" in stderr
    assert "imports.json" in stderr


def test_another_directory_under_a_version_imported_before_is_refused_as_equivocation(
    fed: Federation,
) -> None:
    # Jilin's operator moves its directory aside and signs another version 1
    fed.jl.out.rename(fed.jl.root / "directory.bin.old")
    fed.jl.build("--version", "1", "--valid-days", "29")
    fed.jl.send_directory_to(fed.cn)

    stderr = refused(fed.cn)

    assert "同一版本号的目录内容与此前导入的不同" in stderr
    assert "jl.hub's directory" in stderr
    assert "its hub key may be compromised" in stderr


def test_the_register_records_each_imported_version_and_digest_only_when_the_build_succeeds(
    fed: Federation,
) -> None:
    register = json.loads(fed.cn.imports.read_text(encoding="utf-8"))

    assert register["format"] == "govxchg-imports/v1"
    assert {hub: e["version"] for hub, e in register["imported"].items()} == {
        "jl.hub": 1,
        "ln.hub": 1,
    }
    assert all(len(e["sha256"]) == 64 for e in register["imported"].values())
    at_jilin = json.loads(fed.jl.imports.read_text(encoding="utf-8"))
    assert {hub: e["version"] for hub, e in at_jilin["imported"].items()} == {"cn.hub": 2}


def test_a_link_channel_with_another_ceiling_at_the_neighbour_refuses_naming_both(
    tmp_path: Path,
) -> None:
    made = Federation.make(tmp_path)
    made.cn.build()
    made.cn.send_directory_to(made.ln)
    higher = CHANNELS.replace('ceiling = "SECRET"', 'ceiling = "TOP_SECRET"')
    made.ln.write(province("ln", "辽宁省", channels=higher))

    stderr = refused(made.ln)

    assert "链路通道 classified 的密级上限两边不一致" in stderr
    assert "channel classified, whose ceiling here is TOP_SECRET 绝密" in stderr
    assert "carries up to SECRET 机密" in stderr


def test_a_configured_directory_that_is_not_there_refuses_saying_a_member_may_leave_it_out(
    fed: Federation,
) -> None:
    fed.cn.received_directory("ln.hub").unlink()

    stderr = refused(fed.cn)

    assert f"ln.hub's directory ({fed.cn.received_directory('ln.hub')}" in stderr
    assert "No such file" in stderr
    assert "leave directory out" in stderr


# ---------------------------------------------------------------- revocations and expiry


def test_a_key_a_member_revokes_is_revoked_in_the_national_directory(fed: Federation) -> None:
    kid = sign_kid(fed.jl, "jl.cc")
    fed.jl.build("--revoke", kid)
    fed.jl.send_directory_to(fed.cn)

    result = fed.cn.build()

    d = fed.cn.read()
    assert kid in d.revoked
    assert d.is_revoked(kid)
    assert f"key {kid} (jl.cc): revoked" in result.stdout
    # the national directory revokes it; Liaoning learns it from there
    fed.cn.send_directory_to(fed.ln)
    fed.ln.build()
    assert kid in fed.ln.read().revoked


def test_a_provinces_expiry_is_capped_at_the_national_directorys(fed: Federation) -> None:
    result = fed.jl.build("--valid-days", "60")

    d = fed.jl.read()
    assert d.expires_at == fed.cn.read().expires_at
    assert d.expires_at < d.issued_at + 31 * DAY_MS
    assert "capped at the expiry of cn.hub's directory (version 2)" in result.stdout


def test_the_national_expiry_moves_on_past_its_members_which_it_caps(fed: Federation) -> None:
    before = fed.jl.read().expires_at

    result = fed.cn.build("--valid-days", "90")

    d = fed.cn.read()
    assert d.expires_at == d.issued_at + 90 * DAY_MS
    assert d.expires_at > before + 50 * DAY_MS
    assert "capped" not in result.stdout


# ---------------------------------------------------------------- the upstream's word on us


def test_a_province_its_upstream_does_not_list_refuses_to_build(tmp_path: Path) -> None:
    made = Federation.make(tmp_path)
    made.cn.write(national(members_directories=False, members=("ln",)))
    made.cn.build()
    made.cn.send_directory_to(made.jl)

    stderr = refused(made.jl)

    assert "其目录未将本枢纽 jl.hub 列为下级枢纽" in stderr
    assert "does not list this hub jl.hub as its member" in stderr
    assert 'role = "member"' in stderr


def test_a_province_whose_current_key_the_upstream_does_not_list_refuses_to_build(
    tmp_path: Path,
) -> None:
    made = Federation.make(tmp_path)
    made.cn.build()
    made.cn.send_directory_to(made.jl)
    old = made.jl.pinned().kid
    ok(hubctl("keys", "init", "--out", str(made.jl.hub), "--force"))  # a new hub key

    stderr = refused(made.jl)

    assert f"with key {old}, not its current key {made.jl.pinned().kid}" in stderr
    assert "send the operator of cn.hub this hub's hub.pub.json" in stderr


def test_an_own_organisation_outside_the_prefixes_the_upstream_lists_refuses_to_build(
    tmp_path: Path,
) -> None:
    made = Federation.make(tmp_path)
    made.cn.build()
    made.cn.send_directory_to(made.jl)
    made.jl.write(
        province(
            "jl", "吉林省", extra=org("yb.gov", "prefecture", "jl.gov", channels=GOVNET, zh="乙")
        )
    )

    stderr = refused(made.jl)

    assert "lists this hub jl.hub with prefixes jl, which do not cover yb.gov" in stderr
    assert "the operator of cn.hub must list a prefix covering them" in stderr


def test_an_own_organisation_the_upstream_lists_as_its_own_refuses_to_build(
    tmp_path: Path,
) -> None:
    made = Federation.make(tmp_path)
    made.cn.build()
    made.cn.send_directory_to(made.jl)
    # Jilin's standalone topology listed the State Council as its own (config/topology.toml)
    made.jl.write(
        province("jl", "吉林省", extra=org("cn.gov", "national", None, channels=BOTH, zh="国务院"))
    )

    stderr = refused(made.jl)

    assert "cn.gov is an organisation of this topology, but cn.hub's directory" in stderr
    assert "lists it as its own: remove it from [[orgs]] here" in stderr


def test_an_own_parent_missing_from_the_upstreams_directory_refuses_naming_both(
    tmp_path: Path,
) -> None:
    made = Federation.make(tmp_path)
    made.cn.build()
    made.cn.send_directory_to(made.jl)
    made.jl.write(province("jl", "吉林省").replace('parent = "cn.gov"', 'parent = "cn.ndrc"'))

    stderr = refused(made.jl)

    assert "jl.gov's parent cn.ndrc is not in cn.hub's directory (" in stderr
    assert str(made.jl.received_directory("cn.hub")) in stderr
    assert "version 1)" in stderr


def test_an_imported_organisations_parent_nobody_lists_refuses_naming_it(fed: Federation) -> None:
    # the national topology loses the State Council that the provinces' governments report to
    text = national().replace('id = "cn.gov"', 'id = "cn.gov2"')
    fed.cn.write(text)

    stderr = refused(fed.cn)

    assert "jl.gov, imported from jl.hub's directory (" in stderr
    assert "names cn.gov, which is neither an organisation of this topology nor imported" in stderr
