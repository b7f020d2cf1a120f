"""Key windows across directory versions: carry them over, rotate with an overlap.

Pure: :func:`plan_key_windows` takes the organisations' public key files, the directory
published before (if any), ``now`` and the overlap, and says which window every key gets
in the next directory and what changed, so that ``hubctl directory build`` can print it.

The rules, per organisation and per kind of key (signing, encryption):

- A key the previous directory lists keeps the window it had there: spokes have seen
  it, and a window that moved by itself would surprise them.
- A new key of an organisation that had keys of that kind is a **rotation**: the new key
  is valid from ``now`` (until its key file's end), and every older key of that kind now
  ends at ``now + overlap`` (or earlier, if it already did). During the overlap both
  verify, so envelopes sealed or signed with the old key on the way still arrive; after
  it the old key is refused, with its window named.
- The first keys of an organisation (a new organisation, or the first directory) get the
  window their key file names.
- A key of the previous directory whose key file is gone is dropped from the directory.
- A revoked key is never closed or reopened here: revocation already refuses it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from schemas.clock import ms_to_text
from schemas.directory import Directory, KeyEntry
from schemas.keys import KeyKind, PublicKeys


class Change(StrEnum):
    """What happened to one key between two directory versions."""

    ADDED = "added"  # an organisation's first key of its kind: the key file's window
    ROTATED_IN = "rotated_in"  # a new key of an organisation that had keys: valid from now
    CLOSING = "closing"  # an older key: its window now ends at the end of the overlap
    KEPT = "kept"  # listed before, window unchanged
    DROPPED = "dropped"  # listed before, its key file is gone


@dataclass(frozen=True, slots=True)
class KeyChange:
    org: str
    kind: KeyKind
    kid: str
    change: Change
    not_before: int
    not_after: int
    was_not_after: int | None = None  # CLOSING: where the window ended before

    def sentence(self) -> str:
        """One line for the operator, in the words of the change."""
        what = f"{self.org} {_KIND_WORD[self.kind]} key {self.kid}"
        window = f"{ms_to_text(self.not_before)} .. {ms_to_text(self.not_after)}"
        match self.change:
            case Change.ADDED:
                return f"{what}: added, valid {window}"
            case Change.ROTATED_IN:
                return f"{what}: rotated in, valid {window}"
            case Change.CLOSING:
                return f"{what}: closing, now valid until {ms_to_text(self.not_after)}"
            case Change.DROPPED:
                return (
                    f"{what}: dropped (its public key file is gone); documents it signed or "
                    "that were sealed for it and are still on their way will be refused"
                )
            case _:
                return f"{what}: unchanged, valid {window}"


_KIND_WORD = {KeyKind.SIGN: "signing", KeyKind.ENCRYPT: "encryption"}


@dataclass(frozen=True, slots=True)
class WindowPlan:
    """The window of every key of the next directory, and what changed."""

    windows: Mapping[str, tuple[int, int]]  # kid -> (not_before, not_after)
    changes: tuple[KeyChange, ...]

    @property
    def notable(self) -> tuple[KeyChange, ...]:
        """Every change but the keys that stayed as they were."""
        return tuple(c for c in self.changes if c.change is not Change.KEPT)


@dataclass(frozen=True, slots=True)
class _FileKey:
    kid: str
    not_before: int
    not_after: int


def _halves(files: Sequence[PublicKeys], kind: KeyKind) -> list[_FileKey]:
    if kind is KeyKind.SIGN:
        return [_FileKey(f.sign_kid, f.not_before, f.not_after) for f in files]
    return [_FileKey(f.enc_kid, f.not_before, f.not_after) for f in files]


def plan_key_windows(
    public_keys: Mapping[str, Sequence[PublicKeys]],
    previous: Directory | None,
    *,
    now: int,
    overlap_ms: int,
) -> WindowPlan:
    """The windows of the next directory's keys (module docstring: the rules).

    Raises ValueError naming the organisation and key when a rotated-in key's own file
    has already ended, or the overlap is negative.
    """
    if overlap_ms < 0:
        raise ValueError(f"the overlap must not be negative ({overlap_ms} ms)")
    windows: dict[str, tuple[int, int]] = {}
    changes: list[KeyChange] = []
    revoked = frozenset(previous.revoked) if previous is not None else frozenset()
    for org, files in public_keys.items():
        entry = previous.org(org) if previous is not None else None
        for kind in (KeyKind.SIGN, KeyKind.ENCRYPT):
            before: Sequence[KeyEntry] = ()
            if entry is not None:
                before = entry.sign_keys if kind is KeyKind.SIGN else entry.enc_keys
            planned = _plan_one(
                org, kind, _halves(files, kind), before, revoked, now=now, overlap_ms=overlap_ms
            )
            for change in planned:
                if change.change is not Change.DROPPED:
                    windows[change.kid] = (change.not_before, change.not_after)
            changes.extend(planned)
    return WindowPlan(windows, tuple(changes))


def _plan_one(
    org: str,
    kind: KeyKind,
    files: Iterable[_FileKey],
    before: Sequence[KeyEntry],
    revoked: frozenset[str],
    *,
    now: int,
    overlap_ms: int,
) -> list[KeyChange]:
    known = {k.kid: k for k in before}
    unique = {f.kid: f for f in files}  # the same key file found twice counts once
    rotating = bool(known) and any(kid not in known for kid in unique)
    closes_at = now + overlap_ms
    out: list[KeyChange] = []
    for kid, file_key in unique.items():
        old = known.get(kid)
        if old is None and not rotating:
            out.append(
                KeyChange(org, kind, kid, Change.ADDED, file_key.not_before, file_key.not_after)
            )
        elif old is None:
            if file_key.not_after <= now:
                raise ValueError(
                    f"{org}: the new {_KIND_WORD[kind]} key {kid} is valid only until "
                    f"{ms_to_text(file_key.not_after)} by its key file; have the organisation "
                    "run 'spoke keygen --rotate' again"
                )
            out.append(KeyChange(org, kind, kid, Change.ROTATED_IN, now, file_key.not_after))
        elif rotating and kid not in revoked and old.not_after > closes_at:
            # a key that has not begun yet ends just after it begins, never before
            end = max(closes_at, old.not_before + 1)
            out.append(
                KeyChange(org, kind, kid, Change.CLOSING, old.not_before, end, old.not_after)
            )
        else:
            out.append(KeyChange(org, kind, kid, Change.KEPT, old.not_before, old.not_after))
    out.extend(
        KeyChange(org, kind, k.kid, Change.DROPPED, k.not_before, k.not_after)
        for k in before
        if k.kid not in unique
    )
    return out
