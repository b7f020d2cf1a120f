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
from schemas import topics
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


# --taker NAME: each protocol's taker, made from the pinned hub key. The new protocol's
# taker goes here beside today's, and the same bench measures both.
TAKERS: dict[str, Callable[[bytes], DirectoryTaker]] = {"whole": WholeFrame}
