"""The witness's decisions (spoke.witness.decide / conclude / verify), table-driven and
synchronous, on checkpoints of real trees signed with the world's hub key; and the
witness itself, offline, refusing a bad signature without calling it a fork."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from structlog.testing import capture_logs

from runtime.clock import now_ms
from schemas import transport
from schemas.directory import VerifiedDirectory
from schemas.errors import PeerError
from schemas.keys import SigningKey
from schemas.ledger import Consistent, Fork, Restored, SignedCheckpoint, pack_path, read_checkpoint
from spoke.config import Ledger
from spoke.ledgeralarms import alarm_lines
from spoke.prover import ProveError, Prover
from spoke.state import DAY_MS, LOG_KEEP, LoggedCheckpoint
from spoke.witness import Adopt, Ask, Same, Unproven, Witness, conclude, decide, verify
from tests.spoke.conftest import OfflineSpoke, OfflineSpokeFactory
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
    ("change", "expected"),
    [
        ("as declared", Restored),
        ("no restore entry", Fork),
        ("entry not included", Unproven),  # its path leads to another root; and no proof
        ("restored_size not below the held size", Fork),
        ("entry older than the held checkpoint", Fork),
        ("entry not right after the restored ledger", Fork),  # claims less was lost
    ],
)
def test_a_restore_is_accepted_only_as_the_hubs_included_entry_that_covers_the_loss(
    world: World, hub_id: str, change: str, expected: type
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
    if expected is Restored:
        assert verdict == Restored(new, 4, 6, tree.entries[4])
    else:
        assert isinstance(verdict, expected)


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


# ---------------------------------------------------------------------------------------
# The witness's own records (offline): a hub stub answers its questions from a Tree, or
# stays silent; the checkpoint log, the held checkpoint in state.db, and the alarms.


@dataclass
class HubStub:
    """The hub's answers to a witness's consistency questions (None: silence)."""

    witness: Witness | None = None
    tree: Tree | None = None
    restore: int | None = None  # the seq of the restore entry to show
    asked: list[tuple[int, int]] = field(default_factory=list)
    no_proof: bool = False

    async def send(self, _channel: str, payload: bytes) -> bool:
        message = transport.decode(payload)
        if isinstance(message, transport.ConsistencyAsk) and self.tree is not None:
            assert self.witness is not None
            self.asked.append((message.old, message.new))
            reply = answer(self.tree, message.old, message.new, restore=self.restore)
            if self.no_proof:
                reply = transport.ConsistencyMsg(message.old, message.new, None)
            self.witness.answer(reply)
        return True


def quick(spoke: OfflineSpoke) -> None:
    """A spoke whose questions to the hub wait a moment, not 30 s."""
    config = spoke.ctx.config
    spoke.ctx.config = config.model_copy(update={"ledger": Ledger(answer_timeout=0.05)})


def witness_of(spoke: OfflineSpoke, hub: HubStub) -> Witness:
    witness = Witness(spoke.ctx, hub.send)
    hub.witness = witness
    witness.load()
    return witness


async def publish(witness: Witness, frame: bytes, prev_size: int, proof: bytes = b"") -> None:
    witness.checkpoint("govnet", transport.CheckpointMsg(frame, prev_size, proof))
    pending = witness._pending
    assert pending is not None
    await witness._one(pending)


async def witness_holding_4_then_6(
    offline_spoke: OfflineSpokeFactory, world: World
) -> tuple[OfflineSpoke, Witness, HubStub, Histories]:
    spoke = offline_spoke("jl.gov")
    h = histories(world, spoke.directory.hub_id)
    hub = HubStub()
    witness = witness_of(spoke, hub)
    await publish(witness, h.a.checkpoint(T0 + 1000, 4), 0)
    await publish(witness, h.a.checkpoint(T0 + 2000, 6), 4, h.a.consistency(4, 6))
    assert witness.held is not None
    assert witness.held.size == 6
    return spoke, witness, hub, h


async def test_a_restore_claim_over_a_rewritten_prefix_is_a_fork_at_the_witness(
    offline_spoke: OfflineSpokeFactory, world: World
) -> None:
    """Entries 1..4 rewritten, then a well-placed statement that only 5.. were lost: the
    restored ledger does not extend the checkpoint of size 4 this spoke logged."""
    spoke, witness, hub, h = await witness_holding_4_then_6(offline_spoke, world)
    rewritten = Tree(h.a.hub_id, world.hub_key)
    rewritten.grow(4, at=T0, tag="rewritten")
    rewritten.append(
        "ledger.restored", at=T0 + 50_000, detail={"restored_size": 4, "reason": "backup"}
    )
    rewritten.grow(3, at=T0 + 50_000, tag="r")
    hub.tree, hub.restore = rewritten, 5
    with capture_logs() as logs:
        await publish(witness, rewritten.checkpoint(T0 + 60_000), 6, b"")
    assert (4, 8) in hub.asked
    forks = [e for e in logs if e["event"] == "ledger.fork"]
    assert len(forks) == 1
    assert "does not keep the history up to size 4" in forks[0]["why"]
    assert not [e for e in logs if e["event"] == "ledger.restored"]
    assert witness.held is not None
    assert witness.held.size == 6  # not adopted
    assert [a.kind for a in spoke.ctx.state.alarms()] == ["fork"]


async def test_an_honest_restore_is_proven_from_the_logged_checkpoint_and_stays_an_alarm(
    offline_spoke: OfflineSpokeFactory, world: World
) -> None:
    spoke, witness, hub, h = await witness_holding_4_then_6(offline_spoke, world)
    hub.tree, hub.restore = h.restored, 5
    with capture_logs() as logs:
        await publish(witness, h.restored.checkpoint(T0 + 60_000), 6, b"")
    assert (4, 8) in hub.asked
    (restored,) = [e for e in logs if e["event"] == "ledger.restored"]
    assert (restored["lost_from"], restored["lost_to"], restored["checked_from"]) == (4, 6, 4)
    assert witness.held is not None
    assert witness.held.size == 8
    lines = alarm_lines(spoke.ctx.state.alarms(open_only=True), "/etc/spoke.toml")
    assert len(lines) == 1
    assert lines[0].startswith("账本已恢复 / ledger restored")
    assert "5..6" in lines[0]
    assert "spoke witness reset --config /etc/spoke.toml --accept-current --by" in lines[0]
    # the log forgets the lost history, keeps what the restored ledger kept
    assert [c.size for c in spoke.ctx.state.logged_checkpoints()] == [4, 8]
    await witness.reset(by="张三", why="restore announced by the hub operator")
    assert alarm_lines(spoke.ctx.state.alarms(open_only=True), "spoke.toml") == []


async def test_a_restore_below_every_logged_checkpoint_is_accepted_and_says_so(
    offline_spoke: OfflineSpokeFactory, world: World
) -> None:
    spoke = offline_spoke("jl.gov")
    h = histories(world, spoke.directory.hub_id)
    hub = HubStub(tree=h.restored, restore=5)
    witness = witness_of(spoke, hub)
    await publish(witness, h.a.checkpoint(T0 + 2000, 6), 0)
    with capture_logs() as logs:
        await publish(witness, h.restored.checkpoint(T0 + 60_000), 6, b"")
    (restored,) = [e for e in logs if e["event"] == "ledger.restored"]
    assert restored["checked_from"] is None
    assert "nothing to compare" in restored["detail"]
    assert hub.asked == [(6, 8)]


@pytest.mark.parametrize("how", ["silence", "no proof"])
async def test_a_checkpoint_the_hub_does_not_prove_is_an_alarm_until_a_later_one_is_proven(
    offline_spoke: OfflineSpokeFactory, world: World, how: str
) -> None:
    spoke = offline_spoke("jl.gov")
    quick(spoke)
    h = histories(world, spoke.directory.hub_id)
    hub = HubStub(tree=h.a if how == "no proof" else None, no_proof=how == "no proof")
    witness = witness_of(spoke, hub)
    await publish(witness, h.a.checkpoint(T0 + 1000, 3), 0)
    with capture_logs() as logs:
        await publish(witness, h.a.checkpoint(T0 + 2000, 5), 4, h.a.consistency(4, 5))
    (unproven,) = [e for e in logs if e["event"] == "ledger.unproven"]
    assert unproven["log_level"] == "error"
    assert (unproven["held_size"], unproven["new_size"]) == (3, 5)
    assert witness.held is not None
    assert witness.held.size == 3
    (line,) = alarm_lines(spoke.ctx.state.alarms(open_only=True), "spoke.toml")
    assert line.startswith("账本无法验证 / ledger unproven")
    with capture_logs() as logs:
        await publish(witness, h.a.checkpoint(T0 + 3000, 6), 3, h.a.consistency(3, 6))
    assert [e["event"] for e in logs if e["event"].startswith("ledger.prov")] == ["ledger.proven"]
    assert witness.held.size == 6
    assert spoke.ctx.state.alarms(open_only=True) == []


async def test_a_smaller_checkpoint_signed_later_that_the_hub_does_not_prove_is_a_fork(
    offline_spoke: OfflineSpokeFactory, world: World
) -> None:
    spoke = offline_spoke("jl.gov")
    quick(spoke)
    h = histories(world, spoke.directory.hub_id)
    witness = witness_of(spoke, HubStub())
    await publish(witness, h.a.checkpoint(T0 + 1000, 5), 0)
    with capture_logs() as logs:
        await publish(witness, h.a.checkpoint(T0 + 2000, 3), 2, h.a.consistency(2, 3))
    (fork,) = [e for e in logs if e["event"] == "ledger.fork"]
    assert "did not prove that it did not go back" in fork["why"]


async def test_a_lost_checkpoint_file_is_written_again_from_the_state(
    offline_spoke: OfflineSpokeFactory, world: World
) -> None:
    spoke = offline_spoke("jl.gov")
    h = histories(world, spoke.directory.hub_id)
    witness = witness_of(spoke, HubStub())
    with capture_logs() as logs:
        await publish(witness, h.a.checkpoint(T0 + 1000, 3), 0)
        await publish(witness, h.a.checkpoint(T0 + 2000, 5), 3, h.a.consistency(3, 5))
    (first,) = [e for e in logs if e["event"] == "ledger.first_checkpoint"]
    assert first["log_level"] == "warning"
    held = h.a.checkpoint(T0 + 2000, 5)
    for damage in ("missing", "unreadable"):
        if damage == "missing":
            witness.files.held.unlink()
        else:
            witness.files.held.write_bytes(b"not a checkpoint")
        with capture_logs() as logs:
            again = witness_of(spoke, HubStub())
        (restored,) = [e for e in logs if e["event"] == "ledger.checkpoint_file_restored"]
        assert (restored["was"], restored["log_level"]) == (damage, "warning")
        assert again.held is not None
        assert again.held.frame == held
        assert witness.files.load() == held
    # the file and the held row both gone: the newest logged checkpoint, not the hub's next
    witness.files.held.unlink()
    spoke.ctx.state.hold_checkpoint(None)
    again = witness_of(spoke, HubStub())
    assert again.held is not None
    assert again.held.frame == held
    assert witness.files.load() == held


def test_the_checkpoint_log_keeps_the_last_ones_and_the_first_of_each_day(
    offline_spoke: OfflineSpokeFactory,
) -> None:
    state = offline_spoke("jl.gov").ctx.state
    hour = 3600_000
    for n in range(1, 301):  # 300 checkpoints, one an hour: 12.5 days
        state.hold_checkpoint(LoggedCheckpoint(n, bytes(32), n * hour, b"frame%d" % n))
    sizes = [c.size for c in state.logged_checkpoints()]
    firsts = sorted({min(n for n in range(1, 301) if (n * hour) // DAY_MS == d)
                     for d in {(n * hour) // DAY_MS for n in range(1, 301)}})  # fmt: skip
    assert sizes == sorted(set(firsts) | set(range(101, 301)))
    assert len(sizes) <= LOG_KEEP + 13


async def test_spoke_prove_refuses_a_proof_whose_checkpoint_forks_from_the_held_one(
    offline_spoke: OfflineSpokeFactory, world: World
) -> None:
    spoke = offline_spoke("jl.gov")
    h = histories(world, spoke.directory.hub_id)
    msg_id = bytes(range(16))
    spoke.ctx.state.add_inbound(
        msg_id=msg_id, sender="jl.cc", channel="govnet", folder=spoke.outbox,
        digest=bytes(32), classification="内部", at=T0,
    )  # fmt: skip
    h.b.append("message.accepted", at=T0 + 4000, msg_id=msg_id, org="jl.cc")
    hub = HubStub(tree=h.b)  # the hub proves from another history
    witness = witness_of(spoke, hub)

    async def send(channel: str, payload: bytes) -> bool:
        message = transport.decode(payload)
        if isinstance(message, transport.ProveAsk):
            entry = h.b.entries[-1]
            pairs = [(entry.leaf(), pack_path(h.b.inclusion(entry)))]
            prover.proof(
                transport.ProofMsg(
                    msg_id, h.b.checkpoint(T0 + 5000), transport.encode_proof_entries(pairs), False
                )
            )
            return True
        return await hub.send(channel, payload)

    prover = Prover(spoke.ctx, send, witness)
    await publish(witness, h.a.checkpoint(T0 + 1000, 8), 0)
    with pytest.raises(ProveError) as refused:
        await prover.prove(msg_id)
    assert refused.value.code == "prove.fork"
    assert "\n" not in refused.value.message
    assert "账本分叉" in refused.value.message
    assert (8, 9) in hub.asked
    assert [a.kind for a in spoke.ctx.state.alarms()] == ["fork"]
    assert not (spoke.ctx.config.work / "evidence").exists()
