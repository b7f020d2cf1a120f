"""What this spoke holds of the directory: its signed root and the entries it has needed
(docs/wire-format.md, section 7a).

The spoke never takes the whole directory. It takes the root retained on each channel's
``dirroot`` topic (about a kilobyte) and asks the hub for the entries it needs, when it
needs them: its own and its line up to the top when it starts; a document's recipients
(its groups' pages and their members), and their lines, before it judges and seals it;
the sender of a document that arrives. Each entry comes with its inclusion proof against
the root it holds, and an organisation that is not listed comes with the proof that it
is not. A change of version names the entries it changed (the retained change), so the
spoke drops exactly those and asks again for the ones it holds; without a change it can
use (it was away longer), it asks again for all it holds. What it holds is kept in
``state.db`` (the entries were proven when they came; the file is the agent's own, as the
rest of its state), so a restart asks for nothing it already has.

:meth:`DirectoryBook.verified` is the part held, as the
:class:`~schemas.directory.Directory` the rest of the spoke judges and seals with;
:meth:`DirectoryBook.closure` makes sure it holds what a document needs first.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

import structlog

from schemas import codec, dirtree, transport
from schemas.directory import GROUP_PREFIX, Directory, OrgEntry, VerifiedDirectory
from schemas.dirtree import Entry, GroupPage, VerifiedRoot
from schemas.errors import DirectoryError, PeerError, Reason, TransportError, XchgError
from schemas.ids import org_id_problem
from spoke.state import SpokeState

log = structlog.get_logger("spoke.directory")

ASK_TIMEOUT: Final = 15.0  # seconds for the hub's answer to one request
BUSY_PAUSE: Final = 1.0  # seconds before asking again after directory.busy
ROUNDS: Final = 16  # a line is at most this deep (national, province, ... department)
IN_FLIGHT: Final = 4  # requests outstanding at once

Publish = Callable[[bytes], Awaitable[bool]]  # on an up topic of a connected channel


class DirectoryUnavailableError(TransportError):
    """The hub did not answer for the directory entries a step needs: try again later."""


class _AskAgain(XchgError):  # noqa: N818 - an internal signal, never raised out of the book
    """The answer was for another version (now adopted) or the hub was busy."""

    def __init__(self, pause: float = 0.0) -> None:
        super().__init__("ask again")
        self.pause = pause


@dataclass
class DirectoryBook:
    state: SpokeState
    pinned: bytes
    clock: Callable[[], int]
    publish: Publish | None = None  # set by the agent; None: no connection to ask on
    root: VerifiedRoot | None = None
    entries: dict[str, Entry] = field(default_factory=dict)
    proven_at: dict[str, int] = field(default_factory=dict)  # key -> root version it holds for
    absent: set[str] = field(default_factory=set)  # proven absent from the root held
    verified: VerifiedDirectory | None = None  # what the rest of the spoke uses
    on_change: Callable[[], None] | None = None  # the held part or the root changed
    _seen: tuple[int, bytes] | None = None  # the newest root kept, even if it no longer verifies
    _asks: dict[int, tuple[list[str], asyncio.Future[None]]] = field(default_factory=dict)
    _numbers: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(IN_FLIGHT))
    _behind: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(1))
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # a root and what it proves

    @property
    def stale(self) -> set[str]:
        """Entries held from an earlier root and not yet asked again: used as they were
        until a document needs them (closure asks first), a revocation being in the root."""
        version = None if self.root is None else self.root.version
        return {k for k, v in self.proven_at.items() if v != version}

    # ------------------------------------------------------------------ state

    def load(self) -> None:
        """What an earlier run kept (the root verified again: rollback and freshness are
        judged by whoever uses it); entries proven under another root are stale."""
        self._seen = self.state.dir_root_seen()
        frame = self.state.dir_root()
        if frame is None:
            return
        try:
            self.root = dirtree.verify_root(frame, self.pinned, now=None)
        except PeerError as exc:
            log.warning("directory.cached_refused", reason=exc.reason.value, detail=exc.message)
            return
        for key, leaf, version in self.state.dir_entries():
            try:
                self.entries[key] = dirtree.read_leaf(leaf)
            except PeerError:
                continue  # an entry the store garbled is asked for again when needed
            self.proven_at[key] = version
        self._rebuild()

    def _rebuild(self) -> None:
        root = self.root
        if root is None:
            self.verified = None
            return
        directory = dirtree.materialise(root.root, self.entries.values())
        self.verified = VerifiedDirectory(directory, root.frame, root.digest)
        if self.on_change is not None:
            self.on_change()

    def _last_seen(self) -> tuple[int, bytes] | None:
        """The newest root accepted: the one held, else the one kept (a root that no
        longer verifies, after the hub key was re-pinned, still bounds a rollback)."""
        if self.root is not None:
            return (self.root.version, self.root.digest)
        return self._seen

    # ------------------------------------------------------------------ the root

    async def take_publication(self, payload: bytes) -> bool:
        """The retained root (and change) of a channel: True if the root held changed."""
        try:
            root_frame, delta_frame = dirtree.read_publication(payload)
        except PeerError as exc:
            log.error("directory.refused", reason=exc.reason.value, detail=exc.message)
            return False
        return await self.adopt(root_frame, delta_frame)

    async def adopt(self, root_frame: bytes, delta_frame: bytes | None) -> bool:
        """A root (and its change): verified against the newest accepted, one at a time."""
        async with self._lock:
            return await self._adopt(root_frame, delta_frame)

    async def _adopt(self, root_frame: bytes, delta_frame: bytes | None) -> bool:
        current = self.root
        try:
            root = dirtree.verify_root(
                root_frame, self.pinned, now=self.clock(), last_seen=self._last_seen()
            )
            self._check_continuity(root)
        except PeerError as exc:
            log.error("directory.refused", reason=exc.reason.value, detail=exc.message)
            return False
        if current is not None and root.digest == current.digest:
            return False
        changed: list[str] | None = None  # None: every entry held is asked for again
        if current is not None and delta_frame is not None:
            try:
                delta = dirtree.verify_delta(delta_frame, self.pinned, root)
            except PeerError as exc:
                log.warning("directory.change_refused", reason=exc.reason.value)
            else:
                if (delta.prior, delta.prior_root) == (current.version, current.digest):
                    changed = list(delta.changed)
        prior = None if current is None or changed is None else current.version
        await asyncio.to_thread(
            self.state.save_dir_root, root.version, root.digest, root.frame, prior, changed or []
        )
        self.root, self._seen = root, (root.version, root.digest)
        self.absent.clear()
        if prior is not None:  # unchanged entries hold for the new root as they were
            unchanged = set(self.proven_at) - set(changed or [])
            for key in unchanged:
                if self.proven_at[key] == prior:
                    self.proven_at[key] = root.version
        again = sorted(self.stale)
        self._rebuild()
        log.info(
            "directory.updated",
            version=root.version,
            previous_version=None if current is None else current.version,
            orgs=root.root.orgs,
            revoked=len(root.root.revoked),
            held=len(self.entries),
            asked_again=len(again),
        )
        if again:
            asyncio.get_running_loop().create_task(self._refetch(again))
        return True

    def _check_continuity(self, root: VerifiedRoot) -> None:
        """Against the whole directory an earlier release kept: its version and bytes
        (the root names the latter as ``full``), so an upgrade keeps rollback protection."""
        if self._last_seen() is not None:
            return
        seen = self.state.directory_seen()
        if seen is None:
            return
        version, digest = seen
        if root.version < version:
            raise DirectoryError(
                Reason.DIR_ROLLBACK,
                f"directory version {root.version} is older than version {version} already "
                "seen; refusing the rollback",
            )
        if root.version == version and root.root.full != digest:
            raise DirectoryError(
                Reason.DIR_EQUIVOCATION,
                f"directory version {root.version} is not the directory of that number "
                "already seen; refusing it",
            )

    async def _refetch(self, keys: list[str]) -> None:
        """Ask again in the background for what a new root made stale, one request at a
        time (what a document needs asks beside it), again later if the hub is away."""
        for pause in (0.0, 5.0, 30.0, 120.0):
            await asyncio.sleep(pause)
            try:
                async with self._behind:  # one batch at a time: a document's asks go first
                    for i in range(0, len(keys), dirtree.ASK_MAX):
                        await self.ensure(
                            [k for k in keys[i : i + dirtree.ASK_MAX] if k in self.stale]
                        )
            except DirectoryUnavailableError as exc:
                log.info("directory.refetch_deferred", keys=len(keys), detail=str(exc))
            else:
                return

    # ------------------------------------------------------------------ entries

    def missing(self, keys: Iterable[str]) -> list[str]:
        stale = self.stale
        return [
            k
            for k in dict.fromkeys(keys)
            if (k not in self.entries or k in stale) and k not in self.absent
        ]

    async def ensure(self, keys: Iterable[str]) -> None:
        """Hold every one of ``keys`` (or know it absent), proven under the root held;
        DirectoryUnavailableError if the hub cannot be asked or does not answer."""
        keys = list(keys)
        for _ in range(ROUNDS):
            missing = self.missing(keys)
            if not missing:
                return
            batches = [
                missing[i : i + dirtree.ASK_MAX] for i in range(0, len(missing), dirtree.ASK_MAX)
            ]
            await asyncio.gather(*(self._ask(batch) for batch in batches))
        if self.missing(keys):
            raise DirectoryUnavailableError(
                f"the hub answered without {len(self.missing(keys))} directory entries asked "
                "for; trying again later"
            )

    async def _ask(self, keys: list[str]) -> None:
        async with self._slots:
            for _ in range(ROUNDS):
                try:
                    await self._ask_once(keys)
                except _AskAgain as again:
                    if again.pause:
                        await asyncio.sleep(again.pause)
                    continue
                return

    async def _ask_once(self, keys: list[str]) -> None:
        publish, root = self.publish, self.root
        if publish is None or root is None:
            raise DirectoryUnavailableError(
                "no directory root yet, or no connection to the hub to ask for entries"
            )
        number = next(self._numbers)
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._asks[number] = (keys, waiter)
        try:
            message = transport.DirGetMsg(number, root.version, dirtree.encode_ask(keys))
            if not await publish(transport.encode(message)):
                raise DirectoryUnavailableError("the request for directory entries was not sent")
            try:
                async with asyncio.timeout(ASK_TIMEOUT):
                    await waiter
            except TimeoutError as exc:
                raise DirectoryUnavailableError(
                    f"the hub did not answer a request for directory entries in {ASK_TIMEOUT:g} s"
                ) from exc
        finally:
            self._asks.pop(number, None)

    async def take_answer(self, message: transport.DirEntriesMsg) -> None:
        """An answer on the down topic: proven entries and absences go into the book,
        only if the root they are proven under is still the one held."""
        pending = self._asks.pop(message.ask, None)
        if pending is None:
            return  # late (timed out), answered twice, or not ours
        keys, waiter = pending
        try:
            version, root_frame, refusal, outer = dirtree.read_answer(message.answer)
            if refusal == "directory.busy":
                _settle(waiter, _AskAgain(BUSY_PAUSE))
                return
            if refusal is not None:
                _settle(
                    waiter, DirectoryUnavailableError(f"the hub refused the request: {refusal}")
                )
                return
            root = self.root
            if root is None or version != root.version:
                if root_frame is None or not await self.adopt(root_frame, outer["delta"]):
                    _settle(
                        waiter,
                        DirectoryUnavailableError(
                            f"the hub answered for directory version {version}, which this "
                            "spoke does not take"
                        ),
                    )
                    return
                _settle(waiter, _AskAgain())  # the hub's root now held: ask against it
                return
            answer = dirtree.verify_answer(message.answer, root, keys)
        except PeerError as exc:
            log.error("directory.answer_refused", reason=exc.reason.value, detail=exc.message)
            _settle(waiter, DirectoryUnavailableError(f"a directory answer was refused: {exc}"))
            return
        async with self._lock:
            if self.root is not root:
                _settle(waiter, _AskAgain())  # a new root came meanwhile: ask against it
                return
            fresh = [(k, dirtree.leaf_bytes(e)) for k, e in answer.entries.items()]
            gone = [k for k in answer.absent if k in self.entries]
            await asyncio.to_thread(self.state.save_dir_entries, fresh, root.version, gone)
            self.entries.update(answer.entries)
            for key in answer.entries:
                self.proven_at[key] = root.version
            self.absent |= answer.absent
            for key in answer.absent:  # listed under an earlier root, no longer
                self.entries.pop(key, None)
                self.proven_at.pop(key, None)
            self._rebuild()
        _settle(waiter, None)

    # ------------------------------------------------------------------ what a step needs

    async def closure(self, addresses: Iterable[str], sender: str) -> None:
        """Hold what judging and sealing a document from ``sender`` to ``addresses``
        reads (:func:`needed`), asking for it round by round (a group's members, then
        their lines)."""
        addresses = list(addresses)
        for _ in range(ROUNDS):
            missing = self.needed_for(sender, addresses)
            if not missing:
                return
            await self.ensure(sorted(missing))
        raise DirectoryUnavailableError("the directory entries a document needs did not settle")

    def needed_for(self, org: str, addresses: Iterable[str] = ()) -> set[str]:
        """What :meth:`closure` would ask for now."""
        return needed(self.entries, self.absent, addresses, org, stale=self.stale)

    async def own_line(self, org: str) -> None:
        """This spoke's entry and its line, for its own checks and its documents."""
        await self.closure((), org)


def needed(
    entries: Mapping[str, Entry],
    absent: Iterable[str],
    addresses: Iterable[str],
    sender: str,
    *,
    stale: Iterable[str] = (),
) -> set[str]:
    """The keys not held that a document from ``sender`` to ``addresses`` reads, given
    what is held: the sender and every recipient with their lines (parents up to the top,
    the government a congress belongs to), every page of every group named and its
    members with theirs. Empty when everything is held (or known absent)."""
    want = {sender}
    for address in addresses:
        if address.startswith(GROUP_PREFIX):
            want.add(dirtree.page_key(address[len(GROUP_PREFIX) :]))
        elif org_id_problem(address) is None:
            want.add(address)
    known, old = set(absent), set(stale)
    missing: set[str] = set()
    todo = list(want)
    while todo:
        key = todo.pop()
        entry = entries.get(key)
        if entry is None or key in old:
            if key not in known:
                missing.add(key)
            if entry is None:
                continue
        for more in _references(entry):
            if more not in want:
                want.add(more)
                todo.append(more)
    return missing


def root_size(frame: bytes | None) -> int | None:
    """The number of entries of a kept root (not verified: a count for the ``spoke``
    command to know whether it holds every entry)."""
    if frame is None:
        return None
    outer = codec.decode_map(frame, dirtree.ROOT_FRAME_LIMITS)
    body = outer.get("root")
    if not isinstance(body, bytes):
        return None
    size = codec.decode_map(body, dirtree.ROOT_LIMITS).get("size")
    return size if isinstance(size, int) else None


def held_directory(state: SpokeState, pinned: bytes, *, now: int | None) -> Directory | None:
    """The part of the directory an agent holds in ``state`` (for the ``spoke`` command);
    with ``now``, None once its root has expired. None if there is no usable root."""
    frame = state.dir_root()
    if frame is None:
        return None
    try:
        root = dirtree.verify_root(frame, pinned, now=now)
    except PeerError:
        return None
    entries = []
    for _, leaf, _ in state.dir_entries():
        with contextlib.suppress(PeerError):
            entries.append(dirtree.read_leaf(leaf))
    return dirtree.materialise(root.root, entries)


def _references(entry: Entry | None) -> set[str]:
    if entry is None:
        return set()
    if isinstance(entry, OrgEntry):
        found = {entry.parent} if entry.parent else set()
        if entry.congress_of:
            found.add(entry.congress_of)
        return found
    assert isinstance(entry, GroupPage)  # noqa: S101 - the two kinds of entry
    pages = {dirtree.page_key(entry.id, i) for i in range(entry.pages)}
    return pages | set(entry.members)


def _settle(waiter: asyncio.Future[None], outcome: BaseException | None) -> None:
    if waiter.done():
        return
    if outcome is None:
        waiter.set_result(None)
    else:
        waiter.set_exception(outcome)


def peek_sender(frame: bytes, limits: codec.Limits = codec.FRAME_LIMITS) -> str | None:
    """The ``from`` of an envelope (or receipt) frame (outside its signature: it names the
    key that verifies it), to fetch that organisation's entry before verifying; None if
    unreadable."""
    try:
        outer = codec.decode_map(frame, limits)
    except PeerError:
        return None
    sender = outer.get("from")
    return sender if isinstance(sender, str) and org_id_problem(sender) is None else None
