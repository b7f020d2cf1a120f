"""The first line of ``spoke status`` names the directory version the agent uses now.

It was recorded only when the agent started or stopped sending or switched keys, so a new
directory under the same key left it naming the old version (the line the rotation
runbook tells operators to check). The agent now records it on every directory change,
and the line says when the directory kept in the state file is another version than the
one the agent last reported using.
"""

from __future__ import annotations

from runtime.clock import now_ms
from schemas.directory import sign_directory, verify_directory
from spoke.tools import sending_line
from tests.hubproc import live_directory
from tests.spoke.conftest import OfflineSpoke, OfflineSpokeFactory
from tests.world import World, seed_held


def publish(spoke: OfflineSpoke, world: World, version: int) -> None:
    """The directory ``version`` reaches the agent, as its link hands it over."""
    directory = live_directory(world, version=version)
    seed_held(spoke.ctx.state, directory, world.hub_key)
    frame = sign_directory(directory, world.hub_key)
    spoke.ctx.verified = verify_directory(frame, world.hub_key.public, now=now_ms())


def first_line(spoke: OfflineSpoke) -> str:
    state = spoke.ctx.state
    return sending_line(state.sending(), waiting=0, kept=state.directory_version())


async def test_a_new_directory_under_the_same_key_shows_its_version_on_the_first_line(
    offline_spoke: OfflineSpokeFactory, world: World
) -> None:
    gov = offline_spoke("jl.gov")
    publish(gov, world, 1)
    await gov.sender.scan()
    kid = world.keys["jl.gov"].signing.kid
    before = gov.ctx.state.sending()
    assert before is not None
    assert f"signing with key {kid} (directory v1)" in first_line(gov)

    publish(gov, world, 2)
    await gov.sender.scan()

    line = first_line(gov)
    assert f"signing with key {kid} (directory v2)" in line
    assert "v1" not in line
    assert "NOTE" not in line
    after = gov.ctx.state.sending()
    assert after is not None
    assert after.since == before.since  # sending all along: still since it began


async def test_the_first_line_says_when_the_state_file_holds_another_directory_version(
    offline_spoke: OfflineSpokeFactory, world: World
) -> None:
    gov = offline_spoke("jl.gov")
    publish(gov, world, 1)
    await gov.sender.scan()
    # verified and kept, and the agent stopped before it took it into use
    seed_held(gov.ctx.state, live_directory(world, version=3), world.hub_key)

    line = first_line(gov)

    assert "(directory v1)" in line
    assert "the agent last reported directory v1, but its state file holds v3" in line
    assert "交换程序在用通讯录 v1，状态文件中已存 v3" in line
    assert len(line.splitlines()) == 1
