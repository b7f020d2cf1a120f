"""The private parts of aiomqtt and paho that runtime/mqtt.py reaches into are still there.

The link reads paho's socket, replaces its ``_sock_recv`` and fails aiomqtt's
``_disconnected`` future itself (runtime/mqtt.py says why: a third of the hub's publish
time and most of its read time). Private attributes can go in any release, so paho-mqtt
is pinned and these tests fail, naming the attribute and the file, on a version without
them. The list is ``AIOMQTT_PRIVATE`` and ``PAHO_PRIVATE`` in runtime/mqtt.py, which the
link itself checks on every new client; the first test keeps that list complete.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import tomllib
from importlib.metadata import version
from pathlib import Path

import aiomqtt
import paho.mqtt.client
import pytest
from packaging.requirements import Requirement

from runtime import mqtt
from runtime.link import Link
from runtime.mqtt import AIOMQTT_PRIVATE, PAHO_PRIVATE, BrokerLink, missing_private
from schemas.errors import UsageError

REPO = Path(__file__).resolve().parents[2]
LINK_FILE = "runtime/mqtt.py"


def foreign_private_attributes(source: str) -> set[str]:
    """Names like ``x._name`` in ``source`` where ``x`` is not ``self`` or ``cls``: the
    private attributes of other people's objects that the code reaches into."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Attribute):
            continue
        name = node.attr
        if not name.startswith("_") or name.startswith("__"):
            continue
        if isinstance(node.value, ast.Name) and node.value.id in {"self", "cls"}:
            continue  # our own
        found.add(name)
    return found


def test_every_private_attribute_the_link_reaches_into_is_on_its_list() -> None:
    used = foreign_private_attributes((REPO / LINK_FILE).read_text(encoding="utf-8"))
    listed = set(AIOMQTT_PRIVATE) | set(PAHO_PRIVATE)
    assert used - listed == set(), (
        f"{LINK_FILE} reaches into {sorted(used - listed)}: add them to AIOMQTT_PRIVATE or "
        "PAHO_PRIVATE with the reason, so the pin's test and the link's check cover them"
    )
    assert listed - used == set(), f"listed but no longer used: {sorted(listed - used)}"


def test_the_list_finder_sees_a_reach_into_another_objects_private_attribute() -> None:
    source = "def f(self, client):\n    self._own = client._client._sock\n"
    assert foreign_private_attributes(source) == {"_client", "_sock"}


async def _client() -> aiomqtt.Client:
    return aiomqtt.Client("127.0.0.1", 1883, identifier="private-check")  # never connects


@pytest.mark.parametrize("name", sorted(AIOMQTT_PRIVATE))
async def test_aiomqtt_still_has_each_private_attribute_the_link_uses(name: str) -> None:
    client = await _client()
    assert hasattr(client, name), (
        f"aiomqtt {version('aiomqtt')} has no Client.{name}, which {LINK_FILE} uses: "
        f"{AIOMQTT_PRIVATE[name]}. Install an aiomqtt that has it, or port {LINK_FILE}."
    )


@pytest.mark.parametrize("name", sorted(PAHO_PRIVATE))
async def test_paho_still_has_each_private_attribute_the_link_uses(name: str) -> None:
    paho_client = getattr(await _client(), "_client", None)
    assert isinstance(paho_client, paho.mqtt.client.Client)
    assert hasattr(paho_client, name), (
        f"paho-mqtt {version('paho-mqtt')} has no Client.{name}, which {LINK_FILE} uses: "
        f"{PAHO_PRIVATE[name]}. Keep paho-mqtt at the version pyproject.toml pins, or port "
        f"{LINK_FILE}."
    )


def test_paho_still_reads_through_sock_recv_so_replacing_it_takes_effect() -> None:
    source = inspect.getsource(paho.mqtt.client.Client)
    assert "self._sock_recv(" in source, (
        f"paho-mqtt {version('paho-mqtt')} no longer reads through Client._sock_recv: the "
        f"buffered reader {LINK_FILE} (SocketIO._recv) installs there is never called"
    )
    assert list(inspect.signature(paho.mqtt.client.Client._sock_recv).parameters) == [
        "self",
        "bufsize",
    ]


def test_the_installed_paho_is_the_version_pyproject_pins() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    pins = [Requirement(d) for d in project["dependencies"] if d.startswith("paho-mqtt")]
    assert len(pins) == 1, "pyproject.toml must pin paho-mqtt (runtime/mqtt.py patches it)"
    assert pins[0].specifier.contains(version("paho-mqtt")), (
        f"paho-mqtt {version('paho-mqtt')} is installed, pyproject.toml pins {pins[0]}"
    )


async def test_a_client_without_a_listed_attribute_is_named_and_the_link_refuses_to_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert missing_private(await _client()) == []
    monkeypatch.setattr(mqtt, "PAHO_PRIVATE", {**PAHO_PRIVATE, "_gone": "a test's stand-in"})
    assert missing_private(await _client()) == ["paho Client._gone"]

    async def nothing(_link: Link) -> None:
        return None

    link = BrokerLink(
        "govnet",
        "127.0.0.1",
        1,  # never reached: the check comes first
        ["govnet"],
        subscriptions=[],
        client_id="private-check",
        sink=lambda _topic, _payload: None,
        on_connected=nothing,
    )
    with pytest.raises(UsageError, match=r"paho Client\._gone.*runtime/mqtt\.py"):
        async with asyncio.timeout(10):
            await link.run(asyncio.Event())
