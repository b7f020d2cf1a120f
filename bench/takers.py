"""How a simulated spoke takes the directory: the one part of bench/national.py that changes
when the directory protocol does (issue 14).

A taker says what to subscribe to, what to do once online (today: nothing; the new
protocol asks the hub for a signed root and its own entry), which received messages are
directory traffic (their bytes are what the bench counts), and how a spoke checks what it
took (timed on a sample). Everything else, connecting, counting, timing, reporting, stays
in national.py and measures any taker the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from bench.rawmqtt import RawClient
from runtime.clock import now_ms
from schemas import dirtree, topics, transport
from schemas.directory import verify_directory


class DirectoryTaker(Protocol):
    name: str  # shown in the report

    def subscriptions(self, channel: str, org: str) -> list[str]:
        """Topics to subscribe to besides the spoke's down topic."""
        ...

    async def on_online(self, client: RawClient, channel: str, org: str) -> None:
        """After the spoke subscribed and said hello: ask for what it needs, if anything."""
        ...

    def claims(self, channel: str, org: str, topic: str, head: bytes) -> bool:
        """Is the message on ``topic`` whose payload starts with ``head`` directory traffic?"""
        ...

    def check(self, payload: bytes) -> int:
        """Verify a directory message as the spoke would; returns the version it holds."""
        ...


class WholeFrame:
    """Today's protocol: the hub's signed directory frame, retained on the channel's
    directory topic, comes whole with the subscription and again on every new version."""

    name = "whole signed frame, retained (today)"

    def __init__(self, hub_public: bytes) -> None:
        self._hub_public = hub_public

    def subscriptions(self, channel: str, org: str) -> list[str]:  # noqa: ARG002 - the protocol's signature
        return [topics.directory(channel)]

    async def on_online(self, client: RawClient, channel: str, org: str) -> None:  # noqa: ARG002
        return  # the retained frame arrives with the subscription

    def claims(self, channel: str, org: str, topic: str, head: bytes) -> bool:  # noqa: ARG002
        return topic == topics.directory(channel)

    def check(self, payload: bytes) -> int:
        return verify_directory(payload, self._hub_public, now=now_ms()).version


class RootAndLine:
    """Issue 14's protocol (docs/wire-format.md 7a): the signed root, retained on the
    channel's dirroot topic, comes with the subscription and again on every new version
    (with the change beside it); once online the spoke asks the hub for its own entry and
    its line up to the top (a real spoke asks level by level as it learns each parent, the
    same entries in more round trips; the bench's ids name their line, so it asks once).
    It asks holding no root (version 0), so the answer carries the root again: a little
    more than a real spoke takes."""

    name = "signed root retained, own line on demand (issue 14)"

    def __init__(self, hub_public: bytes) -> None:
        self._hub_public = hub_public

    def subscriptions(self, channel: str, org: str) -> list[str]:  # noqa: ARG002 - the protocol's signature
        return [topics.dirroot(channel)]

    async def on_online(self, client: RawClient, channel: str, org: str) -> None:
        parts = org.split(".")
        line = [".".join(parts[:i]) for i in range(len(parts), 0, -1)]
        ask = transport.DirGetMsg(1, 0, dirtree.encode_ask(line))
        client.publish(topics.up(channel, org), transport.encode(ask))

    def claims(self, channel: str, org: str, topic: str, head: bytes) -> bool:
        if topic == topics.dirroot(channel):
            return True
        return topic == topics.down(channel, org) and head.startswith(b"\x93\xabdir-entries")

    def check(self, payload: bytes) -> int:
        """The root verified, and (for an answer) every entry proven against it."""
        if not payload.startswith(b"\x93\xabdir-entries"):
            root_frame, _ = dirtree.read_publication(payload)
            return dirtree.verify_root(root_frame, self._hub_public, now=now_ms()).version
        message = transport.decode(payload)
        assert isinstance(message, transport.DirEntriesMsg)
        _, carried, _, outer = dirtree.read_answer(message.answer)
        assert carried is not None  # asked holding no root
        root = dirtree.verify_root(carried, self._hub_public, now=now_ms())
        keys = [dirtree.read_leaf(item["leaf"]).id for item in outer["found"]]
        answer = dirtree.verify_answer(message.answer, root, keys)
        assert len(answer.entries) == len(keys)
        return root.version


# --taker NAME: each protocol's taker, made from the pinned hub key; the same bench
# measures each.
TAKERS: dict[str, Callable[[bytes], DirectoryTaker]] = {"whole": WholeFrame, "root": RootAndLine}
