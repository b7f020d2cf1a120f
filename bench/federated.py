"""Across two hubs (issue 17): 1 KiB documents from Jilin's spokes to the State Council's
General Office through Jilin's hub and the national hub, against the raw relay and one hub.

    python bench/federated.py                # raw, hub and federated; print a table
    python bench/federated.py --write        # ... and update docs/benchmarks.md

The raw and hub systems are bench/e2e.py's, run here with the same load (the same
senders, one recipient); the **federated** system is two hubd, each on its own Mosquitto,
wired as tests/hub/test_federation_hubs.py wires them: Jilin's hub (its directory
``provincial_view``: cn.gov reached through the national hub) with an uplink on both
channels of the link to the national hub's broker, and the national hub (``national_view``:
Jilin's organisations through the member hub jl.hub). The senders are Jilin's
organisations on Jilin's broker, the recipient is cn.gov on the national hub's broker (the
only organisation the national hub serves itself in that topology), so every document is
verified, gated, stored and answered by both hubs, and its DELIVERED comes back through
both. Latency is send -> DELIVERED back at the sender, as in bench/e2e.py.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import pickle
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.e2e import (
    SENDERS,
    Plan,
    Result,
    cpu_seconds,
    format_table,
    prepare,
    recipient_main,
    replace_block,
    run_once,
    sender_main,
)
from bench.runfolder import kept_on_failure
from schemas.directory import Directory, sign_directory
from schemas.keys import SigningKey
from tests.federation import national_view, provincial_view
from tests.hubproc import HubProcess, Mosquitto, live_directory
from tests.world import World, make_world

NATIONAL_RECIPIENT = "cn.gov"
SIGNATORY = "王五"  # a document up to cn.gov names its signatory (rule upward_signatory)
SINGLE_RECIPIENT = ["jl.cc"]  # the one-hub and raw runs: one recipient too, as cn.gov here


def blob_for(world: World, hub_key: SigningKey, directory: Directory) -> bytes:
    """bench/e2e.py's child blob, the directory signed by ``hub_key`` (each side's hub)."""
    seeds = {org: (k.signing.seed, k.encryption.secret) for org, k in world.keys.items()}
    return pickle.dumps((hub_key.seed, seeds, sign_directory(directory, hub_key)))


def uplink_toml(national_port: int) -> str:
    return "[upstream]\nhello_every = 2.0\n" + "".join(
        f'[upstream.channels.{ch}]\nurl = "mqtt://127.0.0.1:{national_port}"\n'
        for ch in ("govnet", "classified")
    )


def run_federated(args: argparse.Namespace, *, rate: float, count: int, tmp: Path) -> Result:
    ctx = mp.get_context("spawn")
    world = make_world()
    base = live_directory(world)
    national_key = SigningKey.generate()
    national_dir = national_view(world, base, national_key)
    jilin_dir = provincial_view(base, national_key)
    jilin_blob = blob_for(world, world.hub_key, jilin_dir)
    national_blob = blob_for(world, national_key, national_dir)
    senders_orgs = SENDERS[: args.senders]
    recipients = [NATIONAL_RECIPIENT]
    run = tmp / f"federated-{rate}"
    m_national = Mosquitto(run / "m-national").start()
    m_jilin = Mosquitto(run / "m-jilin").start()
    national = HubProcess(run / "national", national_key, national_dir, m_national.port)
    jilin = HubProcess(
        run / "jilin",
        world.hub_key,
        jilin_dir,
        m_jilin.port,
        extra_toml=uplink_toml(m_national.port),
    )
    hubs = [national, jilin]
    stop = ctx.Event()
    extra: list[mp.process.BaseProcess] = []
    try:
        national.start()
        jilin.start()
        time.sleep(3.0)  # Jilin's uplink connects and says hello to the national hub
        prepared = None
        if args.load == "precomputed":
            prepared = tmp / f"prepared-federated-{rate}.pickle"
            batch = args.receipt_batch if rate == 0 else 1
            made = prepare(jilin_blob, senders_orgs, recipients, count, batch, SIGNATORY)
            prepared.write_bytes(pickle.dumps(made))
        ready = ctx.Queue()
        for org in recipients:
            receiver = ctx.Process(
                target=recipient_main,
                args=("hub", m_national.port, org, national_blob, stop, prepared, ready),
            )
            receiver.start()
            extra.append(receiver)
        for _ in recipients:
            ready.get(timeout=120)
        go, out = ctx.Event(), ctx.Queue()
        per_sender_rate = rate / args.senders if rate else 0.0
        plan = Plan("hub", m_jilin.port, count, per_sender_rate, args.window, prepared, SIGNATORY)
        senders = [
            ctx.Process(target=sender_main, args=(plan, org, recipients, jilin_blob, go, out))
            for org in senders_orgs
        ]
        for sender in senders:
            sender.start()
        time.sleep(2.0 + count / 4000)  # sealing happens before the go signal
        middles = [h.process.pid for h in hubs if h.process is not None]
        pids = [*middles, *(p.pid for p in [*extra, *senders] if p.pid is not None)]
        pids += [m.process.pid for m in (m_national, m_jilin) if m.process is not None]
        before = {pid: cpu_seconds(pid) for pid in pids}
        go.set()
        results = [out.get(timeout=600) for _ in senders]
        spent = {pid: cpu_seconds(pid) - t0 for pid, t0 in before.items()}
        for sender in senders:
            sender.join(30)
        rss = max(h.peak_rss_kib() for h in hubs) / 1024
    finally:
        stop.set()
        for child in extra:
            child.join(10)
            if child.is_alive():
                child.kill()
        for h in (jilin, national):
            if h.process is not None and h.process.poll() is None:
                h.terminate()
            h.stop()
        m_jilin.stop()
        m_national.stop()
    errors = {
        name: sum(1 for e in h.log_events() if e.get("level") == "error")
        for name, h in (("jilin", jilin), ("national", national))
    }
    latencies = sorted(x for r in results for x in r["latencies"])
    delivered = sum(int(r["done"]) for r in results)
    elapsed = max(float(r["elapsed"]) for r in results)
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 100 else [0.0] * 99
    per_doc = 1e6 / delivered if delivered else 0.0
    return Result(
        "federated",
        args.senders,
        len(recipients),
        rate,
        count * args.senders,
        delivered,
        delivered / elapsed if elapsed else 0.0,
        q[49],
        q[98],
        rss,
        sum(spent[pid] for pid in middles) * per_doc,
        sum(spent.values()) * per_doc,
        {"jilin": spent[middles[1]] * per_doc, "national": spent[middles[0]] * per_doc},
        {},
        errors,
        None,
    )


def ratios(rows: list[Result]) -> str:
    """Federated over raw and over one hub, at saturation (docs/s) and paced (p50, p99)."""
    by = {(r.mode, r.rate == 0): r for r in rows}
    lines = [
        "",
        "| federated ÷ | docs/s (saturation) | p50 (paced) | p99 (paced) |",
        "| --- | ---: | ---: | ---: |",
    ]
    fed_sat, fed_paced = by.get(("federated", True)), by.get(("federated", False))
    for mode in ("raw", "hub"):
        sat, paced = by.get((mode, True)), by.get((mode, False))
        if not (fed_sat and fed_paced and sat and paced and sat.per_second):
            continue
        lines.append(
            f"| {mode} | {fed_sat.per_second / sat.per_second:.2f} | "
            f"{fed_paced.p50 / paced.p50 if paced.p50 else 0:.2f} | "
            f"{fed_paced.p99 / paced.p99 if paced.p99 else 0:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--senders",
        type=int,
        default=1,
        help="1: jl.gov, the one organisation of Jilin's hub that may send cn.gov a document "
        "(its parent; a department skips a level)",
    )
    parser.add_argument(
        "--docs", type=int, default=2000, help="documents per sender (saturation run)"
    )
    parser.add_argument("--window", type=int, default=400, help="documents in flight per sender")
    parser.add_argument(
        "--rate", type=float, default=200.0, help="offered docs/s for the latency runs"
    )
    parser.add_argument("--seconds", type=float, default=6.0, help="length of a latency run")
    parser.add_argument("--load", choices=["spokes", "precomputed"], default="spokes")
    parser.add_argument("--receipt-batch", type=int, default=16)
    parser.add_argument("--modes", default="raw,hub,federated", help="comma-separated")
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    parser.add_argument("--keep", action="store_true", help="keep the run's folder in /tmp")
    args = parser.parse_args()
    # what bench/e2e.py's run_once reads, for the raw and one-hub runs
    args.recipients = len(SINGLE_RECIPIENT)
    args.store, args.replicas, args.ledger_checkpoints, args.profile = "sqlite", 0, "default", ""
    tmp = Path(tempfile.mkdtemp(prefix="govx-fbench-"))
    rows: list[Result] = []
    latency_count = int(args.rate * args.seconds / args.senders)
    with kept_on_failure(tmp, keep=args.keep):
        for mode in args.modes.split(","):
            for rate, count in ((0.0, args.docs), (args.rate, latency_count)):
                if mode == "federated":
                    rows.append(run_federated(args, rate=rate, count=count, tmp=tmp))
                else:
                    rows.append(run_once(mode, args, rate=rate, count=count, tmp=tmp))
                print(format_table(rows[-1:]).splitlines()[-1], flush=True)
    table = format_table(rows).replace("by replica", "by hub") + "\n" + ratios(rows)
    print(table)
    if args.write:
        words = [
            f"--{k.replace('_', '-')} {v}"
            for k, v in vars(args).items()
            if k in {"senders", "docs", "window", "rate", "seconds", "load"}
        ]
        if args.load == "precomputed":
            words.append(f"--receipt-batch {args.receipt_batch}")
        replace_block("federated", "python bench/federated.py " + " ".join(words), table)


if __name__ == "__main__":
    main()
