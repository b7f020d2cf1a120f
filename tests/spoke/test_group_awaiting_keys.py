"""A group send while some of the group await their keys: the members stay in the group (they
are members by the topology); the send goes to those with keys and the sender is told who
was left out and why: in ``spoke send``'s output, ``sent/<id>/status.json``, the spoke's
log, ``spoke send --dry-run`` and ``hubctl route``. A group whose members all await keys is
refused with a reason of its own naming the group.

The hub never expands a group (it gates the header's explicit recipients), so this is the
directory's and the spoke's business alone.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from structlog.testing import capture_logs
from typer.testing import CliRunner

from hubd.ops import route
from hubd.provision.sources import RouteError
from runtime.clock import now_ms
from schemas.directory import NotAddressed, VerifiedDirectory, sign_directory, verify_directory
from schemas.ids import msg_id_text
from schemas.metadata import parse_metadata
from schemas.whatif import WhatIf
from spoke.cli import app
from spoke.refusals import Refusal
from spoke.state import SpokeState
from spoke.tools import rehearse
from tests.hubproc import live_directory
from tests.spoke.conftest import OfflineSpoke, OfflineSpokeFactory
from tests.spoke.procs import SpokeProcess, toml_meta
from tests.spoke.test_send_refusals import unused_port
from tests.world import World, seed_held

GROUP = "@counties.jl.cc"  # jl.cc.nongan, jl.cc.yushu, jl.cc.dehui
AWAITING = "jl.cc.dehui"
LEFT_OUT = NotAddressed(AWAITING, "counties.jl.cc", "awaiting_keys")
NOTICE = {"密级": "内部", "文种": "通知", "标题": "关于做好冬季供暖工作的通知", "签发人": "王某"}


def awaiting(world: World, *orgs: str) -> VerifiedDirectory:
    """The world's directory around the real clock, ``orgs`` listed but awaiting keys."""
    held = {o: k for o, k in world.keys.items() if o not in orgs}
    directory = live_directory(dataclasses.replace(world, keys=held), version=2)
    frame = sign_directory(directory, world.hub_key)
    return verify_directory(frame, world.hub_key.public, now=now_ms())


def city(offline_spoke: OfflineSpokeFactory, verified: VerifiedDirectory) -> OfflineSpoke:
    spoke = offline_spoke("jl.cc")
    spoke.ctx.verified = verified
    return spoke


def test_the_directory_keeps_members_awaiting_keys_in_their_groups(world: World) -> None:
    directory = awaiting(world, AWAITING).directory

    group = directory.group("counties.jl.cc")
    assert group is not None
    assert AWAITING in group.members, "a member by the topology"
    assert directory.expand([GROUP]) == ("jl.cc.nongan", "jl.cc.yushu")
    assert directory.not_addressed([GROUP, "@counties"], sender="jl.cc") == (LEFT_OUT,)
    assert directory.not_addressed([GROUP, AWAITING], sender="jl.cc") == (), "named: refused"
    assert directory.unreachable_groups([GROUP], sender="jl.cc") == ()


async def test_a_group_send_reaches_the_members_with_keys_and_names_who_was_left_out(
    offline_spoke: OfflineSpokeFactory, world: World
) -> None:
    cc = city(offline_spoke, awaiting(world, AWAITING))
    with capture_logs() as logs:
        cc.drop("供暖通知.txt", b"notice\n", toml_meta({**NOTICE, "主送": [GROUP]}))
        await cc.settle()

    (out,) = cc.outbound()
    assert cc.sealed(out).header.to == ("jl.cc.nongan", "jl.cc.yushu")
    [event] = [e for e in logs if e["event"] == "drop.not_addressed"]
    assert event["log_level"] == "warning"
    assert event["not_addressed"] == [LEFT_OUT.as_json()]
    assert event["msg_id"] == msg_id_text(out.msg_id)

    sent = cc.sender.status.sent / msg_id_text(out.msg_id)
    sent.mkdir(parents=True)  # as once ACCEPTED
    cc.sender.status.write(out.msg_id)
    status = json.loads((sent / "status.json").read_text(encoding="utf-8"))
    assert status["not_addressed"] == [{"org": AWAITING, "group": GROUP, "reason": "awaiting_keys"}]
    assert set(status["recipients"]) == {"jl.cc.nongan", "jl.cc.yushu"}


def test_spoke_send_says_which_group_members_it_will_not_reach(
    world: World, tmp_path: Path
) -> None:
    # installed, holding the directory, its agent not running (tests/spoke/test_send_refusals)
    spoke = SpokeProcess(tmp_path / "jl.cc", "jl.cc", world, unused_port(), ("govnet",))
    spoke.write()
    for name in ("outbox", "failed", "sent", "inbox", "signfor"):
        (spoke.root / name).mkdir(parents=True)
    verified = awaiting(world, AWAITING)
    state = SpokeState(spoke.root / ".spoke" / "state.db")
    seed_held(state, verified.directory, world.hub_key)
    state.close()
    document = tmp_path / "通知.txt"
    document.write_bytes(b"notice\n")

    args = ["--to", GROUP, "--classification", "内部", "--type", "通知", "--title", "通知"]
    done = CliRunner().invoke(
        app, ["send", str(document), *args, "--signatory", "王某", "--config", str(spoke.config)]
    )

    assert done.exit_code == 0, done.output
    lines = done.stdout.splitlines()
    [line] = [x for x in lines if "not addressed" in x]
    assert line.startswith(
        "未发送给：jl.cc.dehui（@counties.jl.cc），其在第 2 版交换目录中尚待提交密钥"
    )
    assert "not addressed: jl.cc.dehui (of @counties.jl.cc): awaiting keys in directory" in line
    assert lines[0].startswith("queued as the drop '通知.txt'")


def test_the_dry_run_names_the_group_members_left_out(world: World) -> None:
    directory = awaiting(world, AWAITING).directory
    meta: dict[str, object] = {
        "to": GROUP,
        "classification": "内部",
        "doc_type": "通知",
        "title": "通知",
    }

    report = rehearse(meta, meta_name="x.meta.json", org="jl.cc", directory=directory)

    assert isinstance(report, WhatIf)
    assert report.accepted
    assert report.as_json()["not_addressed"] == [LEFT_OUT.as_json()]
    assert "not addressed: jl.cc.dehui (of @counties.jl.cc)" in report.render()
    assert [r.recipient for r in report.routes] == ["jl.cc.nongan", "jl.cc.yushu"]


def test_a_group_whose_members_all_await_keys_is_refused_naming_the_group(
    world: World,
) -> None:
    directory = awaiting(world, "jl.cc.nongan", "jl.cc.yushu", AWAITING).directory
    meta: dict[str, object] = {
        "to": GROUP,
        "classification": "内部",
        "doc_type": "通知",
        "title": "通知",
    }

    refusal = rehearse(meta, meta_name="x.meta.json", org="jl.cc", directory=directory)

    assert isinstance(refusal, Refusal)
    assert refusal.rule == "drop.group_awaiting_keys"
    assert "@counties.jl.cc" in refusal.message
    assert "is awaiting keys in directory version 2" in refusal.message
    assert "都尚待提交密钥" in refusal.message_zh
    assert "@counties.jl.cc" in refusal.hint


async def test_hubctl_route_names_the_left_out_and_refuses_a_group_nobody_in_can_receive(
    world: World,
) -> None:
    fields = {"to": GROUP, "classification": "内部", "doc_type": "通知", "title": "x"}
    metadata = parse_metadata(json.dumps(fields).encode(), source="x.meta.json")
    some = awaiting(world, AWAITING).directory
    answer = await route.route(metadata, "jl.cc", some, None, auto_cc=False)
    assert answer.report.not_addressed == (LEFT_OUT,)
    assert "not addressed: jl.cc.dehui" in answer.render()

    none = awaiting(world, "jl.cc.nongan", "jl.cc.yushu", AWAITING).directory
    with pytest.raises(RouteError) as info:
        await route.route(metadata, "jl.cc", none, None, auto_cc=False)
    assert "every member of the group @counties.jl.cc" in str(info.value)
    assert "都尚待提交密钥" in str(info.value)
