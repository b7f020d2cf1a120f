"""The directory across levels: the other hubs it lists, the organisations reached through
them (``via``), the prefix claims every level checks, and what stays byte for byte as it
was for a hub that is no member and has none (docs/architecture.md, "Hubs under hubs")."""

from __future__ import annotations

from typing import Any

import pytest

from schemas import codec
from schemas.directory import (
    Directory,
    HubRole,
    OrgEntry,
    sign_directory,
    verify_directory,
)
from schemas.dirtree import DirectoryTree, DirRoot, derive_root, materialise
from schemas.errors import DirectoryError, Reason, SchemaError, SignatureError
from schemas.keys import KeyKind, SigningKey
from schemas.labels import Classification
from schemas.receipts import ReceiptEntry, ReceiptStatus, sign_receipts, verify_receipts
from tests.federation import MEMBER, REMOTE, UPSTREAM, federated, hub, make_hub_keys, outside
from tests.world import NOW, World


@pytest.fixture(scope="module")
def hub_keys() -> dict[str, SigningKey]:
    return make_hub_keys()


def problems_of(directory: Directory) -> str:
    with pytest.raises(DirectoryError) as info:
        directory.check_consistent()
    assert info.value.reason is Reason.DIR_INCONSISTENT
    return info.value.message


# ---------------------------------------------------------------- nothing changes without hubs


def test_a_directory_without_hubs_encodes_no_hubs_and_no_via_keys(world: World) -> None:
    wire = codec.decode_map(codec.encode(world.directory.to_wire()), codec.DIRECTORY_LIMITS)

    assert "hubs" not in wire
    assert all("via" not in org for org in wire["orgs"])


def test_a_root_without_hubs_encodes_no_hubs_key(world: World) -> None:
    root = derive_root(world.directory, bytes(32), DirectoryTree.of(world.directory))

    assert "hubs" not in root.to_wire()


def test_an_own_organisation_written_with_a_nil_via_is_refused(world: World) -> None:
    wire = {**world.directory.orgs[0].to_wire(), "via": None}

    with pytest.raises(SchemaError, match="via"):
        OrgEntry.from_wire(wire, what="entry")


def test_a_directory_written_with_empty_hubs_is_refused(world: World) -> None:
    with pytest.raises(SchemaError, match="hubs"):
        Directory.from_wire({**world.directory.to_wire(), "hubs": ()}, what="directory")


# ---------------------------------------------------------------- a federated directory


def test_a_federated_directory_signs_verifies_and_keeps_its_hubs_and_vias(
    world: World, hub_keys: dict[str, SigningKey]
) -> None:
    directory = federated(world, hub_keys)

    verified = verify_directory(
        sign_directory(directory, world.hub_key), world.hub_key.public, now=NOW
    )

    assert verified.directory.hubs == directory.hubs
    assert verified.directory.org("ln.gov") == directory.org("ln.gov")
    assert verified.directory.upstream is not None
    assert verified.directory.upstream.id == UPSTREAM


def test_the_next_hop_is_the_spoke_itself_or_the_hub_it_is_reached_through(
    world: World, hub_keys: dict[str, SigningKey]
) -> None:
    directory = federated(world, hub_keys)

    assert directory.next_hop("jl.cc") == "jl.cc"
    assert directory.next_hop("cn.gov") == UPSTREAM
    assert directory.next_hop("ln.gov") == UPSTREAM
    assert directory.next_hop("jl.yb") == MEMBER


def test_every_hub_of_the_federation_is_a_hub_for_receipts_and_no_organisation_is(
    world: World, hub_keys: dict[str, SigningKey]
) -> None:
    directory = federated(world, hub_keys)

    assert directory.is_hub(directory.hub_id)
    assert directory.is_hub(REMOTE)
    assert not directory.is_hub("cn.gov")
    assert directory.key_owner(hub_keys[REMOTE].kid) == (REMOTE, KeyKind.SIGN)


def test_a_root_carries_the_hubs_and_a_spoke_s_partial_directory_has_them(
    world: World, hub_keys: dict[str, SigningKey]
) -> None:
    directory = federated(world, hub_keys)
    root = derive_root(directory, bytes(32), DirectoryTree.of(directory))
    wire = codec.decode_map(
        codec.encode(root.to_wire()), codec.Limits("t", 1 << 20, 4096, 1024, 20000, 4096, 5)
    )

    again = DirRoot.from_wire(wire, what="root")

    assert again.hubs == directory.hubs
    assert materialise(again, []).hub(REMOTE) == directory.hub(REMOTE)


# ---------------------------------------------------------------- prefix claims


def test_a_member_s_organisation_outside_its_prefixes_is_refused_naming_both(
    world: World, hub_keys: dict[str, SigningKey]
) -> None:
    directory = federated(world, hub_keys)
    orgs = (*directory.orgs, outside("hl.gov", "cn.gov", MEMBER, channels=("govnet",)))

    message = problems_of(federated(world, hub_keys, orgs=orgs))

    assert "hl.gov: outside the prefixes of its hub yb.hub (jl.yb)" in message


def test_an_own_organisation_under_a_member_s_prefix_is_refused(
    world: World, hub_keys: dict[str, SigningKey]
) -> None:
    directory = federated(world, hub_keys)
    orgs = tuple(
        o.model_copy(update={"via": None}) if o.id == "jl.yb" else o for o in directory.orgs
    )

    assert "jl.yb: listed as this hub's own, but hub yb.hub claims it" in problems_of(
        federated(world, hub_keys, orgs=orgs)
    )


def test_an_organisation_a_remote_hub_claims_must_come_through_the_hub_that_reaches_it(
    world: World, hub_keys: dict[str, SigningKey]
) -> None:
    directory = federated(world, hub_keys)
    orgs = (*directory.orgs, outside("ln.dl", "ln.gov", MEMBER, channels=("govnet",)))

    message = problems_of(federated(world, hub_keys, orgs=orgs))

    assert "ln.dl: reached via yb.hub, but hub ln.hub claims it" in message


def test_an_organisation_via_a_hub_not_listed_is_refused(
    world: World, hub_keys: dict[str, SigningKey]
) -> None:
    directory = federated(world, hub_keys)
    orgs = (*directory.orgs, outside("sc.gov", "cn.gov", "sc.hub"))

    assert "sc.gov: via sc.hub names no neighbour hub" in problems_of(
        federated(world, hub_keys, orgs=orgs)
    )


def test_an_organisation_on_a_channel_its_hub_s_link_lacks_is_refused(
    world: World, hub_keys: dict[str, SigningKey]
) -> None:
    directory = federated(world, hub_keys)
    orgs = tuple(
        o.model_copy(update={"channels": ("govnet", "classified")}) if o.id == "jl.yb" else o
        for o in directory.orgs
    )

    assert "jl.yb: channel classified is not on the link to yb.hub" in problems_of(
        federated(world, hub_keys, orgs=orgs)
    )


def test_overlapping_prefixes_of_two_hubs_are_refused(
    world: World, hub_keys: dict[str, SigningKey]
) -> None:
    directory = federated(world, hub_keys)
    greedy = hub(
        REMOTE, HubRole.REMOTE, hub_keys[REMOTE], prefixes=("jl",), channels=(), via=UPSTREAM
    )
    hubs = tuple(greedy if h.id == REMOTE else h for h in directory.hubs)

    assert "prefix jl.yb overlaps hub ln.hub's jl" in problems_of(
        federated(world, hub_keys, hubs=hubs)
    )


def test_a_remote_hub_may_lie_within_the_prefix_of_the_hub_it_is_reached_through(
    world: World, hub_keys: dict[str, SigningKey]
) -> None:
    # Yanbian's hub under Jilin's member hub yb.hub, as the national hub would list Jilin's
    directory = federated(world, hub_keys)
    below = hub(
        "yj.hub",
        HubRole.REMOTE,
        SigningKey.generate(),
        prefixes=("jl.yb.yj",),
        channels=(),
        via=MEMBER,
    )

    federated(world, hub_keys, hubs=(*directory.hubs, below)).check_consistent()


def test_a_remote_hub_within_a_prefix_reached_another_way_is_refused(
    world: World, hub_keys: dict[str, SigningKey]
) -> None:
    directory = federated(world, hub_keys)
    astray = hub(
        "yj.hub",
        HubRole.REMOTE,
        SigningKey.generate(),
        prefixes=("jl.yb.yj",),
        channels=(),
        via=UPSTREAM,
    )

    assert "prefix jl.yb.yj overlaps hub yb.hub's jl.yb" in problems_of(
        federated(world, hub_keys, hubs=(*directory.hubs, astray))
    )


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {"role": HubRole.UPSTREAM, "prefixes": (), "via": None, "channels": ("govnet",)},
            "more than one upstream",
        ),
        ({"via": None}, "a remote hub is reached via a neighbour hub"),
        ({"channels": ("govnet",)}, "a remote hub has no link to this hub"),
        ({"prefixes": ()}, "a remote hub claims at least one prefix"),
        ({"id": "jl.gov"}, "hub jl.gov is also this hub's id or an organisation id"),
    ],
)
def test_a_hub_entry_that_contradicts_its_role_is_refused(
    world: World, hub_keys: dict[str, SigningKey], change: dict[str, Any], expected: str
) -> None:
    directory = federated(world, hub_keys)
    hubs = tuple(h.model_copy(update=change) if h.id == REMOTE else h for h in directory.hubs)

    assert expected in problems_of(federated(world, hub_keys, hubs=hubs))


def test_the_upstream_claims_no_prefix(world: World, hub_keys: dict[str, SigningKey]) -> None:
    directory = federated(world, hub_keys)
    hubs = tuple(
        h.model_copy(update={"prefixes": ("cn",)}) if h.id == UPSTREAM else h
        for h in directory.hubs
    )

    assert "an upstream serves everyone else; it claims no prefix" in problems_of(
        federated(world, hub_keys, hubs=hubs)
    )


# ---------------------------------------------------------------- hub keys sign receipts


def accepted(msg_id: bytes = b"\x01" * 16) -> ReceiptEntry:
    return ReceiptEntry(
        msg_id=msg_id,
        recipient=None,
        status=ReceiptStatus.ACCEPTED,
        at=NOW,
        subject=bytes(32),
        classification=Classification.INTERNAL,
        reason=None,
        detail=None,
        retriable=False,
    )


def test_another_hub_s_accepted_verifies_with_its_key_from_the_directory(
    world: World, hub_keys: dict[str, SigningKey]
) -> None:
    directory = federated(world, hub_keys)
    frame = sign_receipts(REMOTE, hub_keys[REMOTE], [accepted()], at=NOW)

    verified = verify_receipts(frame, directory)

    assert verified.batch.issuer == REMOTE


def test_a_revoked_hub_key_signs_nothing(world: World, hub_keys: dict[str, SigningKey]) -> None:
    directory = federated(world, hub_keys, revoked=(hub_keys[REMOTE].kid,))
    frame = sign_receipts(REMOTE, hub_keys[REMOTE], [accepted()], at=NOW)

    with pytest.raises(SignatureError) as info:
        verify_receipts(frame, directory)

    assert info.value.reason is Reason.SIG_KEY_REVOKED


def test_an_organisation_may_not_sign_what_only_hubs_issue(
    world: World, hub_keys: dict[str, SigningKey]
) -> None:
    directory = federated(world, hub_keys)
    frame = sign_receipts("jl.cc", world.keys["jl.cc"].signing, [accepted()], at=NOW)

    with pytest.raises(SignatureError) as info:
        verify_receipts(frame, directory)

    assert info.value.reason is Reason.RCPT_WRONG_ISSUER
