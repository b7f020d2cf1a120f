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
