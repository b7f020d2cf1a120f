"""Every tampering the issue names, as a witness meets it: the hub signs its new history
honestly (it holds the key) and proves what it can from its own tree; the witness holding
a checkpoint of the true history judges it a fork, every time."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from schemas import merkle
from schemas.keys import SigningKey
from schemas.ledger import (
    Checkpoint,
    Consistent,
    Entry,
    Fork,
    Restored,
    RestoreProof,
    SignedCheckpoint,
    judge,
    read_checkpoint,
    sign_checkpoint,
)

HUB = SigningKey(b"\x01" * 32)
HELD = 30  # the size of the checkpoint the witness holds


def entry(seq: int, what: str = "message.accepted") -> Entry:
    return Entry(seq, 1_000 + seq, what, None, "jl.gov", f'{{"n":{seq}}}')


def renumbered(entries: list[Entry]) -> list[Entry]:
    """A history as a tamperer leaves it: seq 1..n again, so the chain could be re-hashed."""
    return [Entry(i + 1, e.at, e.event, e.msg_id, e.org, e.detail) for i, e in enumerate(entries)]


TRUE = [entry(i) for i in range(1, 41)]
LATER = [entry(i, "delivery.sent") for i in range(41, 61)]  # what the hub writes afterwards


def signed(entries: list[Entry], at: int) -> tuple[SignedCheckpoint, merkle.NodeSource]:
    hashes = [e.leaf_hash() for e in entries]

    def node(level: int, index: int) -> bytes:
        return merkle.root_of(hashes[index << level : (index + 1) << level])

    frame = sign_checkpoint(Checkpoint("hub", len(entries), merkle.root_of(hashes), at), HUB)
    return read_checkpoint(frame), node


def proof_from(history: list[Entry], held: int, new: int) -> list[bytes] | None:
    """What the tampered hub answers to ``consistency held new``: a proof from its own tree,
    or None when its tree does not reach one of the sizes."""
    low, high = sorted((held, new))
    if high > len(history):
        return None
    _, node = signed(history[:high], 0)
    return merkle.consistency_proof(low, high, node)


TAMPERINGS: dict[str, Callable[[list[Entry]], list[Entry]]] = {
    "delete the tail": lambda h: h[:25],
    "delete the tail, then write on": lambda h: renumbered(h[:25] + LATER),
    "delete one in the middle": lambda h: renumbered(h[:9] + h[10:] + LATER),
    "edit one and re-hash": lambda h: [
        *h[:4], Entry(5, h[4].at, "delivery.dead", None, "jl.gov", "{}"), *h[5:], *LATER
    ],
    "reorder two": lambda h: renumbered([*h[:6], h[7], h[6], *h[8:], *LATER]),
    "an older backup written on": lambda h: renumbered(h[:20] + LATER),
}  # fmt: skip


@pytest.mark.parametrize("how", list(TAMPERINGS))
def test_a_witness_holding_the_true_history_judges_each_tampering_a_fork(how: str) -> None:
    held, _ = signed(TRUE[:HELD], at=10_000)
    history = TAMPERINGS[how](TRUE)
    new, _ = signed(history, at=20_000)
    verdict = judge(held, new, proof_from(history, HELD, new.size))
    assert isinstance(verdict, Fork), how
    assert verdict.held is held
    assert verdict.new is new


def test_the_honest_history_written_on_is_consistent() -> None:
    held, _ = signed(TRUE[:HELD], at=10_000)
    history = TRUE + LATER
    new, _ = signed(history, at=20_000)
    assert judge(held, new, proof_from(history, HELD, new.size)) == Consistent(new)


def test_two_hubs_with_one_key_showing_two_histories_are_caught_when_witnesses_compare() -> None:
    """A split view: each witness alone sees a consistent history; the two checkpoints,
    put side by side (``spoke witness check``), cannot both be true."""
    prefix = TRUE[:20]
    one = prefix + [entry(i, "receipt.delivered") for i in range(21, 36)]
    two = prefix + [entry(i, "delivery.dead") for i in range(21, 36)]
    first, _ = signed(one[:HELD], at=10_000)
    second, _ = signed(two[:HELD], at=10_000)
    assert isinstance(judge(first, second, []), Fork)  # same size, two roots
    later_two, _ = signed(two, at=20_000)
    assert isinstance(judge(first, later_two, proof_from(two, HELD, len(two))), Fork)
    # and each view is self-consistent, which is why only comparing finds it
    later_one, _ = signed(one, at=20_000)
    assert isinstance(judge(first, later_one, proof_from(one, HELD, len(one))), Consistent)


def restore_entry(seq: int, restored_size: int) -> Entry:
    detail = f'{{"reason":"disk replaced","restored_size":{restored_size}}}'
    return Entry(seq, 15_000, "ledger.restored", None, None, detail)


def restore_proof(history: list[Entry], entry: Entry) -> RestoreProof:
    _, node = signed(history, 0)
    return RestoreProof(entry, merkle.inclusion_proof(entry.index, len(history), node))


def test_a_restore_statement_right_after_the_restored_ledger_explains_the_loss() -> None:
    held, _ = signed(TRUE[:HELD], at=10_000)
    statement = restore_entry(21, 20)
    history = renumbered([*TRUE[:20], statement, *LATER])
    new, _ = signed(history, at=20_000)
    verdict = judge(held, new, None, restore_proof(history, history[20]))
    assert verdict == Restored(new, 20, HELD, history[20])


@pytest.mark.parametrize(("seq", "claimed"), [(2, HELD - 1), (25, 20), (21, 22)])
def test_a_restore_statement_anywhere_but_right_after_the_restored_ledger_is_a_fork(
    seq: int, claimed: int
) -> None:
    """A hub that rewrote entries after ``seq - 1`` may not claim to have lost fewer."""
    held, _ = signed(TRUE[:HELD], at=10_000)
    history = renumbered([*TRUE[: seq - 1], restore_entry(seq, claimed), *LATER])
    new, _ = signed(history, at=20_000)
    verdict = judge(held, new, None, restore_proof(history, history[seq - 1]))
    assert isinstance(verdict, Fork)


def test_a_rewritten_prefix_with_a_well_placed_restore_claim_needs_the_witness_log() -> None:
    """What judge() cannot see alone: entries 1..20 rewritten, then a statement that only
    21.. were lost. The statement is well placed, so judge() accepts it; a checkpoint of
    size 20 the witness logged earlier is what catches it (spoke.witness asks for the
    proof from it), since no consistency proof joins it to the rewritten tree."""
    logged, _ = signed(TRUE[:20], at=5_000)
    held, _ = signed(TRUE[:HELD], at=10_000)
    rewritten = [Entry(e.seq, e.at, "delivery.dead", e.msg_id, e.org, "{}") for e in TRUE[:20]]
    history = renumbered([*rewritten, restore_entry(21, 20), *LATER])
    new, node = signed(history, at=20_000)
    assert isinstance(judge(held, new, None, restore_proof(history, history[20])), Restored)
    proof = merkle.consistency_proof(20, new.size, node)
    assert not merkle.verify_consistency(20, new.size, logged.root, new.root, proof)
