"""The uplink is made when the hub starts: a reloaded directory whose hub above, or whose
link's channels, changed says that a restart is needed (hubd.engine.uplink)."""

from __future__ import annotations

from hubd.engine.uplink import uplink_changed
from schemas.keys import SigningKey
from tests.federation import LINK, NATIONAL, provincial_view
from tests.world import World

NATIONAL_KEY = SigningKey.generate()


def test_joining_an_upstream_by_reload_says_restart_in_both_languages(world: World) -> None:
    member = provincial_view(world.directory, NATIONAL_KEY)

    why = uplink_changed(world.directory, member)

    assert why is not None
    assert "须重启 hubd" in why
    assert "restart hubd" in why


def test_a_reload_that_keeps_the_hub_above_and_its_channels_needs_no_restart(
    world: World,
) -> None:
    member = provincial_view(world.directory, NATIONAL_KEY)
    again = member.model_copy(update={"version": member.version + 1})

    assert uplink_changed(member, again) is None


def test_a_link_channel_added_or_dropped_needs_a_restart(world: World) -> None:
    member = provincial_view(world.directory, NATIONAL_KEY)
    hubs = tuple(
        h.model_copy(update={"channels": LINK[:1]}) if h.id == NATIONAL else h for h in member.hubs
    )

    assert uplink_changed(member, member.model_copy(update={"hubs": hubs})) is not None
