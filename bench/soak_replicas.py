"""Failover soak (issue 15, part 3): two hub replicas under steady load and a fault cycle.

    python bench/soak_replicas.py --minutes 3                     # a 3-node NATS cluster
    python bench/soak_replicas.py --minutes 3 --broker mosquitto  # one Mosquitto
    python bench/soak_replicas.py --minutes 10 --out soak.json    # the JSON into a file

Starts the broker (a 3-node NATS cluster for govnet, as ``hubctl broker-config --engine
nats`` writes it, with a Mosquitto for the hub's other channels; or one Mosquitto), a
fresh PostgreSQL database on 127.0.0.1:5432, two hubd replicas ``a`` and ``b`` on it
(``[replicas] enabled``, the lease settings given here) and govnet-only spokes, and keeps
a steady load: documents dropped into the outboxes at ``--rate`` a second in total, each
with a unique title and one addressee. Every ``--gap`` seconds the next fault of the
cycle: kill -9 of a replica (started again after ``--pause`` s), kill -9 of a NATS node
(started again after ``--pause`` s; left out on Mosquitto), SIGSTOP of a replica for its
lease + 2 s (SIGCONT); the replicas take turns. After ``--minutes`` the load stops, the
backlog drains, and the checker (tests/soak.py) reports sent, accepted, delivered once,
lost, duplicated into inboxes and misrouted, with each replica fault's takeover time
(from the signal until the survivor holds every bucket the victim held, read from
``hub_leases``), max and median. Exit code 1 if anything was lost, duplicated or
misrouted, or a takeover never completed; 2 if the system could not be started.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.soak import (
    Checker,
    Load,
    Soak,
    create_database,
    drop_database,
    takeover_figures,
)
from tests.world import make_world


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=3.0, help="of load and faults")
    parser.add_argument("--broker", choices=("nats", "mosquitto"), default="nats")
    parser.add_argument("--orgs", type=int, default=6, help="govnet-only spokes (2..6)")
    parser.add_argument("--rate", type=float, default=5.0, help="documents a second, in all")
    parser.add_argument("--lease", type=float, default=3.0, help="[replicas] lease, seconds")
    parser.add_argument("--renew", type=float, default=1.0, help="[replicas] renew, seconds")
    parser.add_argument("--gap", type=float, default=10.0, help="steady seconds between faults")
    parser.add_argument("--pause", type=float, default=3.0, help="seconds a killed one is down")
    parser.add_argument("--drain", type=float, default=300.0, help="bound on the drain, s")
    parser.add_argument("--seed", type=int, default=15, help="of the addressees' choice")
    parser.add_argument("--out", type=Path, help="write the JSON report here (else stdout)")
    parser.add_argument("--keep", action="store_true", help="keep the run's folder and logs")
    args = parser.parse_args(argv)
    if not 2 <= args.orgs <= 6:
        parser.error("--orgs: 2 to 6 (the govnet-only prefectures of tests/soak.py ORGS)")
    if args.lease < 2 * args.renew:
        parser.error("--lease must be at least twice --renew (hubd refuses otherwise)")
    return args


def cycle(broker: str) -> list[tuple[str, str | int]]:
    """The faults in the order they come round: replicas in turn, NATS nodes in turn."""
    if broker == "nats":
        return [
            ("kill9_replica", "a"),
            ("kill9_nats_node", 0),
            ("sigstop_replica", "b"),
            ("kill9_replica", "b"),
            ("kill9_nats_node", 1),
            ("sigstop_replica", "a"),
            ("kill9_replica", "a"),
            ("kill9_nats_node", 2),
            ("sigstop_replica", "b"),
            ("kill9_replica", "b"),
            ("kill9_nats_node", 0),
            ("sigstop_replica", "a"),
        ]
    return [
        ("kill9_replica", "a"),
        ("sigstop_replica", "b"),
        ("kill9_replica", "b"),
        ("sigstop_replica", "a"),
    ]


async def faults(soak: Soak, checker: Checker, args: argparse.Namespace, end: float) -> None:
    """The fault cycle, a fault every ``--gap`` seconds, until ``end`` (monotonic)."""
    order = cycle(args.broker)
    done = 0
    while True:
        await asyncio.sleep(max(0.0, min(args.gap, end - time.monotonic())))
        if time.monotonic() >= end:
            return
        kind, target = order[done % len(order)]
        done += 1
        if kind == "kill9_replica":
            record = await soak.kill_replica(str(target), checker)
        elif kind == "sigstop_replica":
            record = await soak.pause_replica(str(target), checker)
        else:
            record = await soak.kill_node(int(target), checker)
        print(json.dumps(record, ensure_ascii=False), file=sys.stderr, flush=True)
        if record.get("restarted") is False:
            print(
                f"replica {target} refused every restart: no more faults; draining",
                file=sys.stderr,
                flush=True,
            )
            return


async def run(args: argparse.Namespace, folder: Path, db_url: str) -> dict[str, Any]:
    soak = Soak(
        folder,
        make_world(),
        db_url,
        broker=args.broker,
        orgs=tuple(sorted(("jl.cc", "jl.jl", "jl.sp", "jl.ly", "jl.th", "jl.bs")[: args.orgs])),
        lease=args.lease,
        renew=args.renew,
        pause=args.pause,
    )
    try:
        checker = await soak.start()
        load = Load(checker, soak.spokes, args.rate, seed=args.seed)
        stop = asyncio.Event()
        loading = asyncio.create_task(load.run(stop))
        began = time.monotonic()
        soak.t0 = began
        try:
            await faults(soak, checker, args, began + args.minutes * 60)
        finally:
            stop.set()
            await loading
        loaded = time.monotonic() - began
        drained = await checker.drain(args.drain)
        drain_s = time.monotonic() - began - loaded
        await asyncio.sleep(2.0)  # a late duplicate would land now
        counts = checker.tally()
        return {
            "broker": "nats (3 nodes)" if args.broker == "nats" else "mosquitto",
            "command": " ".join(["python", "bench/soak_replicas.py", *sys.argv[1:]]),
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
            "lease_s": args.lease,
            "renew_s": args.renew,
            "orgs": list(soak.orgs),
            "rate_per_s": args.rate,
            "load_s": round(loaded, 1),
            "drained": drained,
            "drain_s": round(drain_s, 1),
            "counts": counts,
            "missing": checker.missing()[:20],
            "takeover": {
                "kill9_replica": takeover_figures(soak.faults, "kill9_replica"),
                "sigstop_replica": takeover_figures(soak.faults, "sigstop_replica"),
            },
            "faults": soak.faults,
            "hub_errors": soak.hub_errors(),
            "folder": str(folder) if args.keep else None,
        }
    finally:
        await soak.aclose()


def failed(report: dict[str, Any]) -> list[str]:
    counts = report["counts"]
    problems = [f"{k} {counts[k]}" for k in ("lost", "duplicated", "misrouted") if counts[k]]
    down = [f["replica"] for f in report["faults"] if f.get("restarted") is False]
    if down:
        problems.append(f"replica {', '.join(down)} refused every restart")
    for kind, figures in report["takeover"].items():
        if figures["not_taken_over"]:
            problems.append(f"{kind}: {figures['not_taken_over']} never taken over")
    return problems


def summary(report: dict[str, Any]) -> str:
    c = report["counts"]
    head = (
        f"soak on {report['broker']}, lease {report['lease_s']:g} s / renew "
        f"{report['renew_s']:g} s, {len(report['orgs'])} spokes at {report['rate_per_s']:g}/s "
        f"for {report['load_s']:g} s (drained in {report['drain_s']:g} s)"
    )
    tally = (
        f"  sent {c['sent']}, accepted {c['accepted']}, delivered once {c['delivered_once']}, "
        f"lost {c['lost']}, duplicated {c['duplicated']}, misrouted {c['misrouted']}"
    )
    lines = [head, tally]
    for kind, f in report["takeover"].items():
        lines.append(
            f"  {kind}: {f['count']}, takeover max {f['max_s']} s, median {f['median_s']} s"
            + (f", {f['not_taken_over']} never" if f["not_taken_over"] else "")
        )
    refused = [r for f in report["faults"] for r in f.get("refused", [])]
    if refused:
        lines.append(f"  restarts refused: {len(refused)}, the first: {refused[0]}")
    nodes = [f for f in report["faults"] if f["fault"] == "kill9_nats_node"]
    if nodes:
        lines.append(f"  kill9_nats_node: {len(nodes)}")
    errors = {name: len(events) for name, events in report["hub_errors"].items()}
    lines.append(f"  hub error events: {errors}")
    problems = failed(report)
    lines.append("  FAILED: " + "; ".join(problems) if problems else "  OK")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    folder = Path(tempfile.mkdtemp(prefix="soak-replicas-"))
    db_url = create_database(secrets.token_hex(4))
    try:
        report = asyncio.run(run(args, folder, db_url))
    except (AssertionError, RuntimeError, TimeoutError) as exc:
        print(f"soak could not run: {exc}; logs in {folder}", file=sys.stderr)
        return 2
    finally:
        drop_database(db_url)
    if not args.keep:
        shutil.rmtree(folder, ignore_errors=True)
    text = json.dumps(report, ensure_ascii=False, indent=2)
    if args.out is not None:
        args.out.write_text(text + "\n", encoding="utf-8")
    else:
        print(text)
    print(summary(report), file=sys.stderr)
    return 1 if failed(report) else 0


if __name__ == "__main__":
    sys.exit(main())
