"""The witness's decisions (spoke.witness.decide / conclude / verify), table-driven and
synchronous, on checkpoints of real trees signed with the world's hub key; and the
witness itself, offline, refusing a bad signature without calling it a fork."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
from structlog.testing import capture_logs

from schemas import transport
from schemas.directory import VerifiedDirectory
from schemas.errors import PeerError
from schemas.keys import SigningKey
from schemas.ledger import Consistent, Fork, Restored, SignedCheckpoint, pack_path, read_checkpoint
from spoke.context import now_ms
from spoke.witness import Adopt, Ask, Same, Witness, conclude, decide, verify
from tests.spoke.conftest import OfflineSpokeFactory
from tests.spoke.ledgerpeer import Tree
from tests.world import World

T0 = now_ms() - 3600_000  # inside the live directory's key windows


def ckpt(tree: Tree, size: int, at: int) -> SignedCheckpoint:
    return read_checkpoint(tree.checkpoint(at, size))


@dataclass
class Histories:
    a: Tree  # the history the hub shows
    b: Tree  # another one, signed by the same key: a fork
    restored: Tree  # a[:4], then the hub's signed ledger.restored entry, then more


def histories(world: World, hub_id: str) -> Histories:
    a = Tree(hub_id, world.hub_key)
    a.grow(8, at=T0, tag="a")
    b = Tree(hub_id, world.hub_key)
    b.grow(8, at=T0, tag="b")
    restored = Tree(hub_id, world.hub_key, list(a.entries[:4]))
    restored.append(
        "ledger.restored",
        at=T0 + 50_000,
        detail={"restored_size": 4, "reason": "disk replaced, restored from backup"},
    )
    restored.grow(3, at=T0 + 50_000, tag="r")
    return Histories(a, b, restored)


def answer(
    tree: Tree, old: int, new: int, *, restore: int | None = None
) -> transport.ConsistencyMsg:
    leaf = path = None
    if restore is not None:
        entry = tree.entries[restore - 1]
        leaf, path = entry.leaf(), pack_path(tree.inclusion(entry, new))
    return transport.ConsistencyMsg(old, new, tree.consistency(old, new), leaf, path)


Case = Callable[[Histories], object]


@pytest.fixture
def hub_id(verified_live: VerifiedDirectory) -> str:
    return verified_live.directory.hub_id


def test_first_checkpoint_is_adopted_on_first_use(world: World, hub_id: str) -> None:
    h = histories(world, hub_id)
    new = ckpt(h.a, 3, T0)
    assert decide(None, new, 0, b"") == Adopt(new)


def test_the_same_checkpoint_again_is_nothing_new(world: World, hub_id: str) -> None:
    h = histories(world, hub_id)
    held = ckpt(h.a, 3, T0)
    assert decide(held, held, 2, b"") == Same()


def test_attached_proof_is_used_when_it_starts_from_the_held_size(
    world: World, hub_id: str
) -> None:
    h = histories(world, hub_id)
    held, new = ckpt(h.a, 3, T0), ckpt(h.a, 5, T0 + 1000)
    assert decide(held, new, 3, h.a.consistency(3, 5)) == Consistent(new)


@pytest.mark.parametrize(
    "sizes",
    [
        (3, 6, 5, (3, 6)),  # checkpoints were missed: a question
        (5, 3, 2, (3, 5)),  # a late, older copy: asked the other way round
        (5, 5, 4, (5, 5)),  # the same size: asked, so a restore statement may come
    ],
)
def test_a_question_is_asked_when_the_attached_proof_does_not_start_from_the_held_size(
    world: World, hub_id: str, sizes: tuple[int, int, int, tuple[int, int]]
) -> None:
    held_size, new_size, prev_size, asked = sizes
    h = histories(world, hub_id)
    held = ckpt(h.a, held_size, T0 + 2000)
    new = ckpt(h.a if held_size != new_size else h.b, new_size, T0 + 3000)
    decision = decide(held, new, prev_size, h.a.consistency(prev_size, new_size))
    assert decision == Ask(*asked)


def test_a_late_older_checkpoint_the_held_one_extends_keeps_the_held_one(
    world: World, hub_id: str
) -> None:
    h = histories(world, hub_id)
    held, late = ckpt(h.a, 5, T0 + 2000), ckpt(h.a, 3, T0 + 1000)
    assert conclude(held, late, answer(h.a, 3, 5)) == Consistent(held)


def test_two_roots_for_one_size_are_a_fork(world: World, hub_id: str) -> None:
    h = histories(world, hub_id)
    held, other = ckpt(h.a, 5, T0), ckpt(h.b, 5, T0 + 1000)
    verdict = conclude(held, other, transport.ConsistencyMsg(5, 5, b""))
    assert isinstance(verdict, Fork)
    assert "two different roots" in verdict.why


def test_an_attached_proof_that_fails_is_a_fork_unless_the_hub_answers_otherwise(
    world: World, hub_id: str
) -> None:
    h = histories(world, hub_id)
    held, forked = ckpt(h.a, 3, T0), ckpt(h.b, 5, T0 + 1000)
    decision = decide(held, forked, 3, h.b.consistency(3, 5))
    assert isinstance(decision, Ask)
    assert isinstance(decision.fallback, Fork)  # the verdict if the hub stays silent
    assert isinstance(conclude(held, forked, answer(h.b, 3, 5)), Fork)


@pytest.mark.parametrize(
    ("change", "accepted"),
    [
        ("as declared", True),
        ("no restore entry", False),
        ("entry not included", False),  # its path leads to another root
        ("restored_size not below the held size", False),
        ("entry older than the held checkpoint", False),
        ("entry not right after the restored ledger", False),  # claims less was lost
    ],
)
def test_a_restore_is_accepted_only_as_the_hubs_included_entry_that_covers_the_loss(
    world: World, hub_id: str, change: str, accepted: bool
) -> None:
    h = histories(world, hub_id)
    held = ckpt(h.a, 6, T0 + 10_000)
    tree = h.restored
    if change == "restored_size not below the held size":
        tree.entries[4] = type(tree.entries[4])(5, T0 + 50_000, "ledger.restored", None, None,
                                                 '{"reason":"x","restored_size":6}')  # fmt: skip
    if change == "entry older than the held checkpoint":
        tree.entries[4] = type(tree.entries[4])(5, T0 + 5_000, "ledger.restored", None, None,
                                                 '{"reason":"x","restored_size":4}')  # fmt: skip
    if change == "entry not right after the restored ledger":
        tree.entries[4] = type(tree.entries[4])(5, T0 + 50_000, "ledger.restored", None, None,
                                                 '{"reason":"x","restored_size":3}')  # fmt: skip
    new = ckpt(tree, 8, T0 + 60_000)
    reply = answer(tree, 6, 8, restore=None if change == "no restore entry" else 5)
    if change == "entry not included":
        reply = transport.ConsistencyMsg(6, 8, None, reply.restore_leaf, pack_path([b"\0" * 32]))
    verdict = conclude(held, new, reply)
    if accepted:
        assert verdict == Restored(new, 4, 6, tree.entries[4])
    else:
        assert isinstance(verdict, Fork)


@pytest.mark.parametrize("what", ["another key", "another hub", "tampered"])
def test_a_checkpoint_that_does_not_verify_is_refused(
    world: World, verified_live: VerifiedDirectory, what: str
) -> None:
    directory = verified_live.directory
    key = SigningKey.generate() if what == "another key" else world.hub_key
    hub = "other.hub" if what == "another hub" else directory.hub_id
    frame = Tree(hub, key).checkpoint(T0, 0)
    if what == "tampered":
        frame = frame.replace(b"hub_id", b"hub_iD")
    with pytest.raises(PeerError):
        verify(frame, directory)


async def test_the_witness_refuses_a_bad_signature_and_records_no_fork(
    offline_spoke: OfflineSpokeFactory, world: World
) -> None:
    spoke = offline_spoke("jl.gov")
    sent: list[bytes] = []

    async def send(_channel: str, payload: bytes) -> bool:
        sent.append(payload)
        return True

    witness = Witness(spoke.ctx, send)
    good = Tree(spoke.directory.hub_id, world.hub_key)
    good.grow(3, at=T0)
    forged = Tree(spoke.directory.hub_id, SigningKey.generate(), list(good.entries))
    forged.grow(2, at=T0)
    witness.checkpoint("govnet", transport.CheckpointMsg(good.checkpoint(T0), 0, b""))
    await witness._one(witness._pending)  # type: ignore[arg-type]
    with capture_logs() as logs:
        message = transport.CheckpointMsg(forged.checkpoint(T0 + 1), 3, forged.consistency(3, 5))
        witness.checkpoint("govnet", message)
        await witness._one(witness._pending)  # type: ignore[arg-type]
    assert [e["event"] for e in logs] == ["ledger.checkpoint_refused"]
    assert witness.held is not None
    assert witness.held.size == 3
    assert spoke.ctx.state.alarms() == []
    assert witness.files.load() == good.checkpoint(T0)
