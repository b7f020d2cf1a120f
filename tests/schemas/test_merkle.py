"""RFC 9162 hashing and proofs, checked against the RFC's recursive definitions."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import merkle


def _mth(leaves: list[bytes]) -> bytes:
    """MTH as RFC 9162 2.1.1 defines it, over leaf data."""
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1 << ((n - 1).bit_length() - 1)
    return hashlib.sha256(b"\x01" + _mth(leaves[:k]) + _mth(leaves[k:])).digest()


def _leaves(n: int) -> list[bytes]:
    return [f"entry {i}".encode() for i in range(n)]


def _nodes(leaves: list[bytes]) -> merkle.NodeSource:
    def node(level: int, index: int) -> bytes:
        return _mth(leaves[index << level : (index + 1) << level])

    return node


def test_empty_tree_root_is_the_hash_of_nothing() -> None:
    assert merkle.Frontier().root() == hashlib.sha256(b"").digest()


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 31, 100])
def test_frontier_root_equals_the_rfc_definition_at_every_size(n: int) -> None:
    leaves = _leaves(n)
    frontier = merkle.Frontier()
    for i, leaf in enumerate(leaves):
        frontier.append(merkle.leaf_hash(leaf))
        assert frontier.root() == _mth(leaves[: i + 1])


def test_frontier_reports_each_completed_subtree_once_with_its_hash() -> None:
    leaves = _leaves(37)
    frontier, made = merkle.Frontier(), []
    for leaf in leaves:
        made.extend(frontier.append(merkle.leaf_hash(leaf)))
    coords = [(m.level, m.index) for m in made]
    assert len(coords) == len(set(coords)) == 37 - (37).bit_count()
    node = _nodes(leaves)
    assert all(m.hash == node(m.level, m.index) for m in made)


def test_frontier_reloaded_from_its_peaks_continues_the_same_tree() -> None:
    leaves = _leaves(23)
    node = _nodes(leaves[:13])
    peaks = [node(level, index) for level, index in merkle.Frontier.peak_coords(13)]
    frontier = merkle.Frontier(13, peaks)
    for leaf in leaves[13:]:
        frontier.append(merkle.leaf_hash(leaf))
    assert frontier.root() == _mth(leaves)


def test_frontier_refuses_peaks_that_do_not_fit_its_size() -> None:
    with pytest.raises(ValueError, match="peaks"):
        merkle.Frontier(3, [bytes(32)])


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=1, max_value=70).flatmap(
    lambda n: st.tuples(st.just(n), st.integers(min_value=0, max_value=n - 1))
))  # fmt: skip
def test_inclusion_proofs_verify_for_every_leaf_and_only_for_it(case: tuple[int, int]) -> None:
    n, index = case
    leaves = _leaves(n)
    proof = merkle.inclusion_proof(index, n, _nodes(leaves))
    root = _mth(leaves)
    assert merkle.verify_inclusion(index, n, merkle.leaf_hash(leaves[index]), proof, root)
    assert not merkle.verify_inclusion(index, n, merkle.leaf_hash(b"forged"), proof, root)
    if n > 1:
        other = (index + 1) % n
        assert not merkle.verify_inclusion(other, n, merkle.leaf_hash(leaves[index]), proof, root)
        assert not merkle.verify_inclusion(
            index, n, merkle.leaf_hash(leaves[index]), proof[:-1], root
        )
        assert not merkle.verify_inclusion(
            index, n, merkle.leaf_hash(leaves[index]), [*proof, bytes(32)], root
        )


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=1, max_value=70).flatmap(
    lambda n: st.tuples(st.integers(min_value=0, max_value=n), st.just(n))
))  # fmt: skip
def test_consistency_proofs_verify_between_every_pair_of_sizes(case: tuple[int, int]) -> None:
    old, new = case
    leaves = _leaves(new)
    proof = merkle.consistency_proof(old, new, _nodes(leaves))
    old_root, new_root = _mth(leaves[:old]), _mth(leaves)
    assert merkle.verify_consistency(old, new, old_root, new_root, proof)
    if 0 < old < new:
        rewritten = [*leaves[: old - 1], b"rewritten", *leaves[old:]]
        assert not merkle.verify_consistency(old, new, old_root, _mth(rewritten), proof)
        assert not merkle.verify_consistency(old, new, _mth(rewritten[:old]), new_root, proof)
        assert not merkle.verify_consistency(old, new, old_root, new_root, proof[:-1])


def test_a_history_that_drops_its_last_entries_is_not_consistent_with_itself() -> None:
    leaves = _leaves(40)
    shorter = leaves[:30] + [b"new after the truncation"] * 15
    proof = merkle.consistency_proof(40, 45, _nodes(shorter))
    assert not merkle.verify_consistency(40, 45, _mth(leaves), _mth(shorter), proof)


def test_needed_names_only_perfect_subtrees_and_few_of_them() -> None:
    coords = merkle.needed(lambda node: merkle.inclusion_proof(123_456, 1_000_003, node))
    assert all((index + 1) << level <= 1_000_003 for level, index in coords)
    assert len(coords) <= 2 * (1_000_003).bit_length()


def test_proofs_outside_the_tree_are_refused() -> None:
    with pytest.raises(ValueError, match="not in a tree"):
        merkle.inclusion_proof(5, 5, _nodes(_leaves(5)))
    with pytest.raises(ValueError, match="no consistency proof"):
        merkle.consistency_proof(6, 5, _nodes(_leaves(5)))
    assert not merkle.verify_inclusion(5, 5, bytes(32), [], bytes(32))
    assert not merkle.verify_consistency(6, 5, bytes(32), bytes(32), [])
