"""The directory as spokes take it, whatever its size (docs/wire-format.md, section 7a).

The hub holds the whole directory (the operator's signed file). What it gives spokes is
derived from it (:mod:`schemas.dirtree`):

- a small signed **root** and the latest signed **change**, retained on every channel's
  ``dirroot`` topic: a spoke takes about a kilobyte when it connects and, when a version
  follows the one it holds, learns which entries changed without fetching anything;
- **entries with inclusion proofs** (and absences with their neighbours) in answer to a
  spoke's ``dir-get``, from memory: no store read, a bounded answer, a bounded rate per
  organisation.

The whole directory is still retained on the ``directory`` topic for spokes of earlier
releases while it fits their 8 MiB limit; a larger one is not published there (logged once
per version), and those spokes keep the last one they took until they are upgraded.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import structlog

from hubd.engine.arrival import Arrival
from hubd.engine.dispatch import Publish
from schemas import codec, dirtree, transport
from schemas.directory import VerifiedDirectory
from schemas.keys import SigningKey

log = structlog.get_logger("hubd.directory")

LEGACY_LIMIT: Final = 8 * 1024 * 1024  # what spokes of earlier releases decode (whole frame)
ANSWER_BUDGET: Final = 640 * 1024  # bytes of root, leaves and paths in one answer
BUSY: Final = "directory.busy"  # the asker went over its rate: ask again after a pause
BAD_REQUEST: Final = "directory.bad_request"  # keys that are not keys: a spoke's defect
ASKS_PER_SECOND: Final = 20.0  # per organisation, sustained
ASKS_BURST: Final = 200.0  # per organisation, at once (a spoke revalidating its cache)
ALL_PER_SECOND: Final = 2000.0  # all spokes together (about 3 ms of the hub's CPU each)
ALL_BURST: Final = 20000.0  # all spokes at once: 10,000 spokes starting take two each


@dataclass(slots=True)
class Bucket:
    tokens: float
    at: float


@dataclass(slots=True)
class Served:
    """One version as served: the tree, the signed root, the retained publication."""

    version: int
    tree: dirtree.DirectoryTree
    root_frame: bytes
    root_digest: bytes
    publication: bytes
    legacy: bytes | None  # the whole frame, while it fits an earlier spoke's limit
    changed: int | None  # keys the published change names (None: none published)
    delta: bytes | None = None  # the change frame published beside the root

    @property
    def carried_delta(self) -> bytes | None:
        """The change, in an answer too while root and change leave room for entries."""
        fits = len(self.root_frame) + len(self.delta or b"") <= ANSWER_BUDGET // 2
        return self.delta if fits else None

    @property
    def carried(self) -> int:
        """Bytes an answer to an asker of another version carries besides its entries."""
        return len(self.root_frame) + len(self.carried_delta or b"")


def build(
    verified: VerifiedDirectory, key: SigningKey, prior: Served | None
) -> Served:  # runs in a worker thread: no logging, no loop
    """Everything served for ``verified``; the change from ``prior`` when there is one to
    give (an older version, and not more keys than a change may name)."""
    tree = dirtree.DirectoryTree.of(verified.directory)
    root = dirtree.derive_root(verified.directory, verified.digest, tree)
    root_frame = dirtree.sign_root(root, key)
    root_digest = _signed_digest(root_frame)
    delta_frame, changed = None, None
    if prior is not None and prior.version < verified.version:
        keys = tree.changed_since(prior.tree)
        if len(keys) <= dirtree.DELTA_MAX:
            delta = dirtree.DirDelta(
                v=1,
                version=verified.version,
                prior=prior.version,
                prior_root=prior.root_digest,
                root=root_digest,
                changed=tuple(keys),
            )
            delta_frame, changed = dirtree.sign_delta(delta, key), len(keys)
    legacy = verified.frame if len(verified.frame) <= LEGACY_LIMIT else None
    return Served(
        verified.version,
        tree,
        root_frame,
        root_digest,
        dirtree.publication(root_frame, delta_frame),
        legacy,
        changed,
        delta_frame,
    )


def _signed_digest(root_frame: bytes) -> bytes:
    outer = codec.decode_map(root_frame, dirtree.ROOT_FRAME_LIMITS)
    return hashlib.sha256(outer["root"]).digest()


@dataclass
class DirectoryDesk:
    """Serves the directory's root, changes and entries (``ingest.dirdesk``)."""

    send: Publish
    key: SigningKey | None = None  # the hub's (set when it is loaded)
    monotonic: Callable[[], float] = time.monotonic
    served: Served | None = None
    _buckets: dict[str, Bucket] = field(default_factory=dict)
    _busy_told: set[str] = field(default_factory=set)
    _everyone: Bucket = field(default_factory=lambda: Bucket(ALL_BURST, 0.0))

    async def serve(self, verified: VerifiedDirectory) -> Served:
        """Derive what is served for ``verified`` (in a worker thread: a large directory
        takes seconds) and serve it from now on."""
        assert self.key is not None  # noqa: S101 - loaded before anything is served
        started = time.perf_counter()
        served = await asyncio.to_thread(build, verified, self.key, self.served)
        if self.served is not None and self.served.version > served.version:
            return self.served  # a reload overtook this one
        self.served = served
        log.info(
            "directory.root_served",
            version=served.version,
            entries=served.tree.size,
            root_bytes=len(served.root_frame),
            changed=served.changed,
            whole_published=served.legacy is not None,
            seconds=round(time.perf_counter() - started, 3),
        )
        if served.legacy is None:
            log.warning(
                "directory.whole_not_published",
                version=served.version,
                bytes=len(verified.frame),
                limit=LEGACY_LIMIT,
                error=(
                    f"目录整体 {len(verified.frame)} 字节，超过旧版分节点的 8 MiB 上限，"
                    "不再整体发布；请将各分节点升级到按需取目录的版本 / the whole directory is "
                    f"{len(verified.frame)} bytes, over the 8 MiB that spokes of earlier "
                    "releases take: it is not published whole; upgrade those spokes"
                ),
            )
        return served

    # ------------------------------------------------------------ entries on demand

    def answer_now(self, arrival: Arrival, message: transport.DirGetMsg) -> None:
        """Answer a spoke's request from memory, on its down topic. A refusal carries no
        root (nothing to amplify); an answer to an asker holding another version carries
        the root and its change, so it asks again only for what changed."""
        served = self.served
        if served is None:
            return
        if not self._admit(arrival.org):
            self._send(arrival, message.ask, served, None, [], [], BUSY)
            return
        try:
            keys = dirtree.read_ask(message.keys)
        except ValueError as exc:
            log.warning(BAD_REQUEST, org=arrival.org, channel=arrival.channel, error=str(exc))
            self._send(arrival, message.ask, served, None, [], [], BAD_REQUEST)
            return
        found, absent = served.tree.answer(keys)
        news = message.version != served.version
        carried = served.carried if news else 0
        found, absent = _within_budget(found, absent, ANSWER_BUDGET - carried)
        self._send(arrival, message.ask, served, served if news else None, found, absent, None)

    def _send(  # noqa: PLR0917 - the parts of one answer
        self,
        arrival: Arrival,
        ask: int,
        served: Served,
        carry: Served | None,
        found: list[dict[str, Any]],
        absent: list[dict[str, Any]],
        refusal: str | None,
    ) -> None:
        answer = dirtree.encode_answer(
            served.version,
            None if carry is None else carry.root_frame,
            found,
            absent,
            refusal,
            delta=None if carry is None else carry.carried_delta,
        )
        self.send(
            arrival.channel, arrival.org, transport.encode(transport.DirEntriesMsg(ask, answer))
        )

    def _admit(self, org: str) -> bool:
        """Within this organisation's rate and all spokes' together."""
        now = self.monotonic()
        everyone = self._everyone
        everyone.tokens = min(ALL_BURST, everyone.tokens + (now - everyone.at) * ALL_PER_SECOND)
        everyone.at = now
        if everyone.tokens < 1.0:
            return False
        everyone.tokens -= 1.0
        bucket = self._buckets.get(org)
        if bucket is None:
            bucket = self._buckets[org] = Bucket(ASKS_BURST, now)
        bucket.tokens = min(ASKS_BURST, bucket.tokens + (now - bucket.at) * ASKS_PER_SECOND)
        bucket.at = now
        if bucket.tokens < 1.0:
            if org not in self._busy_told:  # once until it slows down
                self._busy_told.add(org)
                log.warning("directory.asks_limited", org=org, per_second=ASKS_PER_SECOND)
            return False
        bucket.tokens -= 1.0
        self._busy_told.discard(org)
        return True


def _size(item: dict[str, Any] | None) -> int:
    if item is None:
        return 0
    return len(item["leaf"]) + 33 * len(item["path"]) + 16


def _within_budget(
    found: list[dict[str, Any]], absent: list[dict[str, Any]], budget: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """As many answers as fit one message; the spoke asks again for the rest."""
    spent = 0
    kept_found: list[dict[str, Any]] = []
    kept_absent: list[dict[str, Any]] = []
    for item in found:
        spent += _size(item)
        if spent > budget:
            return kept_found, kept_absent  # the asker asks again for the rest
        kept_found.append(item)
    for gap in absent:
        spent += _size(gap["below"]) + _size(gap["above"]) + 80
        if spent > budget:
            break
        kept_absent.append(gap)
    return kept_found, kept_absent
