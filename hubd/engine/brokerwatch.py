"""The hub's life on each broker connection: what it knows of presence, and the retained
directory it serves there.

- Presence (:class:`PresenceBook`): unknown from the moment a link is lost (or before it
  first connects); learned again from the retained presence topics once it is back, and
  settled :data:`SETTLE` seconds after, when the broker's retained messages are in.
- The directory: the hub reads its own retained directory topic. When what the broker
  retains is not byte for byte the frame the hub serves (someone published another retained
  frame, or removed it), the hub logs it (a security event unless it is merely an older
  frame of this hub's own) and publishes its own again, at most once per
  :data:`REPUBLISH_EVERY` seconds per channel. Its own frame coming back is identical, so
  re-publishing never feeds itself.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Iterable
from typing import Final

import structlog

from hubd.engine.presencebook import PresenceBook
from runtime.link import Link, Sink
from schemas import topics
from schemas.directory import VerifiedDirectory, verify_directory
from schemas.errors import PeerError

log = structlog.get_logger("hubd.brokers")
security = structlog.get_logger("hubd.security")

SETTLE: Final = 3.0  # seconds after subscribing by which a broker's retained messages are in
REPUBLISH_EVERY: Final = 10.0  # seconds: at most one re-publication per channel in this time

Republish = Callable[[str, bytes], object]  # (channel, frame): retained on its directory topic


class BrokerWatch:
    """``on_connected`` for each link's connection, and the sink of the directory topics."""

    def __init__(
        self,
        spokes: PresenceBook,
        channels: Iterable[str],
        *,
        served: Callable[[], VerifiedDirectory],
        hub_public: Callable[[], bytes],
        republish: Republish,
    ) -> None:
        self._spokes, self._served, self._hub_public = spokes, served, hub_public
        self._republish = republish
        self.directory_topics = {topics.directory(ch): ch for ch in channels}
        self._last_republished: dict[str, float] = {}
        self._republish_due: set[str] = set()
        spokes.lost(self.directory_topics.values())  # nothing is known before connecting

    async def connection(self, link: Link) -> None:
        """For the life of one connection of ``link`` (its greeting task, cancelled when the
        connection drops): presence is known while it lasts, unknown once it is gone."""
        self._spokes.back(link.channels)
        try:
            await asyncio.sleep(SETTLE)
            for channel, org in self._spokes.settled(link.channels):
                log.info("spoke.presence_gone", org=org, channel=channel)
            await asyncio.Event().wait()  # until the connection drops (or the hub stops)
        finally:
            self._spokes.lost(link.channels)

    def sink(self, ingest: Sink) -> Sink:
        """The links' sink: a directory topic's message to :meth:`on_directory`, every other
        one to ``ingest``."""
        directory_topics = self.directory_topics

        def sink(topic: str, payload: bytes) -> None:
            channel = directory_topics.get(topic)
            if channel is None:
                ingest(topic, payload)
            else:
                self.on_directory(channel, payload)

        return sink

    def on_directory(self, channel: str, payload: bytes) -> None:
        """What the broker retains (or was just sent) on ``channel``'s directory topic."""
        served = self._served()
        if payload == served.frame:
            return
        digest = hashlib.sha256(payload).hexdigest()
        older = self._own_version(payload, served)
        if older is not None and older < served.version:
            log.info(
                "directory.stale_retained", channel=channel, version=older, serving=served.version
            )
        else:
            security.error(
                "directory.replaced",
                channel=channel,
                size=len(payload),
                sha256=digest,
                serving=served.version,
            )
        self._republish_soon(channel)

    def _own_version(self, payload: bytes, served: VerifiedDirectory) -> int | None:
        """The version of ``payload`` if it is a frame this hub's key signed (an older one is
        a directory the broker kept from before a reload or restart); else None."""
        if not payload:
            return None
        try:
            found = verify_directory(payload, self._hub_public(), now=None)
        except PeerError:
            return None
        if found.directory.hub_id != served.directory.hub_id:
            return None
        return found.directory.version

    def _republish_soon(self, channel: str) -> None:
        loop = asyncio.get_running_loop()
        wait = self._last_republished.get(channel, -REPUBLISH_EVERY) + REPUBLISH_EVERY - loop.time()
        if wait <= 0:
            self._republish_now(channel)
        elif channel not in self._republish_due:  # once more, when the window allows
            self._republish_due.add(channel)
            loop.call_later(wait, self._republish_now, channel)

    def _republish_now(self, channel: str) -> None:
        self._republish_due.discard(channel)
        self._last_republished[channel] = asyncio.get_running_loop().time()
        served = self._served()
        log.info("directory.republished", channel=channel, version=served.version)
        self._republish(channel, served.frame)
