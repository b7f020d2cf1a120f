"""The hub's life on each broker connection: what it knows of presence, and the retained
directory it serves there.

- Presence (:class:`PresenceBook`): unknown from the moment a link is lost (or before it
  first connects); learned again from the retained presence topics once it is back, and
  settled :data:`SETTLE` seconds after, when the broker's retained messages are in.
- The directory: the hub reads its own retained directory topic. When what the broker
  retains is not byte for byte the frame the hub serves (someone published another retained
  frame, or removed it), the hub logs it (a security event unless it is merely an older
  frame of this hub's own; one per :data:`ALARM_EVERY` seconds per channel, the rest
  counted) and publishes its own again, at most once per :data:`REPUBLISH_EVERY` seconds
  per channel. Its own frame coming back is identical, so re-publishing never feeds itself.
  A NEWER frame of this hub's own key is left in place (this hub is the one behind: reload
  it). Two publishers answering each other (another hub with another key on the channel)
  would go on forever: after :data:`CONTEST_LIMIT` re-publications in
  :data:`CONTEST_WINDOW` seconds the hub stops on that channel and says so, until it
  publishes its directory there again itself (``hubctl reload``, a reconnection, a restart).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
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
ALARM_EVERY: Final = 60.0  # seconds: one directory.replaced per channel, the rest counted
CONTEST_WINDOW: Final = 600.0  # seconds: this many republications in this time on a channel ...
CONTEST_LIMIT: Final = 5  # ... and the hub stops answering there (directory.contested)

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
        self._guards: dict[str, _Guard] = {}
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
        guard = self._guards.setdefault(channel, _Guard())
        if payload == served.frame:
            guard.newer_version = None  # the broker holds ours (again)
            if guard.gave_up is not None:  # published again (hubctl reload, a reconnection)
                guard.gave_up, guard.republished = None, []
            return
        if guard.gave_up is not None:
            if guard.gave_up == served.frame:
                return  # contested: silent on this channel until this hub publishes again
            guard.gave_up, guard.republished = None, []  # reloaded since: answer again
        seen = (payload, served.frame)
        if seen != guard.last_seen:  # the same rogue bytes again: not verified again
            guard.last_seen, guard.last_version = seen, self._own_version(payload, served)
        own = guard.last_version
        if own is not None and own > served.version:
            self._newer_retained(channel, own, served, guard, payload)
            return
        guard.newer_version = None  # whatever it held is replaced by this
        if own is not None and own < served.version:
            log.info(
                "directory.stale_retained", channel=channel, version=own, serving=served.version
            )
        else:
            self._replaced(channel, payload, served, guard)
        self._republish_soon(channel)

    def holds_newer(self, channel: str) -> bool:
        """Whether the broker was last seen holding a newer directory of this hub's own key
        on ``channel``: a reconnection then does not publish the older one over it."""
        guard = self._guards.get(channel)
        newer = None if guard is None else guard.newer_version
        return newer is not None and newer > self._served().version

    def _newer_retained(
        self,
        channel: str,
        version: int,
        served: VerifiedDirectory,
        guard: _Guard,
        payload: bytes,
    ) -> None:
        """A newer directory of this hub's own key (another replica, or an operator's newer
        build published by hand) is left where it is: this hub is the one behind."""
        guard.newer_version = version
        if guard.newer_told == payload:
            return
        guard.newer_told = payload
        log.warning(
            "directory.newer_retained",
            channel=channel,
            version=version,
            serving=served.version,
            hint=f"本枢纽使用第 {served.version} 版目录，代理服务器保留的是本枢纽密钥签发的"
            f"第 {version} 版，未予覆盖：请在本枢纽运行 hubctl reload / this hub serves "
            f"v{served.version}, the broker holds v{version} signed by this hub's key and it "
            "was left in place; run `hubctl reload` on this hub",
        )

    def _replaced(
        self, channel: str, payload: bytes, served: VerifiedDirectory, guard: _Guard
    ) -> None:
        """The security event, once per :data:`ALARM_EVERY` seconds per channel; the others
        of the window are counted and told in one ``directory.replaced_again`` at its end."""
        loop = asyncio.get_running_loop()
        if guard.alarm_until > loop.time():
            guard.suppressed += 1
            return
        guard.alarm_until = loop.time() + ALARM_EVERY
        security.error(
            "directory.replaced",
            channel=channel,
            size=len(payload),
            sha256=hashlib.sha256(payload).hexdigest(),
            serving=served.version,
        )
        loop.call_later(ALARM_EVERY, self._tell_suppressed, channel)

    def _tell_suppressed(self, channel: str) -> None:
        guard = self._guards[channel]
        if guard.suppressed:
            security.error(
                "directory.replaced_again",
                channel=channel,
                times=guard.suppressed,
                seconds=ALARM_EVERY,
            )
            guard.suppressed = 0

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
        now = asyncio.get_running_loop().time()
        self._last_republished[channel] = now
        served = self._served()
        guard = self._guards.setdefault(channel, _Guard())
        if guard.gave_up is not None:
            return
        guard.republished = [t for t in guard.republished if t > now - CONTEST_WINDOW]
        if len(guard.republished) >= CONTEST_LIMIT:
            guard.gave_up = served.frame
            security.error(
                "directory.contested",
                channel=channel,
                republished=len(guard.republished),
                seconds=CONTEST_WINDOW,
                serving=served.version,
                error=f"频道 {channel} 上的目录不断被另一枢纽或发布者替换，本枢纽已停止重新发布；"
                "请检查代理服务器的访问控制（目录主题只允许本枢纽发布） / the directory on "
                f"channel {channel} keeps being replaced by another hub or publisher; this hub "
                "stopped publishing it again. Check the broker's ACL: only the hub may publish "
                "on the directory topic; then run `hubctl reload` on this hub",
            )
            return
        guard.republished.append(now)
        log.info("directory.republished", channel=channel, version=served.version)
        self._republish(channel, served.frame)


@dataclass(slots=True)
class _Guard:
    """What the watch remembers of one channel's directory topic."""

    last_seen: tuple[bytes, bytes] | None = None  # the last frame not served, and the served
    last_version: int | None = None  # its version if this hub's key signed it
    newer_told: bytes | None = None  # the newer own frame already logged
    newer_version: int | None = None  # the version of the last newer own frame seen
    alarm_until: float = -1.0  # loop time until which directory.replaced is only counted
    suppressed: int = 0  # directory.replaced not logged in the current window
    republished: list[float] = field(default_factory=list)  # loop times, the last window
    gave_up: bytes | None = None  # the served frame when republishing stopped (contested)
