"""What the hub, its metrics and the spoke use of an MQTT link, as a protocol.

:class:`runtime.mqtt.BrokerLink` is the link that talks to a broker;
:class:`runtime.fakelink.FakeLink` is the in-memory one for tests of the link's users.
Both are made the same way (:class:`LinkMaker`): the subscriptions, the sink for what
arrives and the greeting for each (re)connection are fixed when the link is made, so the
protocol proper is what the users call afterwards.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import aiomqtt

Sink = Callable[[str, bytes], None]  # (topic, payload), called on the event loop thread
OnConnected = Callable[["Link"], Awaitable[None]]  # the greeting after each (re)connection


class Link(Protocol):
    """One broker connection carrying ``channels``, up until the ``stop`` given to :meth:`run`.

    Messages on the link's subscriptions go to its sink, (topic, payload) on the event loop
    thread in the order they arrived, retained ones first after each (re)connection.
    """

    @property
    def name(self) -> str:
        """The broker's name in logs and /ready (a spoke's link: its channel)."""
        ...

    @property
    def channels(self) -> list[str]:
        """The channels this connection carries (several may share one broker)."""
        ...

    @property
    def node(self) -> str | None:
        """The broker node connected now, ``scheme://host:port``; None while not connected."""
        ...

    @property
    def connected(self) -> asyncio.Event:
        """Set while connected and subscribed; cleared when the connection drops."""
        ...

    async def run(self, stop: asyncio.Event) -> None:
        """Connect, greet, and reconnect after every loss, until ``stop`` is set."""
        ...

    async def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> bool:
        """QoS 1: True once the broker acknowledged it; False when not connected, when the
        connection dropped first, or when no acknowledgement came in time."""
        ...

    def enqueue(self, topic: str, payload: bytes, *, retain: bool = False) -> asyncio.Future[bool]:
        """Hand a QoS 1 publish to the connection now, in call order; the future says
        whether it was acknowledged (as :meth:`publish`)."""
        ...

    def set_reading(self, reading: bool) -> None:  # noqa: FBT001 - a switch
        """Stop (False) or resume (True) taking messages from the broker; the switch is kept
        across reconnections."""
        ...


class LinkMaker(Protocol):
    """How hub and spoke make a link: ``BrokerLink`` itself, or ``FakeBroker.link``."""

    def __call__(
        self,
        name: str,
        host: str,
        port: int,
        channels: list[str],
        *,
        subscriptions: list[str],
        client_id: str,
        sink: Sink,
        will: aiomqtt.Will | None = None,
        on_connected: OnConnected,
        window: int = 256,
        tls: ssl.SSLContext | None = None,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        failover: Sequence[tuple[str, int]] = (),
    ) -> Link: ...
