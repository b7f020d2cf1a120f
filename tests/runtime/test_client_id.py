"""runtime.mqtt.mqtt_client_id: the one place hubd and the spokes make their MQTT client ids.

nats-server refuses a client id containing '.', whitespace, '*' or '>' (CONNACK 2,
identifier rejected; tests/ops/test_nats_cluster.py shows it with a real cluster), and
ours carry dotted organisation ids. That hubd and the spokes use this function, and that
NATS takes what it makes, is shown end to end in tests/spoke/test_nats_e2e.py.
"""

from __future__ import annotations

import re

import pytest

from runtime.mqtt import mqtt_client_id
from tests.world import World

REFUSED_BY_NATS = re.compile(r"[.\s*>]")


@pytest.mark.parametrize(
    ("parts", "client_id"),
    [
        (("spoke", "jl.cc", "govnet"), "spoke-jl_cc-govnet"),
        (("spoke", "jl.cc.nongan", "govnet"), "spoke-jl_cc_nongan-govnet"),
        (("hubd", "jl.hub", "mqtts-127.0.0.1-8883"), "hubd-jl_hub-mqtts-127_0_0_1-8883"),
        (("hubd", "jl.hub", "embedded"), "hubd-jl_hub-embedded"),
        (("a b", "c*d", "e>f", "g\th"), "a-b-c-d-e-f-g-h"),
        (("spoke", "cn-gov", "core"), "spoke-cn-gov-core"),  # nothing to change
    ],
)
def test_a_client_id_has_no_character_nats_refuses(parts: tuple[str, ...], client_id: str) -> None:
    assert mqtt_client_id(*parts) == client_id
    assert not REFUSED_BY_NATS.search(client_id)


def test_every_organisation_keeps_a_client_id_of_its_own_on_every_channel(world: World) -> None:
    made = {
        (org.id, channel): mqtt_client_id("spoke", org.id, channel)
        for org in world.topology.orgs
        for channel in org.channels
    }
    made[(world.topology.hub.id, "hub")] = mqtt_client_id("hubd", world.topology.hub.id, "x")

    assert len(set(made.values())) == len(made)
    assert not [c for c in made.values() if REFUSED_BY_NATS.search(c)]
