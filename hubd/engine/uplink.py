"""This hub as a member of the hub above it: one connection per channel of the link to the
upstream's broker, as a spoke connects to its hub (docs/architecture.md, "Hubs under hubs").

The member hub is the upstream's client under its own hub id: it publishes on
``up/<hub id>`` (envelopes it relays, its answers, the receipts it forwards, numbered) and
reads ``down/<hub id>`` (what the upstream relays to it), with a retained presence and a
will, one connection per channel so that each channel's presence is its own. What it reads
goes to the intake as arrivals from the upstream, which verifies and gates it like anything
else. Its hello names where this hub stands in the upstream's numbered batches, on every
connection and every ``hello_every`` after: the upstream sends what follows, and answers
with where it stands in this hub's, which this hub then sends again (hubd.engine.hopstream).
While a channel's connection is down the upstream is offline there: deliveries to it wait
(parked, like a spoke's) and go when it is back; nothing is lost. When this hub stops it
says goodbye (:meth:`Uplink.goodbye`, its presence offline, as a spoke's agent does): a
clean disconnection leaves no will, and the upstream would otherwise go on publishing to a
member that is gone, spending its retries instead of parking.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl
from collections.abc import Callable, Mapping

import aiomqtt
import structlog

from hubd.config import Upstream
from hubd.engine.dispatch import Dispatcher
from hubd.engine.hopstream import HopStreams
from runtime.brokers import BrokerURL
from runtime.link import Link, LinkMaker
from runtime.mqtt import mqtt_client_id, tls_context
from schemas import topics, transport
from schemas.directory import Directory

log = structlog.get_logger("hubd.uplink")
ASK_HELLO = transport.encode(transport.AskHelloMsg())
GOODBYE_TIMEOUT = 2.0  # seconds for the broker to take this hub's offline, on each channel


class Uplink:
    def __init__(
        self,
        *,
        hub_id: str,
        upstream: str,
        brokers: Mapping[str, BrokerURL],
        link_maker: LinkMaker,
        deliver: Callable[[str, str, bytes], None],
        dispatcher: Dispatcher,
        streams: HopStreams,
        hello_every: float = 30.0,
        window: int = 256,
    ) -> None:
        self.hub_id, self.upstream = hub_id, upstream
        self._deliver, self._dispatcher, self._streams = deliver, dispatcher, streams
        self._hello_every = hello_every
        self._leaving = False  # this hub is stopping: a connection that ends is not lost
        self.links: dict[str, Link] = {}
        for channel, broker in brokers.items():
            will = aiomqtt.Will(
                topics.presence(channel, hub_id), topics.OFFLINE, qos=1, retain=True
            )
            self.links[channel] = link_maker(
                broker.identity,  # its node(s), as 'hubctl status' shows a broker
                broker.host,
                broker.port,
                [channel],
                subscriptions=[topics.down(channel, hub_id)],
                client_id=mqtt_client_id("hubd", hub_id, "uplink", channel),
                sink=functools.partial(self._sink, channel),
                will=will,
                on_connected=self._on_connected,
                window=window,
                tls=_tls(broker),
                failover=broker.nodes[1:],
            )

    def _sink(self, channel: str, topic: str, payload: bytes) -> None:
        if topic != topics.down(channel, self.hub_id):
            log.warning("uplink.unknown_topic", topic=topic[:120], channel=channel)
            return
        if payload == ASK_HELLO:  # the upstream missed our hello (it was away)
            self._hello(channel)
            return
        self._deliver(channel, self.upstream, payload)

    async def _on_connected(self, link: Link) -> None:
        """For the life of one connection: online, hello now and every ``hello_every``."""
        (channel,) = link.channels
        await link.publish(topics.presence(channel, self.hub_id), topics.ONLINE, retain=True)
        self._dispatcher.set_online(channel, self.upstream, online=True)
        log.info("uplink.connected", upstream=self.upstream, channel=channel, node=link.node)
        try:
            while True:
                self._hello(channel)
                await asyncio.sleep(self._hello_every)
        finally:
            self._dispatcher.set_online(channel, self.upstream, online=False)
            if not self._leaving:
                log.warning("uplink.lost", upstream=self.upstream, channel=channel)

    async def goodbye(self) -> None:
        """This hub is stopping: offline on each channel of the link (retained), so that the
        upstream parks what is for it at once, as for a spoke that stopped; a channel whose
        connection is down already said so with its will."""
        self._leaving = True
        for channel, link in self.links.items():
            if not link.connected.is_set():
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(GOODBYE_TIMEOUT):
                    presence = topics.presence(channel, self.hub_id)
                    await link.publish(presence, topics.OFFLINE, retain=True)
            log.info("uplink.closed", upstream=self.upstream, channel=channel)

    def _hello(self, channel: str) -> None:
        held = self._streams.held(self.upstream, channel)
        self.send(channel, transport.encode(transport.HelloMsg(held)))

    def send(self, channel: str, payload: bytes) -> asyncio.Future[bool]:
        """Publish ``payload`` on this hub's up topic at the upstream (the future: acked)."""
        link = self.links.get(channel)
        if link is None:
            unsent: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
            unsent.set_result(False)
            return unsent
        return link.enqueue(topics.up(channel, self.hub_id), payload)


def _tls(broker: BrokerURL) -> ssl.SSLContext | None:
    if not broker.tls:
        return None
    files = (broker.ca, broker.cert, broker.key)
    return tls_context(*(None if f is None else str(f) for f in files))


def uplink_for(
    directory: Directory,
    config: Upstream,
    *,
    link_maker: LinkMaker,
    deliver: Callable[[str, str, bytes], None],
    dispatcher: Dispatcher,
    streams: HopStreams,
    window: int,
) -> Uplink | None:
    """The uplink the directory and ``[upstream]`` describe; None for a hub that is no
    member. A link channel without a broker in ``[upstream.channels]`` is not connected
    (logged once: documents on it wait for the operator to add it and restart)."""
    upstream = directory.upstream
    if upstream is None:
        if config.channels:
            log.warning("uplink.no_upstream", configured=sorted(config.channels))
        return None
    missing = [c for c in upstream.channels if c not in config.channels]
    if missing:
        log.error("uplink.channel_unconfigured", upstream=upstream.id, channels=missing)
    return Uplink(
        hub_id=directory.hub_id,
        upstream=upstream.id,
        brokers={c: config.channels[c] for c in upstream.channels if c in config.channels},
        link_maker=link_maker,
        deliver=deliver,
        dispatcher=dispatcher,
        streams=streams,
        hello_every=config.hello_every,
        window=window,
    )


def uplink_changed(before: Directory, after: Directory) -> str | None:
    """Why a reloaded directory needs a restart for its uplink (made at start): the hub
    above, or its link's channels, changed; None when they did not."""

    def link(directory: Directory) -> tuple[str, tuple[str, ...]] | None:
        up = directory.upstream
        return None if up is None else (up.id, up.channels)

    if link(before) == link(after):
        return None
    return (
        "新目录中的上级枢纽或其连接通道有变化，须重启 hubd 方能生效 / the hub above or its "
        "link's channels changed in the new directory: restart hubd to connect (or "
        "disconnect) the uplink"
    )
