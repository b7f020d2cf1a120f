"""What is about to expire, and the state of every key: pure judgements that take ``now``.

``hubctl status`` (its warnings section), ``hubctl keys list`` and the running hub's log
(``key.expiring``, ``directory.expiring``, ``certificate.expiring`` and their ``.expired``
forms; :mod:`hubd.engine.trustwatch`) all judge with these functions, so the page an operator
reads and the log a monitor watches always agree. Reading certificate files is
:mod:`hubd.provision.certdates`' job; nothing here reads a file or the clock.

What warns:

- an organisation whose signing (or encryption) keys all end within the horizon: the
  warning names its key that ends last. A key that is closing because a newer one was
  rotated in does not warn, since the newer key carries on; revoked keys are left out
  (revocation is announced on its own);
- the hub's own key (it signs receipts; spokes refuse receipts outside its window);
- the directory (every spoke stops sending when it expires);
- each certificate (the hub's TLS client certificates and CA files for external brokers,
  and any certificate file or folder the operator lists in ``[expiry] certificates``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from schemas.clock import DAY_MS, ms_to_text
from schemas.directory import Directory, KeyEntry

DEFAULT_KEYS_DAYS = 14.0
DEFAULT_DIRECTORY_DAYS = 7.0


class Subject(StrEnum):
    KEY = "key"
    DIRECTORY = "directory"
    CERTIFICATE = "certificate"


@dataclass(frozen=True, slots=True)
class Deadline:
    """Something that stops working at ``not_after`` unless someone acts before."""

    subject: Subject
    name: str  # a key id, "v7" for the directory, a certificate's subject
    not_after: int
    org: str | None = None  # the key's owner (the hub's id for the hub's key)
    kind: str | None = None  # signing, encryption, hub; CA or client for certificates
    source: str | None = None  # the certificate's file


@dataclass(frozen=True, slots=True)
class Horizons:
    """How far ahead to warn, in milliseconds."""

    keys: int = int(DEFAULT_KEYS_DAYS * DAY_MS)  # keys and certificates
    directory: int = int(DEFAULT_DIRECTORY_DAYS * DAY_MS)

    def of(self, subject: Subject) -> int:
        return self.directory if subject is Subject.DIRECTORY else self.keys


@dataclass(frozen=True, slots=True)
class ExpiryWarning:
    deadline: Deadline
    now: int

    @property
    def expired(self) -> bool:
        return self.now >= self.deadline.not_after

    @property
    def days_left(self) -> float:
        """Days until the deadline (negative once it has passed), to one decimal."""
        return round((self.deadline.not_after - self.now) / DAY_MS, 1)

    @property
    def event(self) -> str:
        """The log event: key.expiring, directory.expired, certificate.expiring, ..."""
        return f"{self.deadline.subject.value}.{'expired' if self.expired else 'expiring'}"

    def fields(self) -> dict[str, Any]:
        """The log line's and ``--json``'s fields (never anything secret)."""
        d = self.deadline
        out: dict[str, Any] = {"subject": d.subject.value}
        if d.subject is Subject.KEY:
            out |= {"org": d.org, "kid": d.name, "kind": d.kind}
        elif d.subject is Subject.DIRECTORY:
            out["version"] = int(d.name.removeprefix("v"))
        else:
            out |= {"certificate": d.name, "kind": d.kind, "file": d.source}
        return out | {"not_after": ms_to_text(d.not_after), "days_left": self.days_left}

    def left(self) -> str:
        """'expires in 3 days (2026-12-06 10:00)' or 'expired 1 day ago (...)'."""
        when = ms_to_text(self.deadline.not_after)
        days = abs(self.days_left)
        span = f"{days:g} day{'' if days == 1 else 's'}"
        return f"expired {span} ago ({when})" if self.expired else f"expires in {span} ({when})"

    def sentence(self) -> str:
        """What expires when, and what to do, for the hub's operator."""
        d = self.deadline
        left = self.left()
        if d.subject is Subject.DIRECTORY:
            return (
                f"directory {d.name} {left}: spokes stop sending when it expires. Run "
                "'hubctl directory build', then 'systemctl reload hubd'"
            )
        if d.subject is Subject.CERTIFICATE:
            return (
                f"certificate {d.name} ({d.kind}, {d.source}) {left}. Renew it "
                "('hubctl broker-config --renew' for the ones it made) and install it"
            )
        if d.kind == "hub":
            return (
                f"the hub's key {d.name} {left}: spokes refuse receipts signed after it. "
                "Renew it before then (docs/operations.md, routine rotation)"
            )
        return (
            f"{d.org}'s last {d.kind} key {d.name} {left}, and no newer key is listed. Ask "
            f"{d.org} to run 'spoke keygen --rotate' and hand over the new public key file, "
            "then 'hubctl directory build'"
        )


def judge(
    deadlines: Iterable[Deadline], *, now: int, horizons: Horizons
) -> tuple[ExpiryWarning, ...]:
    """The deadlines that have passed or fall within their horizon, soonest first."""
    due = [ExpiryWarning(d, now) for d in deadlines if d.not_after - now <= horizons.of(d.subject)]
    return tuple(sorted(due, key=lambda w: (w.deadline.not_after, w.deadline.name)))


def directory_deadlines(directory: Directory) -> list[Deadline]:
    """The directory's own expiry, the hub's key, and each organisation's last key of
    each kind (revoked keys left out)."""
    out = [Deadline(Subject.DIRECTORY, f"v{directory.version}", directory.expires_at)]
    hub_last = _last(directory.hub_keys, directory)
    if hub_last is not None:
        out.append(Deadline(Subject.KEY, hub_last.kid, hub_last.not_after, directory.hub_id, "hub"))
    for org in directory.orgs:
        for kind, keys in (("signing", org.sign_keys), ("encryption", org.enc_keys)):
            last = _last(keys, directory)
            if last is not None:
                out.append(Deadline(Subject.KEY, last.kid, last.not_after, org.id, kind))
    return out


def _last(keys: Sequence[KeyEntry], directory: Directory) -> KeyEntry | None:
    usable = [k for k in keys if not directory.is_revoked(k.kid)]
    return max(usable, key=lambda k: (k.not_after, k.kid), default=None)


# ------------------------------------------------------------------ each key's state


class KeyState(StrEnum):
    """Where one key stands at ``now``."""

    CURRENT = "current"  # valid, and the newest valid key of its kind: it signs / is sealed to
    OVERLAP = "overlap"  # valid, but a newer key is valid too: it is being rotated out
    NOT_YET = "not yet valid"
    CLOSED = "closed"  # its window has ended
    REVOKED = "revoked"


@dataclass(frozen=True, slots=True)
class KeyRow:
    org: str
    kind: str  # signing | encryption | hub
    key: KeyEntry
    state: KeyState

    def as_json(self) -> dict[str, Any]:
        return {
            "org": self.org,
            "kind": self.kind,
            "kid": self.key.kid,
            "not_before": self.key.not_before,
            "not_after": self.key.not_after,
            "state": self.state.value,
        }


def key_rows(directory: Directory, *, now: int, org: str | None = None) -> list[KeyRow]:
    """Every key of the directory (or of ``org``) with its state at ``now``."""
    rows: list[KeyRow] = []
    groups: list[tuple[str, str, Sequence[KeyEntry]]] = [
        (directory.hub_id, "hub", directory.hub_keys)
    ]
    for entry in directory.orgs:
        groups += [(entry.id, "signing", entry.sign_keys), (entry.id, "encryption", entry.enc_keys)]
    for owner, kind, keys in groups:
        if org is not None and owner != org:
            continue
        valid = [
            k for k in keys if k.not_before <= now < k.not_after and not directory.is_revoked(k.kid)
        ]
        newest = max(valid, key=lambda k: (k.not_before, k.kid), default=None)
        rows.extend(KeyRow(owner, kind, key, _state(key, newest, directory, now)) for key in keys)
    return rows


def _state(key: KeyEntry, newest: KeyEntry | None, directory: Directory, now: int) -> KeyState:
    if directory.is_revoked(key.kid):
        return KeyState.REVOKED
    if now < key.not_before:
        return KeyState.NOT_YET
    if now >= key.not_after:
        return KeyState.CLOSED
    return KeyState.CURRENT if newest is not None and key.kid == newest.kid else KeyState.OVERLAP
