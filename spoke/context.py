"""What the spoke's parts share: configuration, keys, state, the links and the directory."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from schemas import topics
from schemas.directory import Directory, VerifiedDirectory
from schemas.keys import EncryptionKey, SigningKey
from schemas.mqttlink import BrokerLink
from spoke.config import SpokeConfig
from spoke.state import SpokeState


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class SpokeContext:
    config: SpokeConfig
    signing: SigningKey
    encryption: EncryptionKey
    state: SpokeState
    clock: Callable[[], int] = now_ms
    links: dict[str, BrokerLink] = field(default_factory=dict)
    verified: VerifiedDirectory | None = None

    @property
    def org(self) -> str:
        return self.config.org

    def directory(self) -> Directory | None:
        """The verified directory, or None if there is none or it expired (fail closed)."""
        if self.verified is None or self.clock() >= self.verified.directory.expires_at:
            return None
        return self.verified.directory

    async def publish_up(self, channel: str, payload: bytes) -> bool:
        """Publish on this organisation's up topic of ``channel``; False if not connected."""
        link = self.links.get(channel)
        if link is None:
            return False
        return await link.publish(topics.up(channel, self.org), payload)
