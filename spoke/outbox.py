"""The outbox: finding committed drops, claiming them, and turning them into drafts.

The contract (docs/integrators.md): put ``NAME`` (a file, or a folder of files) into
``outbox/``, then write ``NAME.meta.toml`` or ``NAME.meta.json`` last; the metadata file
is the commit marker. Dot-files and ``*.part`` / ``*.tmp`` are never picked up. A drop is
taken only once nothing in it has changed for ``stable_for`` seconds; the agent claims it
by renaming it into ``.spoke/work/<token>/``, so nothing leaves the outbox except into
``sent/`` or ``failed/``.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from schemas.directory import Directory
from schemas.labels import Classification
from schemas.localfs import fsync_dir
from schemas.metadata import DropMetadata, MetadataError, parse_metadata
from schemas.rules import Document, Finding
from spoke.files import (
    Refusal,
    check_regular,
    durable_rename,
    is_ignored,
    meta_payload_name,
    name_problem,
)
from spoke.ruling import copied_as_needed, judge

log = structlog.get_logger("spoke.outbox")


@dataclass
class Seen:
    signature: tuple[object, ...]
    since: float


@dataclass(frozen=True)
class Claimed:
    """A drop moved into the work area: ``work/NAME`` and ``work/NAME.meta.*``."""

    name: str
    work: Path
    meta_name: str

    @property
    def payload(self) -> Path:
        return self.work / self.name

    @property
    def meta(self) -> Path:
        return self.work / self.meta_name


@dataclass(frozen=True)
class Orphan:
    """Something in the outbox that can never become a drop by itself."""

    name: str
    refusal: Refusal


@dataclass
class Outbox:
    folder: Path
    work: Path
    stable_for: float
    metadata_wait: float
    _seen: dict[str, Seen] = field(default_factory=dict)

    def _signature(self, path: Path) -> tuple[object, ...]:
        """Sizes and mtimes of everything under ``path``: a change means still being written."""
        try:
            st = path.lstat()
        except FileNotFoundError:
            return ("gone",)
        parts: list[object] = [st.st_size, st.st_mtime_ns, st.st_mode]
        if path.is_dir() and not path.is_symlink():
            for child in sorted(path.iterdir()):
                cst = child.lstat()
                parts += [child.name, cst.st_size, cst.st_mtime_ns]
        return tuple(parts)

    def _stable(self, key: str, path: Path, now: float) -> bool:
        signature = self._signature(path)
        seen = self._seen.get(key)
        if seen is None or seen.signature != signature:
            self._seen[key] = Seen(signature, now)
            return False
        return now - seen.since >= self.stable_for

    def scan(self, now: float | None = None) -> tuple[list[tuple[str, str]], list[Orphan]]:
        """(ready drops as (NAME, meta file name), orphans) in the outbox right now."""
        now = time.monotonic() if now is None else now
        try:
            names = {entry.name for entry in os.scandir(self.folder)}
        except FileNotFoundError:
            return [], []
        ready: list[tuple[str, str]] = []
        orphans: list[Orphan] = []
        claimed_payloads: set[str] = set()
        for name in sorted(names):
            if is_ignored(name):
                continue
            payload = meta_payload_name(name)
            if payload is None or is_ignored(payload):
                continue
            claimed_payloads.add(payload)
            if payload not in names:
                if self._waited(f"meta:{name}", now):
                    orphans.append(
                        Orphan(
                            name,
                            Refusal(
                                "drop.metadata_without_document",
                                f"'{name}' names the document '{payload}', which is not "
                                "in the outbox.",
                                "Put the document in first, then write the metadata file last.",
                                {"metadata": name, "document": payload},
                            ),
                        )
                    )
                continue
            stable_doc = self._stable(f"doc:{payload}", self.folder / payload, now)
            stable_meta = self._stable(f"meta:{name}", self.folder / name, now)
            if stable_doc and stable_meta:
                ready.append((payload, name))
        for name in sorted(names - claimed_payloads):
            if is_ignored(name) or meta_payload_name(name) is not None:
                continue
            if self._waited(f"orphan:{name}", now):
                orphans.append(
                    Orphan(
                        name,
                        Refusal(
                            "drop.no_metadata",
                            f"'{name}' has waited {self.metadata_wait:g} s without "
                            f"'{name}.meta.toml' or '{name}.meta.json'.",
                            "Write the metadata file next to the document (last, as the commit "
                            "marker); the document was moved to failed/ unchanged.",
                            {"document": name, "waited_s": self.metadata_wait},
                        ),
                    )
                )
        for key in list(self._seen):
            _, _, name = key.partition(":")
            if name not in names:
                del self._seen[key]
        return ready, orphans

    def waiting(self) -> bool:
        """Something in the outbox is being watched for stability or for its metadata."""
        return bool(self._seen)

    def _waited(self, key: str, now: float) -> bool:
        seen = self._seen.setdefault(key, Seen(("waiting",), now))
        return now - seen.since >= self.metadata_wait

    def claim(self, name: str, meta_name: str) -> Claimed:
        """Move the drop into a fresh work folder: the document first, the marker last."""
        work = self.work / f"{int(time.time() * 1000)}-{secrets.token_hex(4)}"
        work.mkdir(parents=True)
        fsync_dir(work.parent)
        durable_rename(self.folder / name, work / name)
        durable_rename(self.folder / meta_name, work / meta_name)
        self._seen.pop(f"doc:{name}", None)
        self._seen.pop(f"meta:{meta_name}", None)
        return Claimed(name, work, meta_name)

    def recover(self, sealed: Callable[[Path], bool]) -> list[Claimed]:
        """Work folders a previous run left: finish claims cut in half by a crash.

        Only at start-up, before anything else touches the work area. A folder whose drop
        was already sealed (``sealed(work)``) is left alone: the hub's answer moves what is
        in it into sent/ or failed/."""
        found: list[Claimed] = []
        if not self.work.exists():
            return found
        for work in sorted(p for p in self.work.iterdir() if p.is_dir()):
            entries = [e.name for e in work.iterdir()]
            metas = [n for n in entries if meta_payload_name(n) is not None]
            docs = [n for n in entries if meta_payload_name(n) is None]
            if not docs and not metas:
                work.rmdir()
                continue
            if sealed(work):
                continue
            if docs and not metas:
                name = docs[0]
                for suffix in (".meta.toml", ".meta.json"):
                    if (self.folder / f"{name}{suffix}").exists():
                        durable_rename(self.folder / f"{name}{suffix}", work / f"{name}{suffix}")
                        metas = [f"{name}{suffix}"]
                        break
                else:  # the marker never came: give the document back to the outbox
                    durable_rename(work / name, self.folder / name)
                    work.rmdir()
                    continue
            meta_name = metas[0]
            name = meta_payload_name(meta_name) or ""
            found.append(Claimed(name, work, meta_name))
        return found


@dataclass(frozen=True)
class Prepared:
    """A claimed drop that passed every check, the document rules included: what to seal."""

    claimed: Claimed
    metadata: DropMetadata
    files: list[tuple[str, Path]]  # (name in the document, path on disk)
    document: Document  # recipients expanded, auto_cc applied, 份号 assigned
    added_cc: tuple[str, ...]  # copies auto_cc (自动抄送) added
    warnings: tuple[Finding, ...]  # findings of rules set to warn: sent anyway
    channel: str

    @property
    def to(self) -> tuple[str, ...]:
        return self.document.to

    @property
    def cc(self) -> tuple[str, ...]:
        return self.document.cc


def prepare(
    claimed: Claimed, *, org: str, directory: Directory, max_file_bytes: int, max_files: int
) -> Prepared:
    """Check a claimed drop against the contract, the directory and the document rules, on
    exactly what will be sealed; Refusal if it fails."""
    try:
        metadata = parse_metadata(claimed.meta.read_bytes(), source=claimed.meta_name)
    except MetadataError as exc:
        raise bad_metadata(claimed.meta_name, exc) from exc
    files = _collect(claimed, max_file_bytes=max_file_bytes, max_files=max_files)
    to, cc = address(metadata, org=org, directory=directory)
    doc = Document.from_metadata(metadata, org, to, cc)
    doc, added = copied_as_needed(doc, directory, auto_cc=metadata.auto_cc)
    channel = _gate(doc, org=org, directory=directory)
    evaluation = judge(doc, directory)
    return Prepared(claimed, metadata, files, doc, added, evaluation.warnings, channel)


def bad_metadata(meta_name: str, exc: MetadataError) -> Refusal:
    return Refusal(
        "drop.bad_metadata",
        f"'{meta_name}' cannot be used: {exc}.",
        "Correct the metadata (see docs/integrators.md and schemas/metadata.schema.json) "
        "and drop the document again.",
        {"problems": [{"field": f, "problem": p} for f, p in exc.problems]},
    )


def address(
    metadata: DropMetadata, *, org: str, directory: Directory
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(to, cc) with groups expanded, this organisation left out; Refusal if unusable."""
    if directory.org(org) is None:
        raise Refusal(
            "drop.sender_unknown",
            f"this organisation ({org}) is not in directory version {directory.version}.",
            "Ask the hub operator to add it.",
            {"org": org},
        )
    try:
        to, cc = directory.addressees(metadata.to, metadata.cc, sender=org)
    except ValueError as exc:
        raise Refusal(
            "drop.unknown_recipient",
            f"{exc}.",
            "Check the address: 'spoke directory --config FILE' lists the organisations and "
            "groups this spoke knows.",
            {"to": metadata.to, "cc": metadata.cc},
        ) from exc
    if not to:
        raise Refusal(
            "drop.no_recipient",
            "after expanding groups, no primary recipient (主送) "
            "remains besides this organisation.",
            "Name at least one other organisation.",
            {"to": metadata.to},
        )
    return to, cc


def _gate(doc: Document, *, org: str, directory: Directory) -> str:
    """Clearances of everyone (copies auto_cc added included); the channel to send it on."""
    me = directory.org(org)
    assert me is not None  # noqa: S101 - address() checked it
    label = doc.classification
    _check_clearance(label, me.clearance, org, "this organisation")
    for recipient in doc.recipients:
        entry = directory.org(recipient)
        assert entry is not None  # noqa: S101 - expand() returned only known organisations
        _check_clearance(label, entry.clearance, recipient, entry.name_zh)
    channel = _uplink(directory, me.channels, label)
    if channel is None:
        raise Refusal(
            "drop.no_channel",
            f"this organisation is on {', '.join(me.channels)}, and "
            f"none of these channels carries {label}.",
            "Lower the label, or send it from "
            "an organisation provisioned on a channel that carries it.",
            {"classification": label.name, "channels": list(me.channels)},
        )
    return channel


def _check_clearance(label: Classification, clearance: Classification, org: str, name: str) -> None:
    if label > clearance:
        raise Refusal(
            "drop.above_clearance",
            f"classification {label} is above the clearance of {org} ({name}), which is "
            f"{clearance}.",
            "Send it only to organisations cleared for it, or lower the label if the "
            "document allows.",
            {"classification": label.name, "org": org, "clearance": clearance.name},
        )


def _uplink(directory: Directory, channels: tuple[str, ...], label: Classification) -> str | None:
    """The lowest-ceiling channel this organisation is on that admits ``label``."""
    admitting = [
        c for name in channels if (c := directory.channel(name)) is not None and c.ceiling >= label
    ]
    return min(admitting, key=lambda c: c.ceiling.rank).id if admitting else None


def _collect(claimed: Claimed, *, max_file_bytes: int, max_files: int) -> list[tuple[str, Path]]:
    payload = claimed.payload
    problem = name_problem(claimed.name)
    if problem is not None:
        raise Refusal(
            "drop.bad_name",
            f"the drop's name {claimed.name!r} {problem}.",
            "Rename it and drop it again.",
            {"name": repr(claimed.name)},
        )
    if payload.is_symlink() or not payload.is_dir():
        check_regular(payload, max_bytes=max_file_bytes)
        return [(claimed.name, payload)]
    # .DS_Store and the like stay with the drop unsent; a hostile name is never "ignored"
    entries = sorted(
        e for e in payload.iterdir() if not (is_ignored(e.name) and name_problem(e.name) is None)
    )
    if not entries:
        raise Refusal(
            "drop.empty_folder",
            f"the folder '{claimed.name}' is empty.",
            "Put the document and its attachments in it.",
            {"name": claimed.name},
        )
    if len(entries) > max_files:
        raise Refusal(
            "drop.too_many_files",
            f"the folder '{claimed.name}' holds {len(entries)} files; the limit is {max_files}.",
            "Bundle the attachments.",
            {"files": len(entries), "limit": max_files},
        )
    files = []
    for entry in entries:
        problem = name_problem(entry.name)
        if problem is not None:
            raise Refusal(
                "drop.bad_name",
                f"the file name {entry.name!r} in '{claimed.name}' {problem}.",
                "Rename the file and drop the document again.",
                {"name": repr(entry.name)},
            )
        if entry.is_dir() and not entry.is_symlink():
            raise Refusal(
                "drop.nested_folder",
                f"'{claimed.name}/{entry.name}' is a folder; a drop is one folder of files.",
                "Put every file directly in the drop folder.",
                {"name": entry.name},
            )
        check_regular(entry, max_bytes=max_file_bytes)
        files.append((entry.name, entry))
    return files
