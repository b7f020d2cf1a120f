"""verify_directory and the Directory's lookups: signature, freshness, rollback, keys, groups."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import codec
from schemas.clock import DAY_MS
from schemas.directory import (
    DIRECTORY_CLOCK_SKEW_MS,
    Directory,
    GroupEntry,
    KeyEntry,
    OrgEntry,
    OrgLevel,
    sign_directory,
    verify_directory,
)
from schemas.errors import DirectoryError, Reason, SchemaError, SignatureError
from schemas.keys import DOMAIN_DIRECTORY, EncryptionKey, PublicKeys, SigningKey
from schemas.model import MAX_WIRE_INT
from schemas.topology import DirectoryPlan, build_directory
from tests.world import NOW, World

# the key window every key of the world directory has (tests.world._directory defaults)
KEY_NOT_BEFORE = NOW - 10 * DAY_MS
KEY_NOT_AFTER = NOW + 365 * DAY_MS

PREFECTURES = (
    "jl.cc",
    "jl.jl",
    "jl.sp",
    "jl.ly",
    "jl.th",
    "jl.bs",
    "jl.sy",
    "jl.bc",
    "jl.yb",
)
DEPARTMENTS = (
    "jl.dept.health",
    "jl.dept.finance",
    "jl.dept.security",
    "jl.dept.personnel",
    "jl.dept.petitions",
)


# ---------------------------------------------------------------- helpers


def sign_raw(directory: Directory, key: SigningKey) -> bytes:
    """Sign a directory's bytes without the consistency check sign_directory makes."""
    body = codec.encode(directory.to_wire())
    sig = key.sign(DOMAIN_DIRECTORY, body)
    return codec.encode({"v": 1, "kid": key.kid, "dir": body, "sig": sig})


def body_of(frame: bytes) -> bytes:
    body = codec.decode_map(frame, codec.DIRECTORY_FRAME_LIMITS)["dir"]
    assert isinstance(body, bytes)
    return body


def digest_of(frame: bytes) -> bytes:
    return hashlib.sha256(body_of(frame)).digest()


def altered(directory: Directory, **update: Any) -> Directory:
    """A fresh, unvalidated copy (no cached lookups carried over) with fields replaced."""
    fields = {name: getattr(directory, name) for name in Directory.model_fields}
    return Directory.model_construct(**{**fields, **update})


def replace_org(directory: Directory, org_id: str, **update: Any) -> Directory:
    orgs = tuple(o.model_copy(update=update) if o.id == org_id else o for o in directory.orgs)
    return altered(directory, orgs=orgs)


def org(directory: Directory, org_id: str) -> OrgEntry:
    entry = directory.org(org_id)
    assert entry is not None
    return entry


def refuse_directory(frame: bytes, world: World, **kw: Any) -> DirectoryError:
    with pytest.raises(DirectoryError) as info:
        verify_directory(frame, world.hub_key.public, **kw)
    return info.value


# ---------------------------------------------------------------- genuine directories


def test_genuine_signed_directory_verifies_against_pinned_hub_key(world: World) -> None:
    frame = world.signed_directory()

    verified = verify_directory(frame, world.hub_key.public, now=NOW)

    assert verified.directory == world.directory
    assert verified.version == 1
    assert verified.frame == frame
    assert verified.digest == hashlib.sha256(body_of(frame)).digest()


def test_congress_link_travels_in_the_signed_directory(world: World) -> None:
    verified = verify_directory(world.signed_directory(), world.hub_key.public, now=NOW)

    congress = org(verified.directory, "jl.congress")
    assert (congress.level, congress.parent, congress.congress_of) == (
        OrgLevel.CONGRESS,
        None,
        "jl.gov",
    )
    assert org(verified.directory, "jl.gov").congress_of is None


def test_org_entry_from_before_congresses_reads_as_no_congress(world: World) -> None:
    wire = org(world.directory, "jl.cc").to_wire()
    del wire["congress_of"]

    entry = OrgEntry.from_wire(wire, what="organisation")

    assert entry.congress_of is None
    assert entry == org(world.directory, "jl.cc")


def test_org_entry_with_a_congress_of_that_is_not_an_id_is_refused(world: World) -> None:
    wire = {**org(world.directory, "jl.congress").to_wire(), "congress_of": 7}

    with pytest.raises(SchemaError, match="congress_of"):
        OrgEntry.from_wire(wire, what="organisation")


def test_directory_model_round_trips_through_the_wire_byte_for_byte(world: World) -> None:
    body = codec.encode(world.directory.to_wire())

    again = Directory.from_wire(codec.decode_map(body, codec.DIRECTORY_LIMITS), what="directory")

    assert again == world.directory
    assert codec.encode(again.to_wire()) == body


def test_signing_the_same_directory_twice_gives_the_same_frame(world: World) -> None:
    assert world.signed_directory() == world.signed_directory()


_windows = st.integers(min_value=0, max_value=2**50)
_spans = st.integers(min_value=1, max_value=10 * 365 * DAY_MS)


@settings(max_examples=40, deadline=None)
@given(
    version=st.integers(min_value=1, max_value=MAX_WIRE_INT),
    issued_at=_windows,
    lifetime=_spans,
    not_before=_windows,
    key_span=_spans,
    data=st.data(),
)
def test_any_version_and_windows_verify_and_round_trip_within_validity(
    world: World,
    *,
    version: int,
    issued_at: int,
    lifetime: int,
    not_before: int,
    key_span: int,
    data: st.DataObject,
) -> None:
    directory = world.rebuild(
        version=version,
        issued_at=issued_at,
        expires_at=issued_at + lifetime,
        not_before=not_before,
        not_after=not_before + key_span,
    )
    now = data.draw(
        st.integers(
            min_value=max(0, issued_at - DIRECTORY_CLOCK_SKEW_MS),
            max_value=issued_at + lifetime - 1,
        ),
        label="now",
    )

    verified = verify_directory(world.signed_directory(directory), world.hub_key.public, now=now)

    assert verified.directory == directory
    assert verified.version == version
    key = org(verified.directory, "jl.cc").sign_keys[0]
    assert (key.not_before, key.not_after) == (not_before, not_before + key_span)


@settings(max_examples=30, deadline=None)
@given(issued_at=_windows, lifetime=_spans, late=st.integers(min_value=0, max_value=DAY_MS))
def test_directory_is_refused_at_or_after_its_expiry(
    world: World, issued_at: int, lifetime: int, late: int
) -> None:
    directory = world.rebuild(version=1, issued_at=issued_at, expires_at=issued_at + lifetime)

    error = refuse_directory(
        world.signed_directory(directory), world, now=issued_at + lifetime + late
    )

    assert error.reason is Reason.DIR_EXPIRED


# ---------------------------------------------------------------- forgery and tampering


def test_directory_signed_by_another_key_is_a_bad_signature(world: World) -> None:
    forger = SigningKey.generate()
    frame = sign_directory(world.directory, forger)

    error = refuse_directory(frame, world, now=NOW)

    assert error.reason is Reason.DIR_BAD_SIGNATURE
    assert world.hub_key.kid in error.message


@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_flipped_byte_in_directory_bytes_is_a_bad_signature(world: World, where: str) -> None:
    outer = codec.decode_map(world.signed_directory(), codec.DIRECTORY_FRAME_LIMITS)
    body = bytearray(outer["dir"])
    index = {"first": 0, "middle": len(body) // 2, "last": len(body) - 1}[where]
    body[index] ^= 0x01
    frame = codec.encode({**outer, "dir": bytes(body)})

    assert refuse_directory(frame, world, now=NOW).reason is Reason.DIR_BAD_SIGNATURE


def test_flipped_byte_in_signature_is_a_bad_signature(world: World) -> None:
    outer = codec.decode_map(world.signed_directory(), codec.DIRECTORY_FRAME_LIMITS)
    sig = bytearray(outer["sig"])
    sig[10] ^= 0x80
    frame = codec.encode({**outer, "sig": bytes(sig)})

    assert refuse_directory(frame, world, now=NOW).reason is Reason.DIR_BAD_SIGNATURE


# ---------------------------------------------------------------- rollback and equivocation


def test_older_version_than_one_seen_is_a_rollback(world: World) -> None:
    v2 = world.signed_directory(world.rebuild(version=2))

    error = refuse_directory(world.signed_directory(), world, now=NOW, last_seen=(2, digest_of(v2)))

    assert error.reason is Reason.DIR_ROLLBACK


def test_same_version_with_other_content_is_equivocation(world: World) -> None:
    seen = world.signed_directory()
    other = world.signed_directory(world.rebuild(version=1, expires_at=NOW + 31 * DAY_MS))
    assert other != seen

    error = refuse_directory(other, world, now=NOW, last_seen=(1, digest_of(seen)))

    assert error.reason is Reason.DIR_EQUIVOCATION


def test_same_version_with_same_bytes_is_accepted_again(world: World) -> None:
    frame = world.signed_directory()
    first = verify_directory(frame, world.hub_key.public, now=NOW)

    again = verify_directory(
        frame, world.hub_key.public, now=NOW, last_seen=(first.version, first.digest)
    )

    assert again.directory == world.directory


def test_newer_version_than_one_seen_is_accepted(world: World) -> None:
    v1 = world.signed_directory()

    verified = verify_directory(
        world.signed_directory(world.rebuild(version=2)),
        world.hub_key.public,
        now=NOW,
        last_seen=(1, digest_of(v1)),
    )

    assert verified.version == 2


# ---------------------------------------------------------------- freshness


def test_directory_expires_exactly_at_expires_at(world: World) -> None:
    frame = world.signed_directory(world.rebuild(version=1, expires_at=NOW + 1000))

    assert verify_directory(frame, world.hub_key.public, now=NOW + 999).version == 1
    assert refuse_directory(frame, world, now=NOW + 1000).reason is Reason.DIR_EXPIRED


def test_directory_issued_beyond_the_clock_skew_is_not_yet_valid(world: World) -> None:
    issued_at = NOW + DIRECTORY_CLOCK_SKEW_MS + 1
    frame = world.signed_directory(
        world.rebuild(version=1, issued_at=issued_at, expires_at=issued_at + DAY_MS)
    )

    assert refuse_directory(frame, world, now=NOW).reason is Reason.DIR_NOT_YET_VALID


def test_directory_issued_exactly_at_the_clock_skew_is_accepted(world: World) -> None:
    issued_at = NOW + DIRECTORY_CLOCK_SKEW_MS
    frame = world.signed_directory(
        world.rebuild(version=1, issued_at=issued_at, expires_at=issued_at + DAY_MS)
    )

    assert verify_directory(frame, world.hub_key.public, now=NOW).version == 1


def test_freshness_is_not_judged_without_a_now(world: World) -> None:
    frame = world.signed_directory(world.rebuild(version=1, expires_at=NOW - 1))

    assert verify_directory(frame, world.hub_key.public, now=None).version == 1


# ---------------------------------------------------------------- consistency


def _unknown_parent(d: Directory, world: World) -> tuple[Directory, str]:
    return replace_org(d, "jl.cc", parent="jl.nowhere"), "jl.nowhere"


def _unknown_channel(d: Directory, world: World) -> tuple[Directory, str]:
    return replace_org(d, "jl.cc", channels=("govnet", "satellite")), "satellite"


def _unknown_group_member(d: Directory, world: World) -> tuple[Directory, str]:
    group = GroupEntry(id="ghosts", name_zh="幽灵", name_en="ghosts", members=("jl.cc", "jl.ghost"))
    return altered(d, groups=(*d.groups, group)), "jl.ghost"


def _sign_kid_not_matching_key(d: Directory, world: World) -> tuple[Directory, str]:
    genuine = org(d, "jl.cc").sign_keys[0]
    wrong = genuine.model_copy(update={"kid": world.keys["jl.jl"].signing.kid})
    return replace_org(d, "jl.cc", sign_keys=(wrong,)), wrong.kid


def _enc_kid_not_matching_key(d: Directory, world: World) -> tuple[Directory, str]:
    genuine = org(d, "jl.cc").enc_keys[0]
    wrong = genuine.model_copy(update={"kid": world.keys["jl.jl"].encryption.kid})
    return replace_org(d, "jl.cc", enc_keys=(wrong,)), wrong.kid


def _hub_kid_not_matching_key(d: Directory, world: World) -> tuple[Directory, str]:
    wrong = d.hub_keys[0].model_copy(update={"kid": world.keys["jl.cc"].signing.kid})
    return altered(d, hub_keys=(wrong,)), wrong.kid


def _duplicate_org(d: Directory, world: World) -> tuple[Directory, str]:
    return altered(d, orgs=(*d.orgs, d.orgs[0])), "duplicate organisation"


def _congress_of_unknown(d: Directory, world: World) -> tuple[Directory, str]:
    return replace_org(d, "jl.congress", congress_of="jl.ghost"), "jl.ghost"


def _congress_of_a_department(d: Directory, world: World) -> tuple[Directory, str]:
    return replace_org(d, "jl.congress", congress_of="jl.dept.health"), "no government"


def _congress_without_its_government(d: Directory, world: World) -> tuple[Directory, str]:
    return replace_org(d, "jl.congress", congress_of=None), "jl.congress: a congress names"


def _congress_under_a_government(d: Directory, world: World) -> tuple[Directory, str]:
    # in the tree, jl.gov -> jl.congress would read as downward: a superior's instruction
    return replace_org(d, "jl.congress", parent="jl.gov"), "a congress has no parent"


def _government_under_a_congress(d: Directory, world: World) -> tuple[Directory, str]:
    return replace_org(d, "jl.cc", parent="jl.congress"), "its parent jl.congress is a congress"


def _congress_of_on_a_government(d: Directory, world: World) -> tuple[Directory, str]:
    return replace_org(d, "jl.cc", congress_of="jl.gov"), "jl.cc: congress_of is set"


@pytest.mark.parametrize(
    "damage",
    [
        _unknown_parent,
        _unknown_channel,
        _unknown_group_member,
        _sign_kid_not_matching_key,
        _enc_kid_not_matching_key,
        _hub_kid_not_matching_key,
        _duplicate_org,
        _congress_of_unknown,
        _congress_of_a_department,
        _congress_without_its_government,
        _congress_under_a_government,
        _government_under_a_congress,
        _congress_of_on_a_government,
    ],
    ids=lambda f: f.__name__.strip("_"),
)
def test_inconsistent_directory_is_refused_naming_the_problem(world: World, damage: Any) -> None:
    directory, named = damage(world.directory, world)

    error = refuse_directory(sign_raw(directory, world.hub_key), world, now=NOW)

    assert error.reason is Reason.DIR_INCONSISTENT
    assert named in error.message


def test_hub_refuses_to_sign_an_inconsistent_directory(world: World) -> None:
    directory, _ = _unknown_parent(world.directory, world)

    with pytest.raises(DirectoryError) as info:
        sign_directory(directory, world.hub_key)

    assert info.value.reason is Reason.DIR_INCONSISTENT


# ---------------------------------------------------------------- signing-key lookups


def test_revoked_signing_key_is_refused(world: World) -> None:
    kid = world.keys["jl.cc"].signing.kid
    directory = world.rebuild(version=2, revoked=[kid])

    with pytest.raises(SignatureError) as info:
        directory.signing_key("jl.cc", kid, NOW)

    assert info.value.reason is Reason.SIG_KEY_REVOKED
    assert kid in info.value.message


def test_revoked_hub_key_is_refused(world: World) -> None:
    directory = world.rebuild(version=2, revoked=[world.hub_key.kid])

    with pytest.raises(SignatureError) as info:
        directory.signing_key(directory.hub_id, world.hub_key.kid, NOW)

    assert info.value.reason is Reason.SIG_KEY_REVOKED


@pytest.mark.parametrize(
    ("at", "reason"),
    [
        (0, Reason.SIG_KEY_NOT_YET_VALID),
        (KEY_NOT_BEFORE - 1, Reason.SIG_KEY_NOT_YET_VALID),
        (KEY_NOT_BEFORE, None),
        (NOW, None),
        (KEY_NOT_AFTER - 1, None),
        (KEY_NOT_AFTER, Reason.SIG_KEY_EXPIRED),
        (KEY_NOT_AFTER + 1, Reason.SIG_KEY_EXPIRED),
    ],
)
def test_signing_key_is_usable_only_inside_its_window(
    world: World, at: int, reason: Reason | None
) -> None:
    signing = world.keys["jl.cc"].signing
    if reason is None:
        assert world.directory.signing_key("jl.cc", signing.kid, at) == signing.public
        return
    with pytest.raises(SignatureError) as info:
        world.directory.signing_key("jl.cc", signing.kid, at)
    assert info.value.reason is reason


@settings(max_examples=200, deadline=None)
@given(at=st.integers(min_value=0, max_value=MAX_WIRE_INT))
def test_signing_key_window_is_half_open_for_any_time(world: World, at: int) -> None:
    signing = world.keys["jl.dept.health"].signing
    if KEY_NOT_BEFORE <= at < KEY_NOT_AFTER:
        assert world.directory.signing_key("jl.dept.health", signing.kid, at) == signing.public
        return
    with pytest.raises(SignatureError) as info:
        world.directory.signing_key("jl.dept.health", signing.kid, at)
    early = at < KEY_NOT_BEFORE
    assert info.value.reason is (Reason.SIG_KEY_NOT_YET_VALID if early else Reason.SIG_KEY_EXPIRED)


def test_unknown_organisation_is_an_unknown_sender(world: World) -> None:
    with pytest.raises(SignatureError) as info:
        world.directory.signing_key("jl.nowhere", world.keys["jl.cc"].signing.kid, NOW)

    assert info.value.reason is Reason.SIG_UNKNOWN_SENDER
    assert "jl.nowhere" in info.value.message


def test_kid_of_another_organisation_is_an_unknown_key(world: World) -> None:
    with pytest.raises(SignatureError) as info:
        world.directory.signing_key("jl.cc", world.keys["jl.jl"].signing.kid, NOW)

    assert info.value.reason is Reason.SIG_UNKNOWN_KEY


def test_encryption_kid_is_not_a_signing_key(world: World) -> None:
    with pytest.raises(SignatureError) as info:
        world.directory.signing_key("jl.cc", world.keys["jl.cc"].encryption.kid, NOW)

    assert info.value.reason is Reason.SIG_UNKNOWN_KEY


def test_hub_kid_resolves_through_hub_keys(world: World) -> None:
    directory = world.directory

    assert directory.signing_key(directory.hub_id, world.hub_key.kid, NOW) == world.hub_key.public


def test_hub_id_with_an_organisation_kid_is_an_unknown_key(world: World) -> None:
    directory = world.directory

    with pytest.raises(SignatureError) as info:
        directory.signing_key(directory.hub_id, world.keys["jl.gov"].signing.kid, NOW)

    assert info.value.reason is Reason.SIG_UNKNOWN_KEY


# ---------------------------------------------------------------- encryption-key choice

OLD_FROM, OLD_UNTIL = NOW - 100 * DAY_MS, NOW + 10 * DAY_MS
NEW_FROM, NEW_UNTIL = NOW - DAY_MS, NOW + 365 * DAY_MS


def rotating_directory(world: World, revoked: tuple[str, ...] = ()) -> tuple[Directory, str, str]:
    """jl.cc holds an old and a new key pair whose windows overlap; (directory, old, new)."""
    new_sign, new_enc = SigningKey.generate(), EncryptionKey.generate()
    public: dict[str, list[PublicKeys]] = {}
    for org_id, keys in world.keys.items():
        public[org_id] = [
            PublicKeys(org_id, keys.signing.public, keys.encryption.public, OLD_FROM, OLD_UNTIL)
        ]
    public["jl.cc"].append(
        PublicKeys("jl.cc", new_sign.public, new_enc.public, NEW_FROM, NEW_UNTIL)
    )
    hub = world.hub_key
    plan = DirectoryPlan(
        version=2,
        issued_at=NOW - DAY_MS,
        expires_at=NOW + 30 * DAY_MS,
        hub_keys=(KeyEntry(kid=hub.kid, public=hub.public, not_before=0, not_after=MAX_WIRE_INT),),
        revoked=revoked,
    )
    directory = build_directory(world.topology, public, plan)
    return directory, world.keys["jl.cc"].encryption.kid, new_enc.kid


def test_encryption_key_is_the_newest_valid_one_during_an_overlap(world: World) -> None:
    directory, old, new = rotating_directory(world)

    assert directory.encryption_key("jl.cc", NOW).kid == new
    assert directory.encryption_key("jl.cc", NEW_FROM - 1).kid == old
    assert directory.encryption_key("jl.cc", OLD_UNTIL).kid == new


def test_encryption_key_skips_a_revoked_newer_key(world: World) -> None:
    first, _, new = rotating_directory(world)
    directory = altered(first, revoked=(new,))

    assert directory.encryption_key("jl.cc", NOW).kid == world.keys["jl.cc"].encryption.kid


@pytest.mark.parametrize("at", [OLD_FROM - 1, NEW_UNTIL, NEW_UNTIL + DAY_MS])
def test_encryption_key_is_refused_when_none_is_valid(world: World, at: int) -> None:
    directory, _, _ = rotating_directory(world)

    with pytest.raises(DirectoryError) as info:
        directory.encryption_key("jl.cc", at)

    assert "jl.cc" in info.value.message


def test_encryption_key_is_refused_when_the_only_valid_key_is_revoked(world: World) -> None:
    kid = world.keys["jl.jl"].encryption.kid
    directory = world.rebuild(version=2, revoked=[kid])

    with pytest.raises(DirectoryError) as info:
        directory.encryption_key("jl.jl", NOW)

    assert "jl.jl" in info.value.message


def test_encryption_key_of_unknown_organisation_is_refused(world: World) -> None:
    with pytest.raises(DirectoryError) as info:
        world.directory.encryption_key("jl.nowhere", NOW)

    assert "jl.nowhere" in info.value.message


# ---------------------------------------------------------------- groups and the tree


def test_prefectures_group_lists_the_nine_prefectures(world: World) -> None:
    assert world.directory.expand(["@prefectures"]) == PREFECTURES


def test_counties_group_of_a_prefecture_lists_its_counties(world: World) -> None:
    assert world.directory.expand(["@counties.jl.cc"]) == (
        "jl.cc.nongan",
        "jl.cc.yushu",
        "jl.cc.dehui",
    )


def test_departments_group_lists_the_five_departments(world: World) -> None:
    assert world.directory.expand(["@departments"]) == DEPARTMENTS


def test_channel_group_lists_who_is_on_the_channel(world: World) -> None:
    assert world.directory.expand(["@channel.classified"]) == ("cn.gov", "jl.gov")


def test_expand_drops_repeats_and_keeps_first_order(world: World) -> None:
    expanded = world.directory.expand(["jl.yb", "jl.gov", "@prefectures", "jl.gov", "jl.yb"])

    assert expanded == ("jl.yb", "jl.gov", *[p for p in PREFECTURES if p != "jl.yb"])


def test_expand_of_plain_organisations_keeps_them(world: World) -> None:
    assert world.directory.expand(["jl.cc.nongan", "cn.gov"]) == ("jl.cc.nongan", "cn.gov")


def test_expand_refuses_an_unknown_group_naming_it(world: World) -> None:
    with pytest.raises(ValueError, match=r"@counties\.jl\.nowhere"):
        world.directory.expand(["jl.cc", "@counties.jl.nowhere"])


def test_expand_refuses_an_unknown_organisation_naming_it(world: World) -> None:
    with pytest.raises(ValueError, match=r"jl\.ghost"):
        world.directory.expand(["jl.cc", "jl.ghost"])


def test_ancestors_are_listed_nearest_first(world: World) -> None:
    assert world.directory.ancestors("jl.cc.nongan") == ("jl.cc", "jl.gov", "cn.gov")


def test_top_of_the_tree_has_no_ancestors(world: World) -> None:
    assert world.directory.ancestors("cn.gov") == ()
