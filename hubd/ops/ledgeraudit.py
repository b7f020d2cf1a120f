"""``hubctl audit verify``: the ledger checked against itself, its signatures and its witnesses.

One pass over the audit rows in seq order (streamed: a ten-million-entry ledger is never
held in memory) checks, at once:

- the hash chain (:func:`hubd.store.audit.verify_chain`: edited, inserted or deleted rows);
- the Merkle tree recomputed from the entries (:class:`schemas.merkle.Frontier`) against
  every stored checkpoint's root at its size, each checkpoint's signature first;
- the stored ``ledger_nodes`` against the recomputed ones (a damaged node breaks proofs);
- checkpoints a spoke holds (``--witness``): the store must reach their size and give
  their root there, unless a ``ledger.restored`` entry written after them declares the
  range lost.

Whoever holds the database can re-hash the chain, rebuild the nodes and, with the hub's
key, re-sign every checkpoint; a checkpoint a witness took before cannot be rewritten.
Functions here take a synchronous SQLAlchemy ``Connection`` (run read-only by hubctl).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Connection, func, select
from sqlalchemy.exc import SQLAlchemyError

from hubd.store import ledger as ledgerstore
from hubd.store import tables as t
from hubd.store.audit import AuditRow, ChainProblem, verify_chain
from hubd.store.rowwriter import RowWriter
from schemas import evidence, merkle
from schemas.clock import ms_to_text
from schemas.errors import PeerError, StoreError, XchgError
from schemas.ledger import RESTORED_EVENT, Entry, SignedCheckpoint, read_checkpoint
from schemas.ledger import verify_checkpoint as verify_signed_checkpoint

_NODE_BATCH = 4096  # recomputed nodes compared with the stored ones per query round
_UNCOVERED_SLACK_MS = 60_000  # a slow hub, a restart: beyond twice the interval
_CHECKPOINT_PAGE = 1000
_MAX_LEVEL = 48  # ledgerstore.node_key: an index below 2**48


class WitnessFileError(XchgError, ValueError):
    """A witness file that cannot be read or is not a checkpoint (the operator's input)."""


@dataclass(frozen=True, slots=True)
class Witness:
    """A checkpoint a spoke holds, as given on the command line."""

    source: str
    frame: bytes


def read_witness(path: Path) -> Witness:
    """A raw checkpoint frame (``.spoke/ledger/checkpoint.ckpt``) or an evidence file."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise WitnessFileError(
            f"cannot read the witness file {path}: {exc.strerror}; give the checkpoint a spoke "
            "holds (.spoke/ledger/checkpoint.ckpt) or an evidence file"
        ) from exc
    if data.lstrip()[:1] == b"{":
        try:
            doc = evidence.loads(data)
            frame = evidence.checkpoint_frame(doc)
        except evidence.EvidenceError as exc:
            raise WitnessFileError(f"the witness file {path} is not usable: {exc.message}") from exc
        return Witness(str(path), frame)
    try:
        read_checkpoint(data)
    except PeerError as exc:
        raise WitnessFileError(
            f"the witness file {path} is not a checkpoint frame ({exc.message}); give "
            ".spoke/ledger/checkpoint.ckpt from a spoke, or an evidence file"
        ) from exc
    return Witness(str(path), data)


@dataclass(slots=True)
class LedgerReport:
    entries: int = 0  # rows read
    size: int = 0  # the ledger's size: the highest seq
    checkpoints: int = 0  # stored checkpoints whose root was compared
    witnesses: int = 0  # witness checkpoints compared
    problems: list[str] = field(default_factory=list)
    explained: list[str] = field(default_factory=list)  # lost ranges a restore declared

    @property
    def ok(self) -> bool:
        return not self.problems


def _short(digest: bytes) -> str:
    return digest.hex()[:16]


def _span(first: int, last: int) -> str:
    return f"entry {first}" if first == last else f"entries {first}..{last}"


@dataclass(frozen=True, slots=True)
class _Restore:
    seq: int
    at: int
    restored_size: int
    reason: str


class _Pass:
    """The state of the one pass over the rows."""

    def __init__(
        self,
        conn: Connection,
        hub_keys: Mapping[str, bytes],
        witnesses: Sequence[tuple[Witness, SignedCheckpoint]],
        report: LedgerReport,
    ) -> None:
        self.conn, self.hub_keys, self.report = conn, hub_keys, report
        self.frontier = merkle.Frontier()
        self.tree_ok = True  # False from the first missing seq on: no tree beyond it
        self.gap: tuple[int, int] | None = None  # the first range of missing seqs
        self.nodes: list[merkle.NewNode] = []
        self.bad_nodes: set[merkle.Coord] = set()
        self.node_problems: list[tuple[int, int, str]] = []  # (first seq, last seq, line)
        self.restores: list[_Restore] = []
        self.witness_roots: dict[int, bytes | None] = {w.size: None for _, w in witnesses}
        self.checkpoints = self._checkpoints()
        self.pending: SignedCheckpointRow | None = next(self.checkpoints, None)
        self.beyond: SignedCheckpointRow | None = None  # the largest checkpoint past the end
        self.last_good = 0  # the largest checkpoint size whose root matched

    # ---------------------------------------------------------------- rows

    def rows(self) -> Iterator[AuditRow]:
        result = self.conn.execute(
            select(t.audit).order_by(t.audit.c.seq),
            execution_options={"stream_results": True, "yield_per": 10_000},
        )
        for r in result:
            row = AuditRow.from_row(r)
            self._grow(row)
            yield row
        self._compare_nodes()

    def _grow(self, row: AuditRow) -> None:
        self.report.size = max(self.report.size, row.seq)
        entry = Entry(row.seq, row.at, row.event, row.msg_id, row.org, row.detail)
        if entry.event == RESTORED_EVENT:
            detail = entry.details()
            size = detail.get("restored_size")
            if type(size) is int and size >= 0:
                reason = detail.get("reason")
                self.restores.append(
                    _Restore(row.seq, row.at, size, reason if isinstance(reason, str) else "")
                )
        if not self.tree_ok:
            return
        if row.seq != self.frontier.size + 1:
            self.tree_ok = False
            self.gap = (self.frontier.size + 1, row.seq - 1)
            return
        self.nodes += self.frontier.append(entry.leaf_hash())
        if len(self.nodes) >= _NODE_BATCH:
            self._compare_nodes()
        size = self.frontier.size
        if size in self.witness_roots:
            self.witness_roots[size] = self.frontier.root()
        while self.pending is not None and self.pending.size <= size:
            root = (
                self.frontier.root()
                if self.pending.size == size
                else (merkle.EMPTY_ROOT if self.pending.size == 0 else None)
            )
            self._check_root(self.pending, root)
            self.pending = next(self.checkpoints, None)

    # ---------------------------------------------------------------- nodes

    def _compare_nodes(self) -> None:
        made, self.nodes = self.nodes, []
        if not made:
            return
        wanted = {ledgerstore.node_key(n.level, n.index): n for n in made}
        stored = {
            int(pos): bytes(digest)
            for pos, digest in RowWriter(self.conn).select_in(
                t.ledger_nodes, ("pos", "hash"), "pos", list(wanted)
            )
        }
        for pos, node in wanted.items():
            have = stored.get(pos)
            if have == node.hash:
                continue
            coord = (node.level, node.index)
            self.bad_nodes.add(coord)
            children = ((node.level - 1, 2 * node.index), (node.level - 1, 2 * node.index + 1))
            if node.level > 1 and any(c in self.bad_nodes for c in children):
                continue  # the damage below it, already reported, explains it
            first = (node.index << node.level) + 1
            last = (node.index + 1) << node.level
            what = (
                "is missing"
                if have is None
                else "differs from the one the entries give (an entry was changed after the "
                "node was written, or the node was damaged)"
            )
            self.node_problems.append(
                (
                    first,
                    last,
                    (
                        f"{_span(first, last)}: the tree's stored node (level {node.level}) "
                        f"{what}; inclusion proofs over these entries fail"
                    ),
                )
            )

    # ---------------------------------------------------------------- checkpoints

    def _checkpoints(self) -> Iterator[SignedCheckpointRow]:
        after = -1
        while True:
            rows = self.conn.execute(
                select(t.ledger_checkpoints)
                .where(t.ledger_checkpoints.c.size > after)
                .order_by(t.ledger_checkpoints.c.size)
                .limit(_CHECKPOINT_PAGE)
            ).all()
            for r in rows:
                yield SignedCheckpointRow(
                    int(r.size), bytes(r.root), int(r.at), r.kid, bytes(r.frame)
                )
            if len(rows) < _CHECKPOINT_PAGE:
                return
            after = int(rows[-1].size)

    def _check_root(self, row: SignedCheckpointRow, root: bytes | None) -> None:
        signed = self._verified(row)
        if signed is None or root is None:
            return
        self.report.checkpoints += 1
        if root == signed.root:
            self.last_good = signed.size
            return
        self.report.problems.append(
            f"checkpoint of size {signed.size} (signed at {ms_to_text(signed.at)}): the entries "
            f"give root {_short(root)}, the hub signed {_short(signed.root)}: "
            f"{_span(self.last_good + 1, signed.size)} were changed after it was signed"
        )

    def _verified(self, row: SignedCheckpointRow) -> SignedCheckpoint | None:
        """The stored checkpoint, its signature checked; None (and a problem) if it fails."""
        where = f"checkpoint of size {row.size} (signed at {ms_to_text(row.at)})"
        try:
            signed = read_checkpoint(row.frame)
        except PeerError as exc:
            self.report.problems.append(f"{where}: its frame is damaged ({exc.message})")
            return None
        problem = signature_problem(signed, self.hub_keys)
        if problem is not None:
            self.report.problems.append(f"{where}: {problem}")
            return None
        if (signed.size, signed.root, signed.at, signed.kid) != (
            row.size,
            row.root,
            row.at,
            row.kid,
        ):
            self.report.problems.append(
                f"{where}: its columns (size, root, at, kid) differ from the signed frame"
            )
            return None
        return signed

    def finish(self) -> None:
        """Checkpoints and nodes past the last entry the pass could build the tree for."""
        if self.pending is not None and self.pending.size == 0:
            self._check_root(self.pending, merkle.EMPTY_ROOT)
            self.pending = next(self.checkpoints, None)
        while self.pending is not None:
            if self.tree_ok:
                self._verified(self.pending)  # its signature, at least
            if self.beyond is None or self.pending.size > self.beyond.size:
                self.beyond = self.pending
            self.pending = next(self.checkpoints, None)
        if self.gap is not None:
            first, last = self.gap
            cover = (
                f" (the checkpoint of size {self.beyond.size} signed at "
                f"{ms_to_text(self.beyond.at)} covers them)"
                if self.beyond is not None
                else ""
            )
            self.report.problems.append(
                f"{_span(first, last)} {'is' if first == last else 'are'} missing from the "
                f"middle of the ledger (deleted){cover}; nothing after seq {first - 1} can be "
                "checked against the tree"
            )
            return
        self._tail()

    def _tail(self) -> None:
        # Read what lies past the end first, then the ledger's size again: the hub may have
        # committed entries (with their nodes) and signed checkpoints since the pass began.
        nodes_end = 0
        for level in range(1, _MAX_LEVEL):
            top = self.conn.execute(
                select(func.max(t.ledger_nodes.c.pos)).where(
                    t.ledger_nodes.c.pos >= ledgerstore.node_key(level, 0),
                    t.ledger_nodes.c.pos < ledgerstore.node_key(level + 1, 0),
                )
            ).scalar_one()
            if top is not None:
                index = int(top) - ledgerstore.node_key(level, 0)
                nodes_end = max(nodes_end, (index + 1) << level)
        now = ledgerstore.ledger_size(self.conn)
        size = self.report.size
        checkpoint_end = self.beyond.size if self.beyond is not None else 0
        if max(checkpoint_end, nodes_end) <= max(size, now):
            return
        if checkpoint_end > max(size, now) and self.beyond is not None:
            self.report.problems.append(
                f"{_span(size + 1, checkpoint_end)} were deleted (the checkpoint of size "
                f"{checkpoint_end} signed at {ms_to_text(self.beyond.at)} covers them)"
            )
        elif nodes_end > max(size, now):
            self.report.problems.append(
                f"{_span(size + 1, nodes_end)} were deleted (the tree's stored nodes cover "
                "them; no stored checkpoint does)"
            )


@dataclass(frozen=True, slots=True)
class SignedCheckpointRow:
    size: int
    root: bytes
    at: int
    kid: str
    frame: bytes


def signature_problem(signed: SignedCheckpoint, hub_keys: Mapping[str, bytes]) -> str | None:
    """Why a checkpoint's signature is not the hub's, or None if it is."""
    public = hub_keys.get(signed.kid)
    if public is None:
        known = ", ".join(sorted(hub_keys)) or "none"
        return (
            f"signed by key {signed.kid}, which is not a hub key (known: {known}); "
            "someone else signed it, or give the hub's key with --config or --hub-key"
        )
    try:
        verify_signed_checkpoint(signed.frame, public)
    except PeerError:
        return f"its signature does not verify with the hub key {signed.kid} (forged or damaged)"
    return None


def _judge_witness(
    witness: Witness, signed: SignedCheckpoint, state: _Pass, report: LedgerReport
) -> None:
    where = f"witness {witness.source} (size {signed.size}, signed at {ms_to_text(signed.at)})"
    root = state.witness_roots.get(signed.size)
    if signed.size == 0:
        root = merkle.EMPTY_ROOT
    if root == signed.root:
        report.witnesses += 1
        return
    restore = next(
        (
            r
            for r in state.restores
            # written right after the ledger it restored (hubctl audit restored), and after
            # the witness's checkpoint: an entry anywhere else explains nothing
            if r.seq == r.restored_size + 1 and r.at > signed.at and r.restored_size < signed.size
        ),
        None,
    )
    if restore is not None:
        report.witnesses += 1
        because = f": {restore.reason}" if restore.reason else ""
        report.explained.append(
            f"{where}: {_span(restore.restored_size + 1, signed.size)} as the witness saw them "
            f"were lost in a restore, declared at {ms_to_text(restore.at)} by ledger entry "
            f"{restore.seq} (ledger.restored{because})"
        )
        return
    if signed.size > report.size:
        report.problems.append(
            f"{where}: {_span(report.size + 1, signed.size)} are missing: the store is older "
            "than what the witness saw (restored from a backup, or truncated); if it was "
            "restored, run 'hubctl audit restored --reason ...' with the hub stopped"
        )
    elif root is None:
        report.problems.append(
            f"{where}: the ledger's tree cannot be recomputed up to size {signed.size} "
            "(entries are missing, above)"
        )
    else:
        report.problems.append(
            f"{where}: history differs from what the witness saw: root at size {signed.size} is "
            f"{_short(root)}, the witness holds {_short(signed.root)}"
        )


def _flags(flagged: Sequence[int], first: int, last: int) -> bool:
    at = bisect.bisect_left(flagged, first)
    return at < len(flagged) and flagged[at] <= last


def uncovered(conn: Connection, interval_ms: int) -> str | None:
    """Entries that no signed checkpoint covers although later entries were written long
    after them: a running hub signs one within ``checkpoint_interval`` of an entry (and at
    start over what a crash left), so such a span means its checkpoints were deleted, or
    turned off. Two indexed reads; None when every entry is covered or recent enough."""
    covered = conn.execute(
        select(func.coalesce(func.max(t.ledger_checkpoints.c.size), 0))
    ).scalar_one()
    first, last, since, until = conn.execute(
        select(
            func.min(t.audit.c.seq),
            func.max(t.audit.c.seq),
            func.min(t.audit.c.at),
            func.max(t.audit.c.at),
        ).where(t.audit.c.seq > covered)
    ).one()
    if first is None or until - since <= 2 * interval_ms + _UNCOVERED_SLACK_MS:
        return None
    return (
        f"{_span(int(first), int(last))}, written from {ms_to_text(int(since))} to "
        f"{ms_to_text(int(until))}, {'is' if first == last else 'are'} covered by no signed "
        "checkpoint, though a running hub signs one within [ledger] checkpoint_interval: "
        "the checkpoints were deleted (or checkpoints were turned off)"
    )


def verify_ledger(
    conn: Connection,
    hub_keys: Mapping[str, bytes],
    witnesses: Sequence[Witness] = (),
    *,
    interval_ms: int | None = None,
) -> LedgerReport:
    """Check the whole ledger in one streamed pass; the report lists every problem.

    ``interval_ms``: the hub's ``[ledger] checkpoint_interval`` when it signs checkpoints
    (None: it does not, and entries no checkpoint covers are not a problem).
    """
    report = LedgerReport()
    readable: list[tuple[Witness, SignedCheckpoint]] = []
    for witness in witnesses:
        signed = read_checkpoint(witness.frame)
        problem = signature_problem(signed, hub_keys)
        if problem is not None:
            report.problems.append(f"witness {witness.source}: {problem}")
            continue
        readable.append((witness, signed))
    state = _Pass(conn, hub_keys, readable, report)
    checked, chain = verify_chain(state.rows())
    report.entries = checked
    flagged = sorted({p.seq for p in chain})
    nodes = [  # a node over a row the chain already calls edited says nothing more
        line for first, last, line in state.node_problems if not _flags(flagged, first, last)
    ]
    report.problems[:0] = [f"row {p.seq}: {p.problem}" for p in chain] + nodes
    state.finish()
    if interval_ms is not None and state.tree_ok:
        problem = uncovered(conn, interval_ms)
        if problem is not None:
            report.problems.append(problem)
    for witness, signed in readable:
        _judge_witness(witness, signed, state, report)
    return report


async def verify_store_ledger(
    url: str,
    hub_keys: Mapping[str, bytes],
    witnesses: Sequence[Witness] = (),
    *,
    interval_ms: int | None = None,
) -> LedgerReport:
    """Open the store at ``url`` read-only (the hub may be running) and verify its ledger."""
    from hubd.store.connections import engine_for, read_only_url  # noqa: PLC0415 - hubctl's import cost

    engine = engine_for(read_only_url(url))  # never create or change it
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(
                lambda sync: verify_ledger(sync, hub_keys, witnesses, interval_ms=interval_ms)
            )
    except (SQLAlchemyError, OSError) as exc:
        raise StoreError(f"cannot read the audit ledger: {exc}", retriable=True) from exc
    finally:
        await engine.dispose()


async def verify_store_chain(url: str) -> tuple[int, list[ChainProblem]]:
    """Read the ledger from the store at ``url`` (the hub may be running) and verify it."""
    from hubd.store.connections import engine_for, read_only_url  # noqa: PLC0415

    engine = engine_for(read_only_url(url))  # never create or change it
    try:
        async with engine.connect() as conn:
            result = await conn.stream(select(t.audit).order_by(t.audit.c.seq))
            rows = [AuditRow.from_row(r) async for r in result]
    except (SQLAlchemyError, OSError) as exc:
        raise StoreError(f"cannot read the audit ledger: {exc}", retriable=True) from exc
    finally:
        await engine.dispose()
    return verify_chain(rows)
