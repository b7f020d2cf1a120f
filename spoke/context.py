"""What the spoke's parts share: configuration, keys, state, the links and the directory."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from runtime.clock import now_ms
from runtime.link import Link
from schemas import topics
from schemas.directory import Directory, VerifiedDirectory
from schemas.keys import EncryptionKey, SigningKey
from spoke.config import SpokeConfig
from spoke.dirbook import DirectoryBook
from spoke.keyring import Held, Keyring, KeySource, Ready, sending_gate
from spoke.state import SpokeState

log = structlog.get_logger("spoke")


@dataclass
class SpokeContext:
    config: SpokeConfig
    signing: SigningKey  # the configured pair; ``keyring`` holds it and any rotated pairs
    encryption: EncryptionKey
    state: SpokeState
    clock: Callable[[], int] = now_ms
    links: dict[str, Link] = field(default_factory=dict)
    verified: VerifiedDirectory | None = None
    keyring: Keyring | None = None  # default: the configured pair alone
    keys: KeySource | None = None  # where the key files are (None: keys handed over directly)
    book: DirectoryBook | None = None  # what it holds of the directory (the agent's)

    def __post_init__(self) -> None:
        if self.keyring is None:
            self.keyring = Keyring((self.signing,), (self.encryption,))

    @property
    def org(self) -> str:
        return self.config.org

    def directory(self) -> Directory | None:
        """The verified directory, or None if there is none or it expired (fail closed)."""
        if self.verified is None or self.clock() >= self.verified.directory.expires_at:
            return None
        return self.verified.directory

    def held_keys(self) -> Keyring:
        assert self.keyring is not None  # noqa: S101 - set in __post_init__
        return self.keyring

    def gate(self) -> Ready | Held:
        """May the spoke send now, and with which key (spoke.keyring.sending_gate)."""
        return sending_gate(self.verified, self.held_keys(), self.org, self.clock())

    def refresh_keys(self, *, force: bool = False) -> bool:
        """Re-read the key files if a key folder changed (or ``force``); True if the set
        of keys changed. A file that cannot be read is logged and left out."""
        if self.keys is None or not (force or self.keys.changed()):
            return False
        try:
            loaded = self.keys.load()
        except (OSError, ValueError) as exc:  # the configured files themselves went bad
            log.error("keys.unreadable", detail=str(exc))
            return False
        for problem in self.keys.problems:
            log.warning("keys.file_refused", detail=problem)
        before = self.held_keys().kids
        self.keyring = loaded
        if loaded.kids == before:
            return False
        log.info("keys.loaded", signing=list(loaded.kids[0]), encryption=list(loaded.kids[1]))
        return True

    async def publish_up(self, channel: str, payload: bytes) -> bool:
        """Publish on this organisation's up topic of ``channel``; False if not connected."""
        link = self.links.get(channel)
        if link is None:
            return False
        return await link.publish(topics.up(channel, self.org), payload)
