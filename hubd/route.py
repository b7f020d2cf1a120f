"""``hubctl route``: what the hub would do with a drop, without sending anything.

It reads what a spoke would send (a drop's metadata file and the sending organisation),
builds the document as a sending spoke does (groups expanded, the sender left out, 份号
assigned to a state secret), looks a 批复's 请示 up in the hub's store (read-only; the hub
may be running) and hands everything to the pure what-if report of :mod:`schemas.whatif`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from hubd import rulecheck
from hubd.config import load_config
from hubd.directory import hub_key_paths, read_directory
from hubd.store import engine_for, read_only_url
from runtime.files import load_signing_key
from schemas.directory import Directory
from schemas.errors import ConfigError, StoreError, XchgError
from schemas.keys import HubPublicKey
from schemas.labels import DocType
from schemas.metadata import DropMetadata, parse_metadata
from schemas.rules import Document, Referenced, settings_of
from schemas.whatif import WhatIf, what_if

DEFAULT_CONFIG = Path("config/hub.toml")
DEFAULT_HUB_KEYS = Path("certs/hub")


class RouteError(ValueError):
    """The question cannot be asked: a file, an option or an address is wrong (exit 2)."""


@dataclass(frozen=True, slots=True)
class Sources:
    """Where the directory, the key that verifies it and the store are."""

    directory: Path
    hub_public: bytes
    store_url: str | None  # None: no store known (no configuration)


@dataclass(frozen=True, slots=True)
class Answer:
    report: WhatIf
    looked_up: bool  # False: a 批复's reference could not be checked in the store
    note: str  # why not, or ""

    def render(self) -> str:
        text = self.report.render()
        return text + (f"note: {self.note}\n" if self.note else "")

    def as_json(self) -> dict[str, object]:
        return {**self.report.as_json(), "in_reply_to_checked": self.looked_up, "note": self.note}


def sources(config: Path | None, directory: Path | None, hub_pub: Path | None) -> Sources:
    """Resolve the options: explicit paths first, then the hub's configuration.

    Without --config, config/hub.toml is read if it exists, unless --directory says which
    directory to use (then no store is known, and a 批复's reference stays unchecked).
    """
    if config is None and directory is None and DEFAULT_CONFIG.is_file():
        config = DEFAULT_CONFIG
    settings = None
    if config is not None:
        try:
            settings = load_config(config)
        except ConfigError as exc:
            raise RouteError(str(exc)) from exc
    if directory is None:
        directory = (
            settings.hub.directory if settings is not None else DEFAULT_HUB_KEYS / "directory.bin"
        )
    try:
        public = _hub_public(hub_pub, settings.hub.key if settings is not None else None)
    except (OSError, ValueError, XchgError) as exc:
        raise RouteError(f"cannot read the hub's public key: {exc}; give --hub-pub") from exc
    return Sources(directory, public, None if settings is None else settings.store_url())


def _hub_public(hub_pub: Path | None, hub_key: Path | None) -> bytes:
    """--hub-pub; else hub.pub.json beside the hub's key; else the hub's own signing key."""
    if hub_pub is None and hub_key is not None:
        beside = hub_key_paths(hub_key.parent).public
        if not beside.is_file():
            return load_signing_key(hub_key)[1].public
        hub_pub = beside
    path = hub_pub if hub_pub is not None else DEFAULT_HUB_KEYS / "hub.pub.json"
    return HubPublicKey.load(path.read_bytes(), source=str(path)).public


def load_directory(where: Sources, *, now: int) -> Directory:
    try:
        return read_directory(where.directory, where.hub_public, now=now).directory
    except OSError as exc:
        raise RouteError(
            f"cannot read the directory {where.directory}: {exc.strerror}; give --directory "
            "or --config"
        ) from exc
    except (ValueError, XchgError) as exc:  # forged, expired, not a directory
        raise RouteError(f"the directory {where.directory} cannot be used: {exc}") from exc


def read_metadata(path: Path) -> DropMetadata:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise RouteError(f"cannot read the metadata file {path}: {exc.strerror}") from exc
    try:
        return parse_metadata(data, source=path.name)
    except ValueError as exc:
        raise RouteError(f"{path} cannot be used: {exc}") from exc


def document(metadata: DropMetadata, sender: str, directory: Directory) -> Document:
    """The document a spoke of ``sender`` would seal from ``metadata``."""
    if directory.org(sender) is None:
        raise RouteError(
            f"--from {sender}: no such organisation in directory v{directory.version}; "
            "'hubctl directory show' lists them"
        )
    try:
        to, cc = directory.addressees(metadata.to, metadata.cc, sender=sender)
    except ValueError as exc:
        raise RouteError(f"{exc}; check the address in the metadata") from exc
    if not to:
        raise RouteError(
            f"after expanding groups, no primary recipient (主送) remains besides {sender}; "
            "name at least one other organisation"
        )
    return Document.from_metadata(metadata, sender, to, cc)


async def look_up(store_url: str | None, in_reply_to: bytes) -> Referenced | None:
    """What the hub's store holds under ``in_reply_to``, read-only. Raises StoreError."""
    if store_url is None:
        raise StoreError("no hub configuration was given (--config)", retriable=False)
    engine = engine_for(read_only_url(store_url))
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(rulecheck.referenced_query(in_reply_to))).all()
    except (SQLAlchemyError, OSError) as exc:
        raise StoreError(f"cannot read the hub's store: {exc}", retriable=True) from exc
    finally:
        await engine.dispose()
    return rulecheck.referenced_from(rows)


async def route(
    metadata: DropMetadata,
    sender: str,
    directory: Directory,
    store_url: str | None,
    *,
    auto_cc: bool,
) -> Answer:
    doc = document(metadata, sender, directory)
    referenced, looked_up, note = None, True, ""
    if doc.doc_type is DocType.REPLY and doc.in_reply_to is not None:
        try:
            referenced = await look_up(store_url, doc.in_reply_to)
        except StoreError as exc:
            looked_up = False
            note = (
                f"the hub's store could not be read ({exc}), so whether in_reply_to names a "
                "请示 the recipient sent is unchecked here; the hub checks it on arrival"
            )
    report = what_if(
        doc,
        directory,
        settings_of(directory),
        referenced=referenced,
        looked_up=looked_up,
        auto_cc=auto_cc,
    )
    return Answer(report, looked_up, note)
