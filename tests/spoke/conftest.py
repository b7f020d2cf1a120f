"""Fixtures for the spoke agent's tests.

Sections are appended by the suites that need them; each says what it is for. Add a new
section at the end rather than changing one that is there.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from runtime.clock import now_ms
from schemas.directory import Directory, VerifiedDirectory, sign_directory, verify_directory
from schemas.envelope import VerifiedEnvelope, verify_envelope
from schemas.seal import open_bytes
from spoke.agent import FOLDERS
from spoke.config import Limits, SpokeConfig, SpokeSection
from spoke.context import SpokeContext
from spoke.files import is_ignored
from spoke.sender import Sender
from spoke.state import Outbound, SpokeState
from tests.hubproc import live_directory
from tests.world import World

# ---------------------------------------------------------------------------------------
# Offline spokes (test_bad_drops): the real Sender on real folders, with a verified
# directory and no MQTT link, so publishing simply returns False and everything sealed
# stays QUEUED in .spoke/queue and the state database.

SETTLE_WITHIN = 10.0  # hang guard for one settle(); a settle takes a fraction of a second
OFFLINE_LIMITS = Limits(
    stable_for=0.02, stable_for_unordered=0.3, metadata_wait=0.15, max_file_bytes=64 * 1024
)


@pytest.fixture
def verified_live(world: World) -> VerifiedDirectory:
    """The world's directory around the real clock, signed by the hub and verified."""
    frame = sign_directory(live_directory(world), world.hub_key)
    return verify_directory(frame, world.hub_key.public, now=now_ms())


@dataclass
class OfflineSpoke:
    """One organisation's Sender on real folders under ``root``, with no broker link."""

    ctx: SpokeContext
    sender: Sender

    @property
    def org(self) -> str:
        return self.ctx.org

    @property
    def directory(self) -> Directory:
        directory = self.ctx.directory()
        assert directory is not None
        return directory

    @property
    def outbox(self) -> Path:
        return self.ctx.config.folder("outbox")

    @property
    def failed(self) -> Path:
        return self.ctx.config.folder("failed")

    @property
    def queue(self) -> Path:
        return self.ctx.config.work / "queue"

    @property
    def work(self) -> Path:
        return self.ctx.config.work / "work"

    def drop(self, name: str, content: bytes | dict[str, bytes], meta: str) -> None:
        """Put ``name`` (a file, or a folder of files) into the outbox, then its metadata
        last, as an integrator does."""
        target = self.outbox / name
        if isinstance(content, dict):
            target.mkdir()
            for file_name, data in content.items():
                (target / file_name).write_bytes(data)
        else:
            target.write_bytes(content)
        self.write_meta(name, meta)

    def write_meta(self, name: str, meta: str, suffix: str = ".meta.toml") -> None:
        (self.outbox / f"{name}{suffix}").write_text(meta, encoding="utf-8")

    def pending(self) -> list[str]:
        """What is in the outbox that the agent should act on (ignored names left out)."""
        return sorted(e.name for e in os.scandir(self.outbox) if not is_ignored(e.name))

    async def settle(self, until: Callable[[], bool] | None = None) -> None:
        """scan() again and again until ``until()`` holds (default: the outbox holds nothing
        the agent should act on and nothing is being watched)."""

        def settled() -> bool:
            return not self.pending() and not self.sender.outbox.waiting()

        done = until or settled
        async with asyncio.timeout(SETTLE_WITHIN):
            while True:
                await self.sender.scan()
                if done():
                    return
                # the next look may come once a drop could have been stable long enough
                await asyncio.sleep(self.ctx.config.limits.stable_for / 2)

    def outbound(self) -> list[Outbound]:
        return self.ctx.state.outbound()

    def queued(self) -> list[Path]:
        return sorted(self.queue.iterdir())

    def sealed(self, out: Outbound) -> VerifiedEnvelope:
        """The envelope as the hub reads it (every recipient, from the slots if any)."""
        return verify_envelope(out.frame, self.directory, slots=out.slots)

    def open_as(self, world: World, out: Outbound, recipient: str) -> dict[str, bytes]:
        """The files of a sealed drop, as ``recipient`` opens them."""
        envelope = self.sealed(out)
        inner, contents = open_bytes(
            envelope, recipient, world.keys[recipient].encryption, out.body_path.read_bytes()
        )
        return {f.name: c for f, c in zip(inner.files, contents, strict=True)}


OfflineSpokeFactory = Callable[..., OfflineSpoke]


@pytest.fixture
def offline_spoke(
    world: World, verified_live: VerifiedDirectory, tmp_path: Path
) -> Iterator[OfflineSpokeFactory]:
    """``offline_spoke("jl.gov", limits=Limits(...))``: an OfflineSpoke in its own folder
    (folders made as SpokeAgent makes them); its state database is closed at teardown."""
    made: list[OfflineSpoke] = []

    def make(org: str = "jl.gov", *, limits: Limits = OFFLINE_LIMITS) -> OfflineSpoke:
        root = tmp_path / f"spoke-{org}-{len(made)}"
        config = SpokeConfig(
            spoke=SpokeSection(
                org=org,
                root=root,
                sign_key=root / "unused.sign.key",  # the keys are handed over directly
                enc_key=root / "unused.enc.key",
                hub_key=root / "unused.hub.pub.json",
            ),
            channels={},
            limits=limits,
        )
        for name in FOLDERS:
            config.folder(name).mkdir(parents=True)
        for name in ("work", "queue", "incoming"):
            (config.work / name).mkdir(parents=True)
        keys = world.keys[org]
        ctx = SpokeContext(
            config,
            keys.signing,
            keys.encryption,
            SpokeState(config.work / "state.db"),
            verified=verified_live,
        )
        sender = Sender(ctx)
        sender.recover()  # as the agent does at start
        spoke = OfflineSpoke(ctx, sender)
        made.append(spoke)
        return spoke

    yield make
    for spoke in made:
        spoke.ctx.state.close()


def snapshot(path: Path) -> dict[str, str]:
    """What ``path`` is, byte for byte: each file's SHA-256, each link's target, each
    special file's type; a folder maps its members' relative names."""
    out: dict[str, str] = {}

    def one(p: Path, key: str) -> None:
        st = p.lstat()
        if stat.S_ISLNK(st.st_mode):
            out[key] = f"symlink -> {p.readlink()}"
        elif stat.S_ISDIR(st.st_mode):
            out[key] = "folder"
            for child in sorted(p.iterdir()):
                one(child, f"{key}/{child.name}")
        elif stat.S_ISREG(st.st_mode):
            out[key] = f"sha256 {hashlib.sha256(p.read_bytes()).hexdigest()}"
        else:
            out[key] = f"mode {stat.S_IFMT(st.st_mode):o}"

    one(path, ".")
    return out


# ---------------------------------------------------------------------------------------
# End-to-end suites (test_e2e, test_crash, test_cli): a real hubd and real spoke agents as
# child processes (tests/spoke/procs.py). Every process an exchange made is killed at
# teardown.

from tests.spoke.procs import Exchange, make_exchange  # noqa: E402 - this section's own

ExchangeFactory = Callable[..., Exchange]


@pytest.fixture
def exchanges(world: World, tmp_path: Path) -> Iterator[ExchangeFactory]:
    """``exchanges("mosquitto", hub_toml=..., directory=..., start_hub=True)``: a hub on
    the embedded broker or on a Mosquitto of its own; ``.spoke(org)`` adds spokes."""
    made: list[Exchange] = []

    def make(broker_kind: str = "embedded", **kw: object) -> Exchange:
        exchange = make_exchange(
            tmp_path / f"exchange{len(made)}",
            world,
            broker_kind,
            **kw,  # type: ignore[arg-type]
        )
        made.append(exchange)
        return exchange

    yield make
    for exchange in made:
        exchange.close()
