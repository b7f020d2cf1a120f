"""What the ledger's Merkle tree costs: proving a message on a large ledger, and appending.

    python bench/ledger.py [--entries 1000000] [--proofs 200] [--write]

Builds a SQLite hub store (the store's own migrations) holding ``--entries`` audit rows
shaped like a hub's traffic: each message accepted, sent to two recipients and delivered
by both, its entries spread over a few hundred seqs as deliveries interleave, plus a few
messages whose entries lie far apart (accepted early, delivered, redelivered, dead much
later). The rows go in with ``executemany`` (with their real hash chain), then
``hubd.store.ledger.build_nodes`` writes the tree's nodes: the function migration 0004
runs, so the nodes are the rows the group commit would have written.

Then it times proving one message, with the reads ``hubctl audit prove`` does: the
message's entries through the ``audit_by_msg`` index, ``ledgerstore.inclusions`` for
all of them and ``ledgerstore.root``, on one connection (warm cache, as a running hub).
It reports median and p99 over ``--proofs`` messages, the store's size on disk, nodes
per entry, and the cost of appending: the leaf hash and node rows the group commit adds
per entry (``Entry.leaf``, ``merkle.leaf_hash``, ``Frontier.append``, ``node_rows``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import create_engine, func, select

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.e2e import replace_block
from hubd.store import ledger as ledgerstore
from hubd.store import tables as t
from hubd.store.audit import GENESIS, chain_hash_of
from hubd.store.db import Store
from schemas import merkle
from schemas.ledger import Entry

ORGS = ["jl.cc", "jl.jl", "jl.sp", "jl.ly", "jl.th", "jl.bs", "jl.yb", "jl.gov"]
IN_FLIGHT = 100  # messages between a message's acceptance and its delivery receipts
# messages whose five entries lie across the whole ledger (0.01 %, 25 %, 50 %, 75 %, 99.99 %)
SCATTERED = [bytes([0xEE] * 15 + [k]) for k in range(5)]


def _accepted(rng: random.Random, to: list[str]) -> str:
    return json.dumps(
        {
            "body_size": 1024 + rng.randrange(100_000),
            "channel": "govnet",
            "classification": "INTERNAL",
            "doc_type": "NOTICE",
            "frame_sha256": rng.randbytes(32).hex(),
            "precedence": "ROUTINE",
            "recipients": to,
            "routes": dict.fromkeys(to, "govnet"),
        },
        sort_keys=True,
        separators=(",", ":"),
    )


def events(count: int, rng: random.Random) -> Iterator[tuple[str, bytes | None, str, str]]:
    """(event, msg_id, org, detail) for about ``count`` entries of interleaved traffic."""
    marks = [int(count * f) for f in (0.0001, 0.25, 0.5, 0.75, 0.9999)]
    steps = ["message.accepted", "delivery.sent", "delivery.sent", "delivery.sent", "delivery.dead"]
    pending: list[tuple[bytes, list[str]]] = []
    made = 0
    while True:
        while marks and made >= marks[0]:  # one step of every scattered message
            step = steps[len(steps) - len(marks)]
            marks.pop(0)
            for msg_id in SCATTERED:
                yield step, msg_id, "jl.sp", '{"attempt":1,"channel":"govnet"}'
                made += 1
        msg_id, to = rng.randbytes(16), rng.sample(ORGS[:-1], 2)
        yield "message.accepted", msg_id, "jl.gov", _accepted(rng, to)
        for org in to:
            yield "delivery.sent", msg_id, org, '{"attempt":1,"channel":"govnet"}'
        made += 3
        pending.append((msg_id, to))
        if len(pending) > IN_FLIGHT:
            old, recipients = pending.pop(0)
            for org in recipients:
                detail = json.dumps(
                    {"batch_sha256": rng.randbytes(32).hex(), "issuer": org},
                    sort_keys=True,
                    separators=(",", ":"),
                )
                yield "receipt.delivered", old, org, detail
                made += 1


INSERT = (
    "INSERT INTO audit (seq, at, event, msg_id, org, detail, prev_hash, hash) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


def build(path: Path, count: int, rng: random.Random) -> tuple[float, float]:
    """The store at ``path`` with ``count`` audit rows and their nodes; (rows s, nodes s)."""
    url = f"sqlite+aiosqlite:///{path}"

    async def migrate() -> None:
        async with Store(url):
            pass

    asyncio.run(migrate())
    db = sqlite3.connect(path)
    db.execute("PRAGMA synchronous=OFF")  # a bulk build; the hub itself runs FULL
    start = time.perf_counter()
    chain, rows, seq = GENESIS, [], 0
    for seq, (event, msg_id, org, detail) in zip(
        range(1, count + 1), events(count, rng), strict=False
    ):
        at = 1_795_000_000_000 + seq * 10
        digest = chain_hash_of(chain, Entry(seq, at, event, msg_id, org, detail).leaf())
        rows.append((seq, at, event, msg_id, org, detail, chain, digest))
        chain = digest
        if len(rows) == 50_000:
            db.executemany(INSERT, rows)
            rows = []
    db.executemany(INSERT, rows)
    db.commit()
    db.close()
    rows_s = time.perf_counter() - start
    engine = create_engine(f"sqlite:///{path}")
    start = time.perf_counter()
    with engine.begin() as conn:
        conn.exec_driver_sql("PRAGMA synchronous=OFF")
        built = ledgerstore.build_nodes(conn)
    nodes_s = time.perf_counter() - start
    engine.dispose()
    assert built == count, (built, count)
    return rows_s, nodes_s


def prove_times(path: Path, targets: list[bytes]) -> tuple[list[float], int, int]:
    """Seconds per proof of each target; the ledger size and the node rows."""
    engine = create_engine(f"sqlite:///{path}")
    times = []
    with engine.connect() as conn:
        size = ledgerstore.ledger_size(conn)
        nodes = int(conn.execute(select(func.count()).select_from(t.ledger_nodes)).scalar_one())
        cols = [t.audit.c[name] for name in ("seq", "at", "event", "msg_id", "org", "detail")]
        for msg_id in targets:
            start = time.perf_counter()
            found = conn.execute(
                select(*cols).where(t.audit.c.msg_id == msg_id).order_by(t.audit.c.seq)
            ).all()
            entries = [ledgerstore.entry_of(r) for r in found]
            proofs = ledgerstore.inclusions(conn, [e.index for e in entries], size)
            root = ledgerstore.root(conn, size)
            times.append(time.perf_counter() - start)
            for e in entries:  # outside the timing: each proof leads to the root
                assert merkle.verify_inclusion(
                    e.index, size, e.leaf_hash(), proofs[e.index], root
                ), e.seq
    engine.dispose()
    return times, size, nodes


def append_cost(count: int, rng: random.Random) -> float:
    """µs of CPU per entry: its leaf, leaf hash, the Frontier and the node rows."""
    entries = [
        Entry(seq, seq, event, msg_id, org, detail)
        for seq, (event, msg_id, org, detail) in zip(
            range(1, count + 1), events(count, rng), strict=False
        )
    ]
    frontier, rows = merkle.Frontier(), []
    start = time.process_time()
    for e in entries:
        rows += ledgerstore.node_rows(frontier.append(merkle.leaf_hash(e.leaf())))
    return (time.process_time() - start) / len(entries) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--proofs", type=int, default=200)
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args()
    rng = random.Random(9162)
    with tempfile.TemporaryDirectory(prefix="govx-ledger-") as tmp:
        path = Path(tmp) / "hub.db"
        rows_s, nodes_s = build(path, args.entries, rng)
        db = sqlite3.connect(path)
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        ids = [bytes(r[0]) for r in db.execute("SELECT DISTINCT msg_id FROM audit LIMIT 100000")]
        try:  # the tree's share of the file (dbstat is compiled into most SQLite builds)
            tree_bytes = db.execute(
                "SELECT SUM(pgsize) FROM dbstat WHERE name LIKE '%ledger_nodes%'"
            ).fetchone()[0]
        except sqlite3.OperationalError:
            tree_bytes = None
        db.close()
        on_disk = sum(p.stat().st_size for p in Path(tmp).iterdir())
        targets = random.Random(1).sample(ids, args.proofs)
        times, size, nodes = prove_times(path, targets)
        far, _, _ = prove_times(path, SCATTERED)
    per_entry = append_cost(min(args.entries, 200_000), random.Random(2))
    disk = f"{on_disk / 2**20:.0f} MiB ({on_disk / size:.0f} B/entry)"
    if tree_bytes:
        disk += f", of which ledger_nodes {tree_bytes / 2**20:.0f} MiB"
    nodes_cost = f"{nodes_s:.1f} s ({nodes_s / size * 1e6:.1f} µs/entry)"
    q = statistics.quantiles(times, n=100, method="inclusive")
    ms = [statistics.median(times) * 1000, q[98] * 1000, max(times) * 1000]
    far_ms = [statistics.median(far) * 1000, max(far) * 1000]
    lines = [
        "| ledger | on disk | nodes per entry | bulk rows | build_nodes | append (leaf + nodes) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
        (
            f"| {size:,} entries | {disk} | {nodes / size:.3f} | {rows_s:.1f} s | {nodes_cost} "
            f"| {per_entry:.1f} µs CPU/entry |"
        ),
        "",
        "| proving one message (`audit_by_msg` + `inclusions` + `root`) | median | p99 | max |",
        "| --- | ---: | ---: | ---: |",
        (
            f"| {len(times)} messages (3 to 5 entries each) | {ms[0]:.2f} ms | {ms[1]:.2f} ms "
            f"| {ms[2]:.2f} ms |"
        ),
        (
            f"| {len(far)} messages with entries across the whole ledger | {far_ms[0]:.2f} ms "
            f"| | {far_ms[1]:.2f} ms |"
        ),
    ]
    table = "\n".join(lines)
    print(table)
    if args.write:
        command = f"python bench/ledger.py --entries {args.entries} --proofs {args.proofs}"
        replace_block("ledger", command, table)


if __name__ == "__main__":
    main()
