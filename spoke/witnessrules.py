"""The witness's decisions, pure (docs/wire-format.md, 12.3): what to make of a verified
checkpoint given the one held, the hub's answers and the checkpoints this spoke logged.

:func:`decide` takes a checkpoint as published; :func:`conclude` the hub's answer to a
question; :func:`unanswered` the silence; :func:`restore_base` and
:func:`confirm_restore` check a declared restore against the log. :mod:`spoke.witness`
does the I/O.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from dataclasses import dataclass
from typing import Any

from schemas import merkle, transport
from schemas.clock import ms_to_text
from schemas.directory import Directory
from schemas.errors import PeerError, Reason, SignatureError
from schemas.ledger import (
    Consistent,
    Entry,
    Fork,
    Judgement,
    Restored,
    RestoreProof,
    SignedCheckpoint,
    judge,
    read_checkpoint,
    unpack_path,
    verify_checkpoint,
)
from spoke.state import LoggedCheckpoint


@dataclass(frozen=True, slots=True)
class Adopt:
    """The first checkpoint this spoke ever sees: trusted on first use."""

    checkpoint: SignedCheckpoint


@dataclass(frozen=True, slots=True)
class Same:
    """Nothing new (the retained copy again, or the same checkpoint on another channel)."""


@dataclass(frozen=True, slots=True)
class Ask:
    """Ask the hub for a consistency proof between ``old`` and ``new`` (old <= new)."""

    old: int
    new: int
    fallback: Fork | None = None  # the verdict if the hub does not answer


@dataclass(frozen=True, slots=True)
class Unproven:
    """The hub did not show that one of ``held`` and ``new`` extends the other."""

    held: SignedCheckpoint
    new: SignedCheckpoint
    why: str


@dataclass(frozen=True, slots=True)
class RestoreChecked:
    """A declared restore, and the logged checkpoint (size) it was proven to keep."""

    restored: Restored
    since: int | None  # None: no logged checkpoint within the restored ledger to compare


Verdict = Judgement | Unproven
Decision = Adopt | Same | Ask | Consistent | Restored | RestoreChecked | Fork | Unproven


def verify(frame: bytes, directory: Directory) -> SignedCheckpoint:
    """A checkpoint frame signed by this directory's hub with a key valid when signed."""
    unverified = read_checkpoint(frame)
    if unverified.checkpoint.hub_id != directory.hub_id:
        raise SignatureError(
            Reason.LEDGER_BAD_SIGNATURE,
            f"a checkpoint of hub {unverified.checkpoint.hub_id}, not of {directory.hub_id} "
            "whose directory this spoke holds",
        )
    public = directory.signing_key(directory.hub_id, unverified.kid, unverified.at)
    return verify_checkpoint(frame, public)


def decide(
    held: SignedCheckpoint | None, new: SignedCheckpoint, prev_size: int, proof: bytes
) -> Decision:
    """What to do with a verified checkpoint that came as ``["ckpt", frame, prev, proof]``.

    A fork found with the attached proof is not final yet: the hub is asked, since its
    answer may carry a signed restore statement that explains the break."""
    if held is None:
        return Adopt(new)
    if new.frame == held.frame or (
        new.size == held.size and new.root == held.root and new.at <= held.at
    ):
        return Same()
    ask = Ask(min(held.size, new.size), max(held.size, new.size))
    if prev_size != held.size or new.size < held.size:
        return ask
    try:
        path = unpack_path(proof)
    except PeerError:
        return ask
    verdict = judge(held, new, path)
    return Ask(ask.old, ask.new, verdict) if isinstance(verdict, Fork) else verdict


def conclude(
    held: SignedCheckpoint, new: SignedCheckpoint, answer: transport.ConsistencyMsg
) -> Verdict:
    """The verdict on ``new`` given the hub's answer to ``Ask`` (proof and restore entry);
    no proof and no acceptable restore is :func:`unanswered`, not yet a fork."""
    proof = _path(answer.proof)
    restore: RestoreProof | None = None
    if answer.restore_leaf is not None and answer.restore_path is not None:
        with contextlib.suppress(PeerError):
            restore = RestoreProof(
                Entry.from_leaf(answer.restore_leaf), unpack_path(answer.restore_path)
            )
    verdict = judge(held, new, proof, restore)
    if isinstance(verdict, Fork) and proof is None and held.size != new.size:
        small, large = sorted((held.size, new.size))
        return unanswered(held, new, f"the hub gave no proof that size {large} extends {small}")
    return verdict


def unanswered(held: SignedCheckpoint, new: SignedCheckpoint, why: str) -> Fork | Unproven:
    """No proof came: a checkpoint smaller than the held one and signed after it is a fork
    (the hub went back and cannot show otherwise); anything else is unproven."""
    if new.size < held.size and new.at > held.at:
        return Fork(
            held,
            new,
            f"the hub signed size {new.size} after size {held.size} and did not prove that "
            f"it did not go back ({why})",
        )
    return Unproven(held, new, why)


def restore_base(logged: list[LoggedCheckpoint], restored: Restored) -> LoggedCheckpoint | None:
    """The largest checkpoint this spoke logged within the restored ledger (the latest of
    that size), which the restored ledger must still extend; None if there is none."""
    within = [c for c in logged if c.size <= restored.lost_from]
    return max(reversed(within), key=lambda c: c.size) if within else None


def confirm_restore(
    restored: Restored, base: SignedCheckpoint, proof: bytes | None
) -> RestoreChecked | Fork:
    """The restore stands only if its checkpoint extends ``base``, one this spoke logged."""
    new = restored.keep
    path = _path(proof)
    if path is not None and merkle.verify_consistency(
        base.size, new.size, base.root, new.root, path
    ):
        return RestoreChecked(restored, base.size)
    return Fork(
        base,
        new,
        f"the restored ledger does not keep the history up to size {base.size} that this "
        f"spoke saw (the hub declared a restore to size {restored.lost_from}, held size "
        f"{restored.lost_to})",
    )


def _path(data: bytes | None) -> list[bytes] | None:
    if data is None:
        return None
    try:
        return unpack_path(data)
    except PeerError:
        return None


def answers(ask: Ask, answer: transport.ConsistencyMsg) -> bool:
    return (answer.old, answer.new) == (ask.old, ask.new)


def fork_fields(fork: Fork) -> dict[str, Any]:
    """What ``ledger.fork`` logs and ``why.json`` keeps (sizes, roots in hex, times)."""
    held, new = fork.held.checkpoint, fork.new.checkpoint
    return {
        "hub_id": held.hub_id,
        "held_size": held.size,
        "held_root": held.root.hex(),
        "held_at": ms_to_text(held.at, precise=True),
        "new_size": new.size,
        "new_root": new.root.hex(),
        "new_at": ms_to_text(new.at, precise=True),
        "why": fork.why,
    }


def pair_digest(a: bytes, b: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(a).digest() + hashlib.sha256(b).digest()).digest()


def stamp(ms: int) -> str:
    """A time as a file name part: 20261125T154247123Z."""
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(ms // 1000)) + f"{ms % 1000:03d}Z"
