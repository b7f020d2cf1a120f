"""The spoke's keys over time (spoke.keyring): which held key signs, when the spoke may send
at all (fail closed), and reading the key files, rotated pairs included.

Table tests at a fixed ``now`` against directories built from the world's topology.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pytest

from runtime.files import write_private
from schemas.clock import DAY_MS
from schemas.directory import Directory, KeyEntry, VerifiedDirectory, sign_directory
from schemas.keys import EncryptionKey, PublicKeys, SigningKey, dump_secret_key
from schemas.topology import DirectoryPlan, build_directory
from spoke.keyring import (
    DIRECTORY_EXPIRED,
    NO_DIRECTORY,
    NO_SIGNING_KEY,
    Held,
    Keyring,
    KeySource,
    Ready,
    choose_signer,
    describe_held,
    own_key_sentence,
    own_key_warnings,
    rotated_paths,
    sending_gate,
)
from tests.world import NOW, World

OLD_FROM, CLOSES = NOW - 30 * DAY_MS, NOW + 7 * DAY_MS  # jl.cc's old key, closing
NEW_FROM, NEW_UNTIL = NOW - DAY_MS, NOW + 700 * DAY_MS  # rotated in a day ago
EXPIRES = NOW + 10 * DAY_MS  # the directory's


class Pair:
    def __init__(self) -> None:
        self.signing = SigningKey.generate()
        self.encryption = EncryptionKey.generate()


OLD, NEW, STRANGER = Pair(), Pair(), Pair()


def directory(
    world: World,
    jl_cc: Sequence[tuple[Pair, int, int]],
    *,
    revoked: Sequence[str] = (),
    expires_at: int = EXPIRES,
) -> Directory:
    """The world's directory where jl.cc holds exactly the pairs ``jl_cc`` with windows."""
    files = {
        org: [PublicKeys(org, k.signing.public, k.encryption.public, NOW - DAY_MS, EXPIRES)]
        for org, k in world.keys.items()
    }
    files["jl.cc"] = [
        PublicKeys("jl.cc", p.signing.public, p.encryption.public, nb, na) for p, nb, na in jl_cc
    ]
    hub = world.hub_key
    plan = DirectoryPlan(
        version=4,
        issued_at=NOW - DAY_MS,
        expires_at=expires_at,
        hub_keys=(
            KeyEntry(kid=hub.kid, public=hub.public, not_before=OLD_FROM, not_after=NEW_UNTIL),
        ),
        revoked=tuple(revoked),
    )
    return build_directory(world.topology, files, plan)


def verified(d: Directory, world: World) -> VerifiedDirectory:
    return VerifiedDirectory(d, sign_directory(d, world.hub_key), b"\x00" * 32)


ROTATING = ((OLD, OLD_FROM, CLOSES), (NEW, NEW_FROM, NEW_UNTIL))


# ---------------------------------------------------------------- which key signs


@pytest.mark.parametrize(
    ("held", "listed", "revoked", "expected"),
    [
        # before the hub lists the new key, the old one signs (the hub would refuse the new)
        ((OLD, NEW), ((OLD, OLD_FROM, CLOSES),), (), (NOW, OLD)),
        # once both are listed, the newer one signs at once
        ((OLD, NEW), ROTATING, (), (NOW, NEW)),
        ((NEW, OLD), ROTATING, (), (NOW, NEW)),  # whatever order the files were read in
        # a new key listed for later: the old one signs until then
        ((OLD, NEW), ((OLD, OLD_FROM, CLOSES), (NEW, NOW + DAY_MS, NEW_UNTIL)), (), (NOW, OLD)),
        (
            (OLD, NEW),
            ((OLD, OLD_FROM, CLOSES), (NEW, NOW + DAY_MS, NEW_UNTIL)),
            (),
            (NOW + DAY_MS, NEW),
        ),
        # the old one revoked: the new one signs, even if the old were newer
        ((OLD, NEW), ((OLD, NEW_FROM, CLOSES), (NEW, OLD_FROM, NEW_UNTIL)), ("old",), (NOW, NEW)),
        # a spoke that holds only the old pair keeps using it through the overlap
        ((OLD,), ROTATING, (), (CLOSES - 1, OLD)),
    ],
)
def test_the_spoke_signs_with_its_newest_key_the_directory_accepts_now(
    world: World,
    held: tuple[Pair, ...],
    listed: tuple[tuple[Pair, int, int], ...],
    revoked: tuple[str, ...],
    expected: tuple[int, Pair],
) -> None:
    at, signer = expected
    kids = [OLD.signing.kid if r == "old" else r for r in revoked]
    d = directory(world, listed, revoked=kids)

    chosen = choose_signer([p.signing for p in held], d, "jl.cc", at)

    assert chosen == signer.signing


@pytest.mark.parametrize(
    ("held", "revoked", "at", "says"),
    [
        ((OLD,), True, NOW, f"{OLD.signing.kid} is revoked"),
        ((OLD,), False, CLOSES, f"{OLD.signing.kid} was valid until 2026-11-25T"),
        ((STRANGER,), False, NOW, f"{STRANGER.signing.kid} is not listed"),
        ((NEW,), False, NEW_FROM - 1, "is valid only from 2026-11-17T"),
    ],
)
def test_without_a_usable_key_the_spoke_says_why_for_each_key_it_holds(
    world: World, held: tuple[Pair, ...], revoked: bool, at: int, says: str
) -> None:
    d = directory(world, ROTATING, revoked=[OLD.signing.kid] if revoked else [])

    chosen = choose_signer([p.signing for p in held], d, "jl.cc", at)

    assert isinstance(chosen, str)
    assert says in chosen
    assert "spoke keygen --org jl.cc --rotate" in chosen


def test_an_organisation_missing_from_the_directory_cannot_sign(world: World) -> None:
    chosen = choose_signer([OLD.signing], directory(world, ROTATING), "jl.nowhere", NOW)

    assert chosen == "jl.nowhere is not in directory v4; ask the hub operator"


# ---------------------------------------------------------------- fail closed


def keyring(*pairs: Pair) -> Keyring:
    return Keyring(tuple(p.signing for p in pairs), tuple(p.encryption for p in pairs))


def test_without_a_directory_the_spoke_holds(world: World) -> None:
    gate = sending_gate(None, keyring(OLD), "jl.cc", NOW)

    assert isinstance(gate, Held)
    assert gate.reason == NO_DIRECTORY


@pytest.mark.parametrize(
    ("at", "ready"), [(EXPIRES - 1, True), (EXPIRES, False), (EXPIRES + DAY_MS, False)]
)
def test_the_spoke_holds_from_the_moment_its_directory_expires(
    world: World, at: int, ready: bool
) -> None:
    gate = sending_gate(verified(directory(world, ROTATING), world), keyring(OLD, NEW), "jl.cc", at)

    if ready:
        assert isinstance(gate, Ready)
        assert gate.signer == NEW.signing
        return
    assert isinstance(gate, Held)
    assert gate.reason == DIRECTORY_EXPIRED
    assert (gate.version, gate.expires_at) == (4, EXPIRES)
    assert "directory v4 expired at 2026-11-28T" in gate.detail
    assert "drops wait in the outbox" in gate.detail


def test_a_spoke_whose_only_key_is_revoked_holds_and_says_so(world: World) -> None:
    d = directory(world, ROTATING, revoked=[OLD.signing.kid])

    gate = sending_gate(verified(d, world), keyring(OLD), "jl.cc", NOW)

    assert isinstance(gate, Held)
    assert gate.reason == NO_SIGNING_KEY
    assert f"{OLD.signing.kid} is revoked" in gate.detail


# ---------------------------------------------------------------- decrypting by kid


def test_a_file_key_sealed_for_either_held_key_finds_its_key() -> None:
    ring = keyring(OLD, NEW)

    assert ring.encryption_key(OLD.encryption.kid) == OLD.encryption
    assert ring.encryption_key(NEW.encryption.kid) == NEW.encryption
    assert ring.encryption_key(STRANGER.encryption.kid) is None


def test_describe_held_tells_the_operator_what_each_key_is_for(world: World) -> None:
    rows = describe_held(keyring(OLD, NEW, STRANGER), directory(world, ROTATING), "jl.cc", NOW)

    said = {kid: text for _, kid, text in rows}
    assert said[NEW.signing.kid].startswith("in use (signs)")
    assert said[NEW.encryption.kid].startswith("in use (senders seal to it)")
    assert said[OLD.signing.kid].startswith("being rotated out: still valid until")
    assert said[STRANGER.signing.kid].startswith("not in the directory yet")
    after = describe_held(keyring(OLD), directory(world, ROTATING), "jl.cc", CLOSES)
    retired = {kid: text for _, kid, text in after}
    assert "keep it until nothing sealed for it can arrive" in retired[OLD.encryption.kid]


# ---------------------------------------------------------------- its own keys' expiry

ONLY_OLD = ((OLD, OLD_FROM, CLOSES),)  # jl.cc's only listed pair closes in 7 days


def test_the_spoke_is_warned_days_ahead_that_its_last_listed_keys_end(world: World) -> None:
    d = directory(world, ONLY_OLD)  # every other organisation's keys end in 10 days too

    found = own_key_warnings(d, "jl.cc", now=NOW, days=14)

    assert {(w.event, w.deadline.kind, w.deadline.name) for w in found} == {
        ("key.expiring", "signing", OLD.signing.kid),
        ("key.expiring", "encryption", OLD.encryption.kid),
    }
    assert len(found) == 2
    assert {w.deadline.org for w in found} == {"jl.cc"}  # its own keys, nobody else's
    assert all(w.days_left == 7 for w in found)
    signing = next(w for w in found if w.deadline.kind == "signing")
    said = own_key_sentence(signing, keyring(OLD), d)
    assert (
        f"the last signing key of jl.cc in the directory, {OLD.signing.kid}, expires in 7 days"
        in said
    )
    assert "this spoke can no longer sign, so it sends nothing" in said
    assert "Run 'spoke keygen --rotate' and hand the new .pub.json to the hub's operator" in said


def test_a_rotated_pair_not_yet_listed_is_named_in_the_warning(world: World) -> None:
    d = directory(world, ONLY_OLD)
    (signing,) = [
        w for w in own_key_warnings(d, "jl.cc", now=NOW, days=14) if w.deadline.kind == "signing"
    ]

    said = own_key_sentence(signing, keyring(OLD, NEW), d)

    assert f"Hand the .pub.json of the new pair ({NEW.signing.kid}) to the hub's operator" in said


@pytest.mark.parametrize(
    ("listed", "now", "days", "events"),
    [
        (ROTATING, NOW, 14, []),  # the newer pair carries on: nothing to do
        (ONLY_OLD, NOW, 5, []),  # 7 days left, warned 5 days ahead: not yet
        (ONLY_OLD, CLOSES - 1, 14, ["key.expiring", "key.expiring"]),
        (ONLY_OLD, CLOSES, 14, ["key.expired", "key.expired"]),
    ],
)
def test_key_expiry_warnings_come_within_the_horizon_and_only_for_the_last_key(
    world: World, listed: Sequence[tuple[Pair, int, int]], now: int, days: float, events: list[str]
) -> None:
    found = own_key_warnings(directory(world, listed), "jl.cc", now=now, days=days)
    assert [w.event for w in found] == events


# ---------------------------------------------------------------- the key files


def install(folder: Path, org: str, pair: Pair, *, rotated: bool) -> tuple[Path, Path]:
    if rotated:
        sign, enc, _ = rotated_paths(org, folder, pair.signing.kid, pair.encryption.kid)
    else:
        sign, enc = folder / f"{org}.sign.key", folder / f"{org}.enc.key"
    write_private(sign, dump_secret_key(org, pair.signing))
    write_private(enc, dump_secret_key(org, pair.encryption))
    return sign, enc


def test_the_key_source_holds_the_configured_pair_first_and_the_rotated_ones(
    tmp_path: Path,
) -> None:
    sign, enc = install(tmp_path, "jl.cc", OLD, rotated=False)
    install(tmp_path, "jl.cc", NEW, rotated=True)

    ring = KeySource("jl.cc", sign, enc).load()

    assert ring.signing == (OLD.signing, NEW.signing)
    assert ring.encryption == (OLD.encryption, NEW.encryption)


def test_the_key_source_notices_a_new_pair_without_a_restart(tmp_path: Path) -> None:
    sign, enc = install(tmp_path, "jl.cc", OLD, rotated=False)
    source = KeySource("jl.cc", sign, enc)
    source.load()
    assert not source.changed()

    install(tmp_path, "jl.cc", NEW, rotated=True)

    assert source.changed()
    assert NEW.signing in source.load().signing
    assert not source.changed()


def test_a_rotated_file_that_is_not_ours_or_not_private_is_left_out_and_named(
    tmp_path: Path,
) -> None:
    sign, enc = install(tmp_path, "jl.cc", OLD, rotated=False)
    stranger, _, _ = rotated_paths("jl.cc", tmp_path, STRANGER.signing.kid, "0" * 16)
    write_private(stranger, dump_secret_key("jl.jl", STRANGER.signing))
    loose, _ = install(tmp_path, "jl.cc", NEW, rotated=True)
    os.chmod(loose, 0o644)  # noqa: PTH101 - exactly the mistake an operator makes

    source = KeySource("jl.cc", sign, enc)
    ring = source.load()

    assert ring.signing == (OLD.signing,)
    assert any("belongs to jl.jl, not to jl.cc" in p for p in source.problems)
    assert any(f"chmod 600 {loose}" in p for p in source.problems)


def test_the_configured_pair_must_load(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        KeySource("jl.cc", tmp_path / "jl.cc.sign.key", tmp_path / "jl.cc.enc.key").load()
