"""Spokes coming and going: presence messages (online, and the will), and their hellos.

A spoke's hello says which numbered receipt batch it last holds; the hub sends it the rest
(only a spoke that is behind costs a store read: :mod:`hubd.engine.issuer`).
A hello read before the spoke's latest "offline" is out of date and must not revive it,
and a spoke seen online that says no hello is asked for one (its hello may have gone out
while this hub was away from the broker).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Final

import structlog

from hubd.engine.arrival import Arrival, Slow, Step
from hubd.engine.dispatch import Dispatcher, Publish
from hubd.engine.hopstream import HopStreams
from hubd.engine.issuer import ReceiptIssuer
from hubd.engine.stormlog import StormLog
from schemas import topics, transport
from schemas.directory import Directory, HubRole

log = structlog.get_logger("hubd.ingest")

HELLO_GRACE: Final = 3.0  # seconds a spoke seen online has to say hello before it is asked


class Presence:
    def __init__(
        self,
        *,
        directory: Callable[[], Directory],
        dispatcher: Dispatcher,
        issuer: ReceiptIssuer,
        send: Publish,
        clock: Callable[[], int],
    ) -> None:
        self._directory, self._dispatcher, self._issuer = directory, dispatcher, issuer
        self._send = send
        # Where each spoke's last "offline" came among the messages read (an Arrival's n): a
        # hello read before it (queued for the next pass while the will is handled on
        # arrival) must not revive the spoke.
        self._offline_at: dict[tuple[str, str], int] = {}
        self._hello_at: dict[tuple[str, str], int] = {}  # when (place in the read order)
        self.streams: HopStreams | None = None  # neighbour hubs' numbered batches (set by the hub)
        self.hellos = StormLog(log, clock=clock)  # counted, not one line each, in a reconnect storm

    def on_presence(self, channel: str, org: str, payload: bytes, n: int) -> None:
        """A presence message, handled on arrival (``n``: its place in the read order)."""
        if not self._directory().has_topic(org):
            # Not an organisation of the directory (the broker's ACL should have stopped
            # it): nothing to deliver to it, and nothing is kept for it.
            log.warning("presence.refused", org=org, channel=channel)
            return
        online = payload == topics.ONLINE
        if not online:
            self._offline_at[(channel, org)] = n
        else:
            self._expect_hello(channel, org, n)
        self._dispatcher.set_online(channel, org, online=online)
        log.info("spoke.online" if online else "spoke.offline", org=org, channel=channel)

    def _expect_hello(self, channel: str, org: str, seen: int) -> None:
        """A spoke is online: its hello should follow. If none comes (it was sent while this
        hub was away from the broker, and the receipts it would replay stay unsent for
        ever), ask for one: the hub closes that gap itself after its own (re)connect."""
        asyncio.get_running_loop().call_later(HELLO_GRACE, self._hello_due, channel, org, seen)

    def _hello_due(self, channel: str, org: str, online_at: int) -> None:
        key = (channel, org)
        if self._hello_at.get(key, 0) > online_at or self._offline_at.get(key, 0) > online_at:
            return  # it said hello (or went away) after it came online
        owns = self._dispatcher.owns
        if owns is not None and not owns(org):
            return  # replicas: its hello goes to the replica that owns it, which asks
        log.info("spoke.hello_asked", org=org, channel=channel)
        self._send(channel, org, transport.encode(transport.AskHelloMsg()))

    def hello_now(self, arrival: Arrival, message: transport.HelloMsg) -> Step:
        directory = self._directory()
        if directory.relaying(arrival.org) and self.streams is not None:
            # A neighbour hub: a member's hello is answered with this hub's own (where it
            # stands in the member's numbered batches, so the member sends what follows);
            # the upstream's hello only asks (answering it would echo for ever).
            hub = directory.hub(arrival.org)
            if hub is not None and hub.role is HubRole.MEMBER:
                held = self.streams.held(arrival.org, arrival.channel)
                self._send(arrival.channel, arrival.org, transport.encode(transport.HelloMsg(held)))
        elif not directory.has_topic(arrival.org):
            log.warning("presence.refused", org=arrival.org, channel=arrival.channel)
            return None  # nothing is kept for an organisation outside the directory
        if arrival.n < self._offline_at.get((arrival.channel, arrival.org), 0):
            # Its will (or its goodbye) was read after it: the spoke is gone, and says hello
            # again when it returns.
            log.info("spoke.hello_outdated", org=arrival.org, channel=arrival.channel)
            return None
        self._dispatcher.set_online(arrival.channel, arrival.org, online=True)
        self._hello_at[(arrival.channel, arrival.org)] = arrival.n
        self.hellos.info(
            "spoke.hello", org=arrival.org, channel=arrival.channel, last_seq=message.last_seq
        )
        if not self._issuer.owes(arrival.org, arrival.channel, message.last_seq):
            return None  # it holds every numbered batch: answered, no store read
        return Slow(functools.partial(self._replay, arrival, message.last_seq))

    async def _replay(self, arrival: Arrival, last_seq: int) -> None:
        await self._issuer.replay(arrival.org, arrival.channel, last_seq)  # what it missed
