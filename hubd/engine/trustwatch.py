"""The running hub's watch over keys and time.

- Expiry warnings in the log, days ahead: at start, after every reload and once a day
  while running (``key.expiring``, ``directory.expiring``, ``certificate.expiring``, or
  ``.expired`` once the moment has passed; ``certificate.unreadable`` for a certificate
  file that cannot be checked). The judgement is :func:`schemas.expiry.judge`, the one
  ``hubctl status`` prints.
- Trust changes as security events and in the audit ledger: ``directory.loaded`` at start
  (its version and every revoked key), ``directory.reloaded`` after SIGHUP with the keys
  it added and dropped, and ``key.revoked`` for every key the new directory revokes, with
  the owner and the operator's reason from the revocation register
  (:mod:`hubd.provision.revocations`). From that moment the hub refuses what the key signs.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import structlog

from hubd.config import HubConfig
from hubd.provision.certdates import certificate_files, read_deadlines
from hubd.provision.revocations import Revocation, load_register, reasons, register_path
from hubd.store.audit import AuditEvent
from schemas.clock import DAY_MS
from schemas.directory import Directory, VerifiedDirectory
from schemas.expiry import ExpiryWarning, Horizons, directory_deadlines, judge
from schemas.keys import KeyKind

log = structlog.get_logger("hubd.expiry")
security = structlog.get_logger("hubd.security")

_KIND = {KeyKind.SIGN: "signing", KeyKind.ENCRYPT: "encryption"}


def horizons_of(config: HubConfig) -> Horizons:
    return Horizons(
        keys=int(config.expiry.warn_days * DAY_MS),
        directory=int(config.expiry.directory_warn_days * DAY_MS),
    )


def warnings_for(
    config: HubConfig, directory: Directory | None, *, now: int
) -> tuple[tuple[ExpiryWarning, ...], list[str]]:
    """(expiry warnings, certificate files that could not be checked) at ``now``."""
    deadlines = [] if directory is None else directory_deadlines(directory)
    certs, unreadable = read_deadlines(certificate_files(config))
    found = judge([*deadlines, *certs], now=now, horizons=horizons_of(config))
    return found, [u.sentence() for u in unreadable]


class TrustWatch:
    """One per hub: logs expiry warnings, and audits what each directory changes."""

    def __init__(self, config: HubConfig, clock: Callable[[], int]) -> None:
        self.config = config
        self.clock = clock
        self.register = register_path(config.hub.directory)
        self.last_warned: int | None = None

    # ------------------------------------------------------------------ expiry

    def warn(self, directory: Directory | None, *, when: str) -> tuple[ExpiryWarning, ...]:
        """Log every expiry warning now (``when``: start, reload, daily)."""
        now = self.clock()
        self.last_warned = now
        found, unreadable = warnings_for(self.config, directory, now=now)
        for warning in found:
            emit = log.error if warning.expired else log.warning
            emit(warning.event, checked=when, **warning.fields())
        for problem in unreadable:
            log.warning("certificate.unreadable", checked=when, detail=problem)
        return found

    def due(self) -> bool:
        """Whether a day has passed on the hub's clock since the last warnings."""
        return self.last_warned is None or self.clock() - self.last_warned >= DAY_MS

    async def run(self, directory: Callable[[], Directory | None]) -> None:
        """Warn once a day while running (looking every ``[expiry] check_every`` s)."""
        while True:
            await asyncio.sleep(self.config.expiry.check_every)
            if self.due():
                with contextlib.suppress(OSError):  # a file vanishing mid-read: next time
                    self.warn(directory(), when="daily")

    # ------------------------------------------------------------------ trust changes

    def _reasons(self) -> dict[str, Revocation]:
        try:
            return reasons(load_register(self.register))
        except ValueError as exc:
            log.warning("revocations.unreadable", file=str(self.register), detail=str(exc))
            return {}

    def loaded(self, verified: VerifiedDirectory) -> list[AuditEvent]:
        """At start: what directory the hub serves, and every key it revokes."""
        d = verified.directory
        detail: dict[str, object] = {
            "version": d.version,
            "sha256": verified.digest.hex(),
            "expires_at": d.expires_at,
            "revoked": list(d.revoked),
        }
        return [AuditEvent("directory.loaded", self.clock(), None, d.hub_id, detail)]

    def reloaded(self, old: VerifiedDirectory, new: VerifiedDirectory) -> list[AuditEvent]:
        """After a reload: a security event and an audit entry per newly revoked key, and
        the reload itself with the keys the new version added and dropped."""
        now = self.clock()
        before, after = old.directory, new.directory
        old_kids, new_kids = _kids(before), _kids(after)
        events = [
            AuditEvent(
                "directory.reloaded",
                now,
                None,
                after.hub_id,
                {
                    "version": after.version,
                    "previous_version": before.version,
                    "sha256": new.digest.hex(),
                    "keys_added": sorted(new_kids - old_kids),
                    "keys_dropped": sorted(old_kids - new_kids),
                },
            )
        ]
        fresh = [kid for kid in after.revoked if not before.is_revoked(kid)]
        registered = self._reasons() if fresh else {}
        for kid in fresh:
            owner = after.key_owner(kid) or before.key_owner(kid)
            entry = registered.get(kid)
            detail: dict[str, object] = {
                "kid": kid,
                "kind": None if owner is None else _KIND[owner[1]],
                "reason": None if entry is None else entry.reason,
                "revoked_at": None if entry is None else entry.revoked_at,
                "directory_version": after.version,
            }
            org = None if owner is None else owner[0]
            security.error("key.revoked", org=org, **detail)
            events.append(AuditEvent("key.revoked", now, None, org, detail))
        return events


def _kids(directory: Directory) -> set[str]:
    return {k.kid for o in directory.orgs for k in (*o.sign_keys, *o.enc_keys)}
