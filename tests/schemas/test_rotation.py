"""Key windows across directory versions (schemas.rotation) and durations (schemas.clock).

Table tests of the pure planner, then the directory it makes: during the overlap both
keys verify and senders seal to the new key; after it the old key is refused, naming
itself and its window.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest

from schemas.clock import DAY_MS, HOUR_MS, duration_text, parse_duration
from schemas.directory import Directory, KeyEntry
from schemas.errors import Reason, SignatureError
from schemas.keys import EncryptionKey, KeyKind, PublicKeys, SigningKey
from schemas.rotation import Change, KeyChange, plan_key_windows
from schemas.topology import DirectoryPlan, build_directory
from tests.world import NOW, World

OVERLAP = 7 * DAY_MS
FILE_FROM, FILE_UNTIL = NOW - 2 * DAY_MS, NOW + 700 * DAY_MS  # what 'spoke keygen' wrote
OLD_FROM, OLD_UNTIL = NOW - 10 * DAY_MS, NOW + 365 * DAY_MS  # the world directory's window


def new_keys(org: str, not_before: int = FILE_FROM, not_after: int = FILE_UNTIL) -> PublicKeys:
    return PublicKeys(
        org, SigningKey.generate().public, EncryptionKey.generate().public, not_before, not_after
    )


def files_of(world: World, **extra: Sequence[PublicKeys]) -> dict[str, list[PublicKeys]]:
    """Every organisation's current key file (as the world directory lists it), plus more."""
    out = {
        org: [PublicKeys(org, k.signing.public, k.encryption.public, FILE_FROM, FILE_UNTIL)]
        for org, k in world.keys.items()
    }
    for org, more in extra.items():
        out[org.replace("_", ".")] += list(more)
    return out


def change_of(changes: Sequence[KeyChange], kid: str, kind: KeyKind = KeyKind.SIGN) -> KeyChange:
    found = [c for c in changes if c.kid == kid and c.kind is kind]
    assert len(found) == 1, (kid, changes)
    return found[0]


def directory_with(
    world: World,
    files: Mapping[str, Sequence[PublicKeys]],
    windows: Mapping[str, tuple[int, int]],
    version: int = 2,
    revoked: Sequence[str] = (),
) -> Directory:
    hub = world.hub_key
    plan = DirectoryPlan(
        version=version,
        issued_at=NOW,
        expires_at=NOW + 30 * DAY_MS,
        hub_keys=(
            KeyEntry(kid=hub.kid, public=hub.public, not_before=OLD_FROM, not_after=OLD_UNTIL),
        ),
        revoked=tuple(revoked),
        windows=windows,
    )
    return build_directory(world.topology, files, plan)


# ---------------------------------------------------------------- the planner, as a table


def test_first_directory_gives_every_key_its_files_window(world: World) -> None:
    plan = plan_key_windows(files_of(world), None, now=NOW, overlap_ms=OVERLAP)

    kid = world.keys["jl.cc"].signing.kid
    assert plan.windows[kid] == (FILE_FROM, FILE_UNTIL)
    assert {c.change for c in plan.changes} == {Change.ADDED}


def test_a_listed_key_keeps_the_window_the_previous_directory_gave_it(world: World) -> None:
    plan = plan_key_windows(files_of(world), world.directory, now=NOW, overlap_ms=OVERLAP)

    kid = world.keys["jl.cc"].signing.kid
    assert plan.windows[kid] == (OLD_FROM, OLD_UNTIL)  # not the file's FILE_FROM..FILE_UNTIL
    assert plan.notable == ()


def test_a_new_key_rotates_in_from_now_and_closes_the_old_after_the_overlap(
    world: World,
) -> None:
    rotated = new_keys("jl.cc")
    plan = plan_key_windows(
        files_of(world, jl_cc=[rotated]), world.directory, now=NOW, overlap_ms=OVERLAP
    )

    old = world.keys["jl.cc"]
    for kind, old_kid, new_kid in (
        (KeyKind.SIGN, old.signing.kid, rotated.sign_kid),
        (KeyKind.ENCRYPT, old.encryption.kid, rotated.enc_kid),
    ):
        assert change_of(plan.changes, new_kid, kind) == KeyChange(
            "jl.cc", kind, new_kid, Change.ROTATED_IN, NOW, FILE_UNTIL
        )
        assert change_of(plan.changes, old_kid, kind) == KeyChange(
            "jl.cc", kind, old_kid, Change.CLOSING, OLD_FROM, NOW + OVERLAP, OLD_UNTIL
        )
    # nobody else changed
    assert {c.org for c in plan.notable} == {"jl.cc"}


@pytest.mark.parametrize(
    ("old_until", "expected_end", "change"),
    [
        (NOW + OVERLAP + 1, NOW + OVERLAP, Change.CLOSING),  # later than the overlap: cut
        (NOW + OVERLAP, NOW + OVERLAP, Change.KEPT),  # exactly at it: nothing to cut
        (NOW + HOUR_MS, NOW + HOUR_MS, Change.KEPT),  # already closing sooner: kept
    ],
)
def test_an_old_key_never_gets_longer_than_it_had(
    world: World, old_until: int, expected_end: int, change: Change
) -> None:
    old = world.keys["jl.cc"].signing.kid
    previous = world.rebuild(version=1, not_after=old_until)
    plan = plan_key_windows(
        files_of(world, jl_cc=[new_keys("jl.cc")]), previous, now=NOW, overlap_ms=OVERLAP
    )

    found = change_of(plan.changes, old)
    assert (found.not_after, found.change) == (expected_end, change)


def test_overlap_zero_closes_the_old_key_now(world: World) -> None:
    old = world.keys["jl.cc"].signing.kid
    plan = plan_key_windows(
        files_of(world, jl_cc=[new_keys("jl.cc")]), world.directory, now=NOW, overlap_ms=0
    )

    assert plan.windows[old] == (OLD_FROM, NOW)


def test_a_revoked_key_is_not_closed_again_by_a_rotation(world: World) -> None:
    old = world.keys["jl.cc"].signing.kid
    previous = world.rebuild(version=1, revoked=[old])
    plan = plan_key_windows(
        files_of(world, jl_cc=[new_keys("jl.cc")]), previous, now=NOW, overlap_ms=OVERLAP
    )

    assert change_of(plan.changes, old).change is Change.KEPT


def test_a_key_whose_file_is_gone_is_dropped(world: World) -> None:
    rotated = new_keys("jl.cc")
    files = files_of(world, jl_cc=[rotated])
    v2 = plan_key_windows(files, world.directory, now=NOW, overlap_ms=OVERLAP)
    previous = directory_with(world, files, v2.windows)
    files["jl.cc"] = [rotated]  # the operator removed the old public key file

    plan = plan_key_windows(files, previous, now=NOW + OVERLAP, overlap_ms=OVERLAP)

    old = world.keys["jl.cc"].signing.kid
    assert change_of(plan.changes, old).change is Change.DROPPED
    assert old not in plan.windows
    assert change_of(plan.changes, rotated.sign_kid).change is Change.KEPT


def test_a_new_organisation_gets_its_files_window(world: World) -> None:
    files = files_of(world)
    previous = directory_with(world, files, {}, version=1).model_copy(
        update={"orgs": tuple(o for o in world.directory.orgs if o.id != "jl.yb")}
    )

    plan = plan_key_windows(files, previous, now=NOW, overlap_ms=OVERLAP)

    kid = world.keys["jl.yb"].signing.kid
    assert change_of(plan.changes, kid).change is Change.ADDED
    assert plan.windows[kid] == (FILE_FROM, FILE_UNTIL)


def test_a_rotated_in_key_whose_file_has_ended_is_refused_naming_it(world: World) -> None:
    stale = new_keys("jl.cc", NOW - 20 * DAY_MS, NOW - DAY_MS)

    with pytest.raises(ValueError, match=f"jl.cc: the new signing key {stale.sign_kid}"):
        plan_key_windows(
            files_of(world, jl_cc=[stale]), world.directory, now=NOW, overlap_ms=OVERLAP
        )


def test_a_negative_overlap_is_refused(world: World) -> None:
    with pytest.raises(ValueError, match="negative"):
        plan_key_windows(files_of(world), world.directory, now=NOW, overlap_ms=-1)


# ---------------------------------------------------------------- the directory it makes


@pytest.fixture
def rotated(world: World) -> tuple[Directory, str, str, PublicKeys]:
    """v2 after jl.cc rotated at NOW with a 7-day overlap: (directory, old kid, new kid,
    the new key file)."""
    fresh = new_keys("jl.cc")
    files = files_of(world, jl_cc=[fresh])
    plan = plan_key_windows(files, world.directory, now=NOW, overlap_ms=OVERLAP)
    directory = directory_with(world, files, plan.windows)
    return directory, world.keys["jl.cc"].signing.kid, fresh.sign_kid, fresh


@pytest.mark.parametrize("at", [NOW, NOW + OVERLAP // 2, NOW + OVERLAP - 1])
def test_during_the_overlap_both_keys_verify(
    rotated: tuple[Directory, str, str, PublicKeys], at: int
) -> None:
    directory, old, new, _ = rotated

    assert directory.signing_key("jl.cc", old, at)
    assert directory.signing_key("jl.cc", new, at)


@pytest.mark.parametrize("at", [NOW + OVERLAP, NOW + OVERLAP + DAY_MS])
def test_after_the_overlap_the_old_key_is_refused_naming_it_and_its_window(
    rotated: tuple[Directory, str, str, PublicKeys], at: int
) -> None:
    directory, old, new, _ = rotated

    with pytest.raises(SignatureError) as info:
        directory.signing_key("jl.cc", old, at)

    assert info.value.reason is Reason.SIG_KEY_EXPIRED
    message = info.value.message
    assert f"key {old} of jl.cc" in message
    assert "was valid from 2026-11-08T" in message  # OLD_FROM
    assert "until 2026-11-25T" in message  # NOW + 7 days
    assert "after its window closed" in message
    assert directory.signing_key("jl.cc", new, at)


def test_before_its_window_the_new_key_is_refused(
    rotated: tuple[Directory, str, str, PublicKeys],
) -> None:
    directory, _, new, _ = rotated

    with pytest.raises(SignatureError) as info:
        directory.signing_key("jl.cc", new, NOW - 1)

    assert info.value.reason is Reason.SIG_KEY_NOT_YET_VALID
    assert "before its window opened" in info.value.message


def test_senders_seal_to_the_new_encryption_key_from_the_moment_it_is_listed(
    rotated: tuple[Directory, str, str, PublicKeys], world: World
) -> None:
    directory, _, _, fresh = rotated

    assert directory.encryption_key("jl.cc", NOW).kid == fresh.enc_kid
    # a sender still holding v1 seals to the old key, which stays valid in the overlap
    assert world.directory.encryption_key("jl.cc", NOW).kid == world.keys["jl.cc"].encryption.kid


# ---------------------------------------------------------------- durations


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("0", 0),
        ("7d", 7 * DAY_MS),
        ("36h", 36 * HOUR_MS),
        ("1d12h", 36 * HOUR_MS),
        ("90m", 90 * 60_000),
        ("45s", 45_000),
        ("2w", 14 * DAY_MS),
        ("1.5d", 36 * HOUR_MS),
        (" 7D ", 7 * DAY_MS),
    ],
)
def test_durations_an_operator_types_are_read(text: str, ms: int) -> None:
    assert parse_duration(text) == ms


@pytest.mark.parametrize("text", ["", "7", "d", "7x", "7 d", "-1d", "1d-2h", "7days"])
def test_a_bad_duration_is_refused_naming_the_value_and_the_form(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration") as info:
        parse_duration(text, what="--overlap")

    assert f"--overlap {text!r}" in str(info.value)
    assert "7d" in str(info.value)


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (0, "0s"),
        (45_000, "45s"),
        (252_000, "4m12s"),
        (3 * HOUR_MS + 300_000, "3h05m"),
        (2 * DAY_MS + 4 * HOUR_MS, "2d04h"),
        (-90_000, "1m30s"),
    ],
)
def test_spans_are_printed_short(ms: int, text: str) -> None:
    assert duration_text(ms) == text
