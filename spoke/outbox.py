"""The outbox: deciding when a drop is complete, claiming it, giving it back.

The contract (docs/integrators.md, "When a drop is complete"): put ``NAME`` (a file, or a
folder of files) into ``outbox/``, then write ``NAME.meta.toml`` or ``NAME.meta.json``
last. The spoke takes a drop only when it is complete, whatever order it was written in:

1. one metadata file names it (two are refused together);
2. nothing of it is a temporary (``.NAME.XXXXXX``, ``*.part``, ``*.tmp``, lock files): not
   inside a folder drop, and not beside a one-file drop;
3. nothing of it (every file, the folder's list of entries, the metadata file) has changed
   for ``stable_for`` seconds;
4. if the metadata file was not written last (the document changed after it appeared, or
   its files' ctimes are later than the metadata file's), the metadata file proves
   nothing and the drop must be unchanged for ``stable_for_unordered`` seconds;
5. if the metadata declares its files (``files``: size and/or SHA-256), rules 3-4 give
   way to the declaration: the drop is taken as soon as every declared file is there
   with its declared size and ``stable_for`` has passed, and refused if it still does
   not match after ``stable_for_unordered``.

The spoke claims a drop by renaming it into ``.spoke/work/<ms>-<msg_id>/`` (the document
first, the metadata last; the msg_id, fresh, is the drop's tracking id from then on), so
nothing leaves the outbox except into ``sent/`` or ``failed/``; a drop whose files change
while it is sealed is given back (:meth:`Outbox.unclaim`) and the rules start again.
Whatever sits in the outbox that can never become a drop is answered after
``metadata_wait`` seconds, never left without a word.
"""

from __future__ import annotations

import hashlib
import os
import stat
import time
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import structlog

from runtime.clock import now_ms
from runtime.files import fsync_dir
from schemas.errors import XchgError
from schemas.ids import msg_id_text, new_msg_id, parse_msg_id
from schemas.metadata import (
    MAX_METADATA_BYTES,
    DeclaredFile,
    MetadataError,
    name_key,
    parse_metadata,
)
from spoke.files import (
    durable_rename,
    is_clutter,
    is_ignored,
    is_temporary,
    meta_payload_name,
    name_problem,
    name_problem_zh,
    shown_name,
    temporary_of,
)
from spoke.refusals import Refusal, refuse

log = structlog.get_logger("spoke.outbox")

Stat = tuple[int, int, int, int, int]  # inode, mode, size, mtime_ns, ctime_ns


class Completeness(StrEnum):
    """Why the spoke took a drop as complete (status.json says it)."""

    METADATA_LAST = "metadata_last"  # the metadata file came last, then stable_for
    UNORDERED = "unordered"  # the metadata came first: stable_for_unordered of quiet
    DECLARED = "declared"  # every declared file had its declared size
    REFUSED = "refused"  # not complete, and never will be: taken to be refused
    RECOVERED = "recovered"  # claimed before a restart; the claim is finished at start


class Unmovable(XchgError):  # noqa: N818 - an outcome the sender explains, not a fault of ours
    """The spoke cannot move this drop out of the outbox (a permission, most likely)."""

    def __init__(self, name: str, error: OSError) -> None:
        super().__init__(f"{name}: {error}")
        self.name = name
        self.error = error


def _stat(st: os.stat_result) -> Stat:
    return (st.st_ino, st.st_mode, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@dataclass(frozen=True)
class Observed:
    """One look at a drop's document: a file, or a folder and its entries."""

    signature: tuple[object, ...]
    ctime: int  # the latest ctime of the document and its entries (ns)
    temporaries: tuple[str, ...]  # entries still being written (inside a folder)
    files: dict[str, tuple[Path, Stat]] | None  # the regular files to send, by name


def observe(path: Path) -> Observed | None:
    """The document at ``path`` as it is now; None if it is not there."""
    try:
        own = _stat(path.lstat())
    except FileNotFoundError:
        return None
    if not stat.S_ISDIR(own[1]):
        files = {path.name: (path, own)} if stat.S_ISREG(own[1]) else None
        return Observed((own,), own[4], (), files)
    try:
        entries = {e.name: _stat(e.stat(follow_symlinks=False)) for e in os.scandir(path)}
    except OSError as exc:  # unreadable (or vanishing): the checks will name it
        return Observed((own, exc.errno), own[4], (), None)
    names = set(entries)
    temporaries = tuple(sorted(n for n in names if is_temporary(n, names)))
    listing = tuple(sorted(entries.items()))
    ctime = max([own[4], *(s[4] for s in entries.values())])
    files = {
        n: (path / n, s)
        for n, s in entries.items()
        if stat.S_ISREG(s[1]) and not is_clutter(n, names)
    }
    return Observed((own, listing), ctime, temporaries, files)


@dataclass
class Watch:
    """What the outbox has seen of one name while it settles."""

    signature: tuple[object, ...]
    since: float  # when it last changed (monotonic seconds)
    meta: tuple[object, ...] = ()
    document: tuple[object, ...] = ()
    unordered: bool = False  # the document changed after its metadata file appeared
    declared: tuple[tuple[object, ...], tuple[DeclaredFile, ...]] | None = None  # (meta, files)
    digests: dict[Path, tuple[Stat, str]] = field(default_factory=dict)  # read once a version
    stuck: bool = False  # it could not be moved; tried again once something of it changes


@dataclass(frozen=True)
class Ready:
    """A drop to claim: complete, or never to be (then ``refusal`` says why)."""

    name: str  # the document (file or folder) in the outbox
    meta_names: tuple[str, ...]
    completeness: Completeness
    refusal: Refusal | None = None
    beside: tuple[str, ...] = ()  # temporaries of it, refused with it


@dataclass(frozen=True)
class Orphan:
    """Something in the outbox that can never become a drop by itself."""

    name: str
    refusal: Refusal
    key: str = ""  # what the outbox watches it as (lone:NAME, drop:NAME): see mark_stuck


@dataclass(frozen=True)
class Claimed:
    """A drop moved into the work area: ``work/NAME`` and its metadata file(s)."""

    name: str
    work: Path
    meta_names: tuple[str, ...]
    completeness: Completeness = Completeness.METADATA_LAST
    refusal: Refusal | None = None
    beside: tuple[str, ...] = ()  # temporaries of it, moved with it to be refused

    @property
    def payload(self) -> Path:
        return self.work / self.name

    @property
    def msg_id(self) -> bytes | None:
        """The drop's tracking id, given when the spoke took it (the work folder's name
        ends with it): the msg_id it is sealed with, or was refused under. None for a
        work folder of an older release."""
        return work_msg_id(self.work)

    @property
    def meta_name(self) -> str:
        return self.meta_names[0] if self.meta_names else f"{self.name}.meta.toml"

    @property
    def meta(self) -> Path:
        return self.work / self.meta_name


@dataclass
class Outbox:
    folder: Path
    work: Path
    stable_for: float
    metadata_wait: float
    stable_for_unordered: float = 30.0
    clock: Callable[[], int] = now_ms  # ms since the Unix epoch: a work folder's name
    _watches: dict[str, Watch] = field(default_factory=dict)

    # ------------------------------------------------------------------ scanning

    def scan(self, now: float | None = None) -> tuple[list[Ready], list[Orphan]]:
        """(drops to claim, orphans to fail) in the outbox right now.

        One name's trouble (it vanished, it cannot be read) never stops the others."""
        now = time.monotonic() if now is None else now
        try:
            names = {entry.name for entry in os.scandir(self.folder)}
        except FileNotFoundError:
            return [], []
        ready: list[Ready] = []
        orphans: list[Orphan] = []
        metas: dict[str, list[str]] = {}
        for name in names:
            payload = None if is_ignored(name) else meta_payload_name(name)
            if payload is not None:
                metas.setdefault(_matching(payload, names), []).append(name)
        temporaries = sorted(n for n in names if is_temporary(n))
        seen: set[str] = set()
        for document, meta_names in sorted(metas.items()):
            seen.add(f"drop:{document}")
            outcome = self._drop(document, tuple(sorted(meta_names)), temporaries, now)
            if isinstance(outcome, Ready):
                ready.append(outcome)
            elif isinstance(outcome, Orphan):
                orphans.append(outcome)
        for name in sorted(names - set(metas)):
            if is_ignored(name) or meta_payload_name(name) is not None:
                continue
            seen.add(f"lone:{name}")
            found = observe(self.folder / name)  # still being copied: its wait starts again
            signature = () if found is None else found.signature
            waited = self._waited(f"lone:{name}", signature, now)
            if waited >= self.metadata_wait and not self._watches[f"lone:{name}"].stuck:
                orphans.append(Orphan(name, self._lone(name), f"lone:{name}"))
        self._watches = {k: w for k, w in self._watches.items() if k in seen}
        return ready, orphans

    def waiting(self) -> bool:
        """Something in the outbox is being watched for completeness or for its metadata."""
        return bool(self._watches)

    def _waited(self, key: str, signature: tuple[object, ...], now: float) -> float:
        """Seconds ``key`` has been unchanged (0 the first time or after a change)."""
        watch = self._watches.get(key)
        if watch is None or watch.signature != signature:
            self._watches[key] = watch = Watch(signature, now)
        return now - watch.since

    def _drop(
        self, document: str, meta_names: tuple[str, ...], temporaries: list[str], now: float
    ) -> Ready | Orphan | None:
        key = f"drop:{document}"
        meta_stats = tuple(_lstat(self.folder / m) for m in meta_names)
        if len(meta_names) > 1:
            waited = self._waited(key, (meta_stats, _lstat(self.folder / document)), now)
            if waited < self.stable_for or self._watches[key].stuck:
                return None
            refusal = _two_metadata(document, meta_names)
            return Ready(document, meta_names, Completeness.REFUSED, refusal)
        if is_ignored(document):  # NAME.part.meta.toml: a name that is never sent
            waited = self._waited(key, meta_stats, now)
            if waited < self.metadata_wait or self._watches[key].stuck:
                return None
            refusal = refuse(
                "drop.temporary_name",
                metadata=shown_name(meta_names[0]),
                document=shown_name(document),
            )
            return Ready(document, meta_names, Completeness.REFUSED, refusal)
        beside = tuple(
            (n, _lstat(self.folder / n)) for n in temporaries if temporary_of(n, document)
        )
        seen = observe(self.folder / document)
        if seen is None:  # the metadata came first; a temporary of it may still be growing
            if self._waited(key, (meta_stats, beside), now) < self.metadata_wait:
                self._watches[key].unordered = True
                return None
            if self._watches[key].stuck:
                return None
            refusal = refuse(
                "drop.metadata_without_document",
                metadata=shown_name(meta_names[0]),
                document=shown_name(document),
                waited_s=self.metadata_wait,
            )
            return Orphan(meta_names[0], refusal, key)
        quiet = self._settle(key, meta_stats, seen, beside, now)
        if self._watches[key].stuck:
            return None  # it could not be moved, and nothing of it has changed since
        meta_ctime = max((s[4] for s in meta_stats if s is not None), default=0)
        # A tie counts as metadata last: renames within one clock tick share a ctime (the
        # temporary-then-rename pattern of docs/integrators.md), and making them wait
        # stable_for_unordered would hold back every quick, well-behaved drop.
        unordered = self._watches[key].unordered or seen.ctime > meta_ctime
        unfinished = [*seen.temporaries, *(n for n, _ in beside)]
        if unfinished:
            if quiet < self.metadata_wait:
                return None
            refusal = _incomplete(document, unfinished, self.metadata_wait)
            return Ready(
                document, meta_names, Completeness.REFUSED, refusal, tuple(n for n, _ in beside)
            )
        if quiet < self.stable_for:
            return None
        watch = self._watches[key]
        if watch.declared is None or watch.declared[0] != meta_stats:  # read once per version
            watch.declared = (meta_stats, _declared(self.folder / meta_names[0]))
        declared = watch.declared[1]
        if declared:
            matches = seen.files is not None and _matches(declared, seen.files, watch.digests)
            if not matches:
                if quiet < self.stable_for_unordered:
                    return None  # still being written, perhaps: the checks name it later
                return Ready(document, meta_names, Completeness.DECLARED)
            if all(d.sha256 for d in declared):
                return Ready(document, meta_names, Completeness.DECLARED)
            # sizes prove less (Windows sets a file's size before writing it): the order
            # and the quiet decide, as without a declaration
        if unordered:
            if quiet < self.stable_for_unordered:
                return None
            return Ready(document, meta_names, Completeness.UNORDERED)
        return Ready(document, meta_names, Completeness.METADATA_LAST)

    def _settle(
        self,
        key: str,
        meta: tuple[object, ...],
        seen: Observed,
        beside: tuple[object, ...],
        now: float,
    ) -> float:
        """Seconds the drop has been unchanged; notes a document changed after its metadata."""
        document = (seen.signature, beside)
        watch = self._watches.get(key)
        if watch is None:
            self._watches[key] = Watch((meta, document), now, meta, document)
            return 0.0
        if watch.meta == meta and watch.document == document:
            return now - watch.since
        watch.stuck = False  # something changed: the spoke may be able to move it now
        if watch.document != document and watch.meta == meta:
            watch.unordered = True  # written after the metadata file: not the commit marker
        elif watch.document == document:
            watch.unordered = False  # the metadata file written again, last: a new commit
        watch.signature, watch.since, watch.meta, watch.document = (
            (meta, document),
            now,
            meta,
            document,
        )
        return 0.0

    def _lone(self, name: str) -> Refusal:
        """Why a name without a metadata file is failed after metadata_wait."""
        problem = name_problem(name)
        if problem is not None:  # it could never be sent, metadata or not
            return refuse(
                "drop.bad_name",
                {"name": shown_name(name)},
                name=f"'{shown_name(name)}'",
                problem=problem,
                problem_zh=name_problem_zh(name),
            )
        return refuse(
            "drop.no_metadata",
            {"document": shown_name(name), "waited_s": self.metadata_wait},
            document=shown_name(name),
            waited_s=self.metadata_wait,
        )

    # ------------------------------------------------------------------ claiming

    def claim(self, ready: Ready) -> Claimed | None:
        """Move the drop into a fresh work folder: the document first, the marker last.

        None if part of it went away meanwhile; Unmovable if the spoke may not move it
        (then it is left alone until something of it changes). Either way what was moved
        goes back, and nothing is left in the work area."""
        # the drop's tracking id from this moment on: the msg_id it will be sealed with
        work = self.work / f"{self.clock()}-{msg_id_text(new_msg_id())}"
        work.mkdir(parents=True)
        fsync_dir(work.parent)
        moved: list[str] = []
        names = [ready.name] if _lstat(self.folder / ready.name) is not None else []
        try:
            for name in (*names, *ready.meta_names, *ready.beside):
                durable_rename(self.folder / name, work / name)
                moved.append(name)
        except OSError as exc:
            self._move(work, moved, self.folder)
            work.rmdir()
            self._watches.pop(f"drop:{ready.name}", None)
            if isinstance(exc, FileNotFoundError):
                return None
            # look again now, so that what the moves back changed is not taken for a change
            names_now = {p.name for p in self.folder.iterdir()}
            temporaries = sorted(n for n in names_now if is_temporary(n))
            self._drop(ready.name, ready.meta_names, temporaries, time.monotonic())
            self.mark_stuck(f"drop:{ready.name}")
            raise Unmovable(ready.name, exc) from exc
        self._watches.pop(f"drop:{ready.name}", None)
        return Claimed(
            ready.name, work, ready.meta_names, ready.completeness, ready.refusal, ready.beside
        )

    def mark_stuck(self, key: str) -> None:
        """``drop:NAME`` or ``lone:NAME`` cannot be moved: leave it until it changes."""
        watch = self._watches.get(key)
        if watch is not None:
            watch.stuck = True

    def unclaim(self, claimed: Claimed) -> bool:
        """Give a claimed drop back to the outbox (the document first, the marker last),
        where the completeness rules start again; False if a name there is taken."""
        names = (claimed.name, *claimed.meta_names)
        if any(_lstat(self.folder / n) is not None for n in names):
            return False
        for name in names:
            if _lstat(claimed.work / name) is not None:
                durable_rename(claimed.work / name, self.folder / name)
        claimed.work.rmdir()
        return True

    def recover(self, sealed: Callable[[Path], bool]) -> list[Claimed]:
        """Work folders a previous run left: finish claims and give-backs cut by a crash.

        Only at start-up, before anything else touches the work area. A folder whose drop
        was already sealed (``sealed(work)``) is left alone: the hub's answer moves what is
        in it into sent/ or failed/."""
        found: list[Claimed] = []
        if not self.work.exists():
            return found
        for work in sorted(p for p in self.work.iterdir() if p.is_dir()):
            try:
                self._recover_one(work, sealed, found)
            except Exception:  # one folder's trouble never keeps the others from recovery
                log.exception("outbox.recover_failed", work=work.name)
        return found

    def _recover_one(
        self, work: Path, sealed: Callable[[Path], bool], found: list[Claimed]
    ) -> None:
        """recover() for one work folder; a claim to finish is appended to ``found``."""
        entries = sorted(e.name for e in work.iterdir())
        metas = tuple(n for n in entries if meta_payload_name(n) is not None)
        docs = [n for n in entries if meta_payload_name(n) is None]
        if not entries:
            work.rmdir()
        elif sealed(work):
            return
        elif docs and metas:  # taken, not sealed: as it was taken, refusal and all
            named = _matching(meta_payload_name(metas[0]) or "", set(docs))
            document = named if named in docs else docs[0]
            beside = tuple(n for n in docs if n != document)  # temporaries taken with it
            refusal = None
            if len(metas) > 1:
                refusal = _two_metadata(document, metas)
            elif beside:
                refusal = _incomplete(document, beside, self.metadata_wait)
            found.append(Claimed(document, work, metas, Completeness.RECOVERED, refusal, beside))
        elif metas:  # a give-back cut after the document went home: finish it
            document = _matching(
                meta_payload_name(metas[0]) or "", {p.name for p in self.folder.iterdir()}
            )
            if _lstat(self.folder / document) is not None:
                self._move(work, metas, self.folder)
                work.rmdir()
            else:
                found.append(Claimed(document, work, metas, refusal=_lost(document)))
        else:  # a claim cut before its marker moved: fetch the marker, or give back
            document = docs[0]
            fetched = tuple(_metas_of(document, self.folder))
            if fetched:
                self._move(self.folder, fetched, work)
                found.append(Claimed(document, work, fetched, Completeness.RECOVERED))
            elif _lstat(self.folder / document) is None:
                self._move(work, (document,), self.folder)
                work.rmdir()
            else:  # the outbox has a new document of that name: this one fails
                found.append(Claimed(document, work, (), refusal=_lost(document)))

    @staticmethod
    def _move(source: Path, names: Iterable[str], target: Path) -> None:
        for name in names:
            durable_rename(source / name, target / name)


def work_msg_id(work: Path) -> bytes | None:
    """The msg_id a work folder ``<ms>-<msg_id>`` was claimed under (None: older name)."""
    _, _, tail = work.name.rpartition("-")
    try:
        return parse_msg_id(tail)
    except ValueError:
        return None


def _two_metadata(document: str, meta_names: tuple[str, ...]) -> Refusal:
    return refuse(
        "drop.two_metadata",
        {"document": shown_name(document), "metadata": [shown_name(m) for m in meta_names]},
        document=shown_name(document),
        metadata=", ".join(f"'{shown_name(m)}'" for m in meta_names),
    )


def _incomplete(document: str, unfinished: Iterable[str], waited_s: float) -> Refusal:
    names = list(unfinished)
    return refuse(
        "drop.incomplete",
        {"document": shown_name(document), "temporaries": [shown_name(t) for t in names]},
        document=shown_name(document),
        temporaries=", ".join(f"'{shown_name(t)}'" for t in names),
        waited_s=waited_s,
    )


def _lost(document: str) -> Refusal:
    return refuse(
        "drop.internal_error",
        {"document": shown_name(document)},
        error=f"a crash cut the claim of '{shown_name(document)}' in half, and its other half "
        "is no longer in the outbox",
    )


def _metas_of(document: str, folder: Path) -> Iterable[str]:
    """The metadata files in ``folder`` that name ``document``."""
    names = {p.name for p in folder.iterdir()}
    for name in sorted(names):
        payload = None if is_ignored(name) else meta_payload_name(name)
        if payload is not None and _matching(payload, names | {document}) == document:
            yield name


def _matching(payload: str, names: set[str]) -> str:
    """The document a metadata file names: ``payload`` itself, or else the one name that
    is the same text in another Unicode normalisation (a Mac writes NFD)."""
    if payload in names:
        return payload
    wanted = unicodedata.normalize("NFC", payload)
    same = [n for n in names if n != payload and unicodedata.normalize("NFC", n) == wanted]
    return same[0] if len(same) == 1 and meta_payload_name(same[0]) is None else payload


def _lstat(path: Path) -> Stat | None:
    try:
        return _stat(path.lstat())
    except OSError:
        return None


def _declared(meta: Path) -> tuple[DeclaredFile, ...]:
    """The files a metadata file declares; () if none, or if it cannot be read now (the
    checks after the claim say why)."""
    try:
        fd = os.open(meta, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return ()
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return ()
        data = os.read(fd, MAX_METADATA_BYTES + 1)
    except OSError:
        return ()
    finally:
        os.close(fd)
    try:
        return parse_metadata(data, source=meta.name).files
    except MetadataError:
        return ()


def _matches(
    declared: tuple[DeclaredFile, ...],
    files: dict[str, tuple[Path, Stat]],
    digests: dict[Path, tuple[Stat, str]],
) -> bool:
    """Every declared file is there, with its declared size and SHA-256 (read once per
    version of the file, kept in ``digests``), and nothing else is."""
    found = {name_key(n): entry for n, entry in files.items()}
    if set(found) != {name_key(d.name) for d in declared}:
        return False
    for d in declared:
        path, stat_ = found[name_key(d.name)]
        if d.size is not None and stat_[2] != d.size:
            return False
        if d.sha256 is not None:
            known = digests.get(path)
            if known is None or known[0] != stat_:
                known = digests[path] = (stat_, _sha256(path))
            if known[1] != d.sha256:
                return False
    return True


def _sha256(path: Path) -> str:
    """The file's SHA-256, never through a link, never blocking on a pipe; "" if unreadable."""
    digest = hashlib.sha256()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return ""
    with os.fdopen(fd, "rb") as source:
        try:
            while block := source.read(1 << 20):
                digest.update(block)
        except OSError:
            return ""
    return digest.hexdigest()
