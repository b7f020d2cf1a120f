"""National scale: what the directory costs when every spoke takes it (issue 14, baseline).

    python bench/national.py                   # 17,000 and 100,000 orgs, 10,000 spokes (~4 min)
    python bench/national.py --orgs 10000,17000 --spokes 1000
    python bench/national.py --write           # ... and update docs/benchmarks.md

For each size: generate a national tree of N organisations and its directory (as
``hubctl directory build`` builds and signs it; above 8 MiB it is refused, and the refusal
is the figure), start a real Mosquitto (many clients) and a real hubd serving it, then
connect M simulated spokes that do what a spoke does on connecting: a will (retained
"offline" on its presence topic), subscriptions to its down topic and to the directory, a
retained "online", a hello. Measured: when every spoke has the directory and the hub has
heard every hello, the directory bytes each spoke took, broker and hub memory, the time a
spoke takes to check a directory, and, after one organisation's key rotates (a new
directory version, SIGHUP), the bytes each spoke takes for that.

How a spoke takes the directory is bench/takers.py (one class, swapped when the protocol
changes); the spokes are bench/rawmqtt.py connections (streamed payloads: see there why
not aiomqtt).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import resource
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TypeVar

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.e2e import replace_block
from bench.nation import CHANNEL, Nation, make_nation, try_sign
from bench.rawmqtt import RawClient, Sink, Will, check_readers
from bench.runfolder import kept_on_failure
from bench.takers import TAKERS, DirectoryTaker
from runtime.clock import now_ms
from runtime.tasks import cancel_and_wait
from schemas import topics, transport
from schemas.directory import sign_directory
from tests.hubproc import HubProcess, Mosquitto

T = TypeVar("T")
SAMPLED = 3  # spokes that keep what they took, for the timed check
CONNECTING = 256  # spokes in the middle of connecting at once (the broker's listen backlog)


def now() -> float:
    return time.perf_counter()


# ------------------------------------------------------------------ one simulated spoke


class _Count:
    """Counts (and, for a sampled spoke, keeps) one directory message as it streams in."""

    def __init__(self, spoke: SimSpoke) -> None:
        self._spoke = spoke
        self._chunks: list[bytes] | None = [] if spoke.keep else None

    def feed(self, chunk: bytes) -> None:
        self._spoke.directory_bytes += len(chunk)
        if self._chunks is not None:
            self._chunks.append(chunk)

    def done(self) -> None:
        spoke = self._spoke
        spoke.directory_messages += 1
        spoke.last_taken = now()
        if self._chunks is not None:
            spoke.kept = b"".join(self._chunks)


class SimSpoke:
    """One organisation's spoke, as far as the directory is concerned."""

    def __init__(self, org: str, taker: DirectoryTaker, *, keep: bool) -> None:
        self.org, self.taker, self.keep = org, taker, keep
        self.client: RawClient | None = None
        self.directory_bytes = 0
        self.directory_messages = 0
        self.last_taken = 0.0
        self.kept: bytes | None = None

    def _route(self, topic: str, head: bytes, _size: int) -> Sink | None:
        return _Count(self) if self.taker.claims(CHANNEL, self.org, topic, head) else None

    async def connect(self, port: int) -> None:
        org = self.org
        will = Will(topics.presence(CHANNEL, org), topics.OFFLINE)
        self.client = client = await RawClient.connect(
            "127.0.0.1", port, f"spoke-{org}", will=will, route=self._route
        )
        await client.subscribe([topics.down(CHANNEL, org), *self.taker.subscriptions(CHANNEL, org)])
        client.publish(topics.presence(CHANNEL, org), topics.ONLINE, retain=True)
        client.publish(topics.up(CHANNEL, org), transport.encode(transport.HelloMsg(0)))
        await self.taker.on_online(client, CHANNEL, org)


# ------------------------------------------------------------------ what is measured


@dataclass
class Row:
    """The figures of one size (None: not measured, because the directory was refused)."""

    orgs: int
    spokes: int
    directory_bytes: int | None = None
    refusal: str = ""
    generate_s: float = 0.0  # topology, keys, build (schemas.topology.build_directory)
    sign_s: float = 0.0
    connected_s: float | None = None  # every spoke connected and subscribed
    all_taken_s: float | None = None  # every spoke holds the directory
    all_hello_s: float | None = None  # the hub logged every spoke's hello
    hub_online: int | None = None  # govxchg_spokes_online at the end
    taken_per_spoke: int | None = None  # bytes, median over the spokes
    taken_total: int | None = None  # bytes every spoke took together (the broker sent them)
    broker_connect_peak_mb: float | None = None  # before the rotation
    broker_peak_mb: float | None = None
    broker_killed: bool = False  # over --broker-cap-mb: the figures after it are partial
    hub_peak_mb: float | None = None
    bench_peak_mb: float | None = None
    check_ms: float | None = None  # the taker's check, median of the sampled spokes
    rotation_spokes: int | None = None  # spokes that took the new version (all, unless stopped)
    rotation_per_spoke: int | None = None
    rotation_total: int | None = None
    rotation_s: float | None = None  # SIGHUP until every spoke holds the new version
    notes: list[str] = field(default_factory=list)


def peak_mb(pid: int, key: str = "VmHWM") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


class HubLog:
    """Reads hubd's JSON log as it grows: the hellos it heard (each ``spoke.hello`` line,
    and those a ``spoke.storm`` line counted in a burst)."""

    def __init__(self, path: Path) -> None:
        self._path, self._offset, self.hellos, self.reloaded = path, 0, set[str](), 0
        self.counted = 0  # hellos a spoke.storm line counted instead of naming them

    @property
    def heard(self) -> int:
        return len(self.hellos) + self.counted

    def poll(self) -> None:
        with self._path.open("rb") as log:
            log.seek(self._offset)
            data = log.read()
        end = data.rfind(b"\n") + 1
        self._offset += end
        for line in data[:end].splitlines():
            if (
                b'"spoke.hello"' in line
                or b'"directory.reloaded"' in line
                or b'"spoke.storm"' in line
            ):
                with contextlib.suppress(ValueError):
                    event = json.loads(line)
                    if event.get("event") == "spoke.hello":
                        self.hellos.add(event.get("org", ""))
                    elif event.get("event") == "spoke.storm":
                        self.counted += int(event.get("hello", 0))
                    elif event.get("event") == "directory.reloaded":
                        self.reloaded += 1


async def until(condition: Callable[[], bool], seconds: float, what: str) -> float:
    """Wait for ``condition()``; returns how long it took, or raises naming ``what``."""
    start = now()
    try:
        async with asyncio.timeout(seconds):
            while not condition():
                check_readers()
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise TimeoutError(f"{what}: not within {seconds:.0f} s") from None
    return now() - start


async def guard_memory(broker: Mosquitto, cap_mb: float, row: Row, when: Callable[[], str]) -> None:
    """Kill the broker (and raise) before its memory takes the shared machine down; ``when``
    says how far the run got."""
    assert broker.process is not None
    while True:
        rss = peak_mb(broker.process.pid, "VmRSS")
        if rss > cap_mb:
            row.broker_peak_mb, row.broker_killed = rss, True
            broker.process.kill()  # now: a busy broker may not read SIGTERM for seconds
            raise MemoryError(
                f"the broker held {rss:,.0f} MB (above --broker-cap-mb {cap_mb:,.0f}) {when()}, "
                "and was killed there"
            )
        await asyncio.sleep(0.1)


def metric(url: str, name: str) -> int | None:
    with urllib.request.urlopen(url + "/metrics", timeout=30) as answer:  # noqa: S310 - our own hub on loopback
        for line in answer.read().decode().splitlines():
            if line.startswith((name + "{", name + " ")):
                return int(float(line.rsplit(" ", 1)[1]))
    return None


# ------------------------------------------------------------------ one size


async def run_spokes(
    nation: Nation, row: Row, hub: HubProcess, broker: Mosquitto, args: argparse.Namespace
) -> None:
    taker = TAKERS[args.taker](nation.hub_key.public)
    spokes = [SimSpoke(org, taker, keep=i < SAMPLED) for i, org in enumerate(nation.spokes)]
    log = HubLog(hub.folder / "hubd.log")
    assert broker.process is not None
    assert hub.process is not None
    phase = ["connecting"]

    def progress() -> str:
        holding = sum(1 for s in spokes if s.directory_messages)
        rotated = sum(1 for s in spokes if s.directory_messages > 1)
        return (
            f"while {phase[0]}, {now() - start:.0f} s in: {holding:,} of {len(spokes):,} "
            f"spokes held the directory, {rotated:,} its next version"
        )

    start = now()
    guard = asyncio.create_task(guard_memory(broker, args.broker_cap_mb, row, progress))
    gate = asyncio.Semaphore(CONNECTING)

    async def connect(spoke: SimSpoke) -> None:
        async with gate:
            await spoke.connect(broker.port)

    def all_hello() -> bool:
        log.poll()
        return log.heard >= len(spokes)

    try:
        await against(guard, asyncio.gather(*(connect(s) for s in spokes)))
        row.connected_s = now() - start
        phase[0] = "waiting for every spoke to hold the directory"
        _, hello_wait = await against(
            guard,
            asyncio.gather(
                until(lambda: all(s.directory_messages for s in spokes), args.timeout, "directory"),
                until(all_hello, args.timeout, "hub hellos"),
            ),
        )
        row.all_taken_s = max(s.last_taken for s in spokes) - start
        row.all_hello_s = row.connected_s + hello_wait
        first = [s.directory_bytes for s in spokes]
        row.taken_per_spoke = int(statistics.median(first))
        row.taken_total = sum(first)
        row.hub_online = metric(hub.metrics_url, "govxchg_spokes_online")
        row.check_ms = _check(taker, spokes)
        row.broker_connect_peak_mb = peak_mb(broker.process.pid)
        phase[0] = "taking the rotated directory"
        await rotate(nation, row, hub, spokes, log, guard, args)
    finally:
        guard.cancel()
        with contextlib.suppress(asyncio.CancelledError, MemoryError):
            await guard
        if not row.broker_killed:
            row.broker_peak_mb = peak_mb(broker.process.pid)
        row.hub_peak_mb = peak_mb(hub.process.pid)
        row.bench_peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        await asyncio.gather(*(s.client.close() for s in spokes if s.client is not None))


async def against(guard: asyncio.Task[None], work: Awaitable[T]) -> T:
    """``work``'s result, unless the memory guard fires first (then its MemoryError)."""
    task = asyncio.ensure_future(work)
    await asyncio.wait({task, guard}, return_when=asyncio.FIRST_COMPLETED)
    if guard.done() and not task.done():
        await cancel_and_wait(task)
        guard.result()
    return await task


def _check(taker: DirectoryTaker, spokes: list[SimSpoke]) -> float:
    times = []
    for spoke in spokes[:SAMPLED]:
        assert spoke.kept is not None
        t0 = now()
        taker.check(spoke.kept)
        times.append((now() - t0) * 1000)
    return statistics.median(times)


async def rotate(
    nation: Nation,
    row: Row,
    hub: HubProcess,
    spokes: list[SimSpoke],
    log: HubLog,
    guard: asyncio.Task[None],
    args: argparse.Namespace,
) -> None:
    """One organisation's new signing key: a new directory version, served by SIGHUP."""
    before = [s.directory_bytes for s in spokes]
    taken = [s.directory_messages for s in spokes]
    directory = nation.rotated(nation.spokes[-1], now=now_ms())
    (hub.folder / "keys" / "directory.bin").write_bytes(sign_directory(directory, nation.hub_key))
    start = now()
    hub.hup()
    work = until(
        lambda: all(s.directory_messages > n for s, n in zip(spokes, taken, strict=True)),
        args.timeout,
        "the rotated directory",
    )
    try:
        await against(guard, work)
        row.rotation_s = max(s.last_taken for s in spokes) - start
    finally:  # partial when the broker was stopped: what the spokes that took it took
        after = [
            s.directory_bytes - b
            for s, b, n in zip(spokes, before, taken, strict=True)
            if s.directory_messages > n
        ]
        row.rotation_spokes = len(after)
        row.rotation_per_spoke = int(statistics.median(after)) if after else None
        row.rotation_total = sum(s.directory_bytes for s in spokes) - sum(before)
    log.poll()
    if log.reloaded != 1:
        row.notes.append(f"the hub logged directory.reloaded {log.reloaded} times, not once")


def measure(orgs: int, args: argparse.Namespace, tmp: Path) -> Row:
    spokes = min(args.spokes, orgs)
    row = Row(orgs, spokes)
    t0 = now()
    nation = make_nation(orgs, spokes, now=now_ms())
    row.generate_s = now() - t0
    frame, row.refusal, row.sign_s = try_sign(nation)
    if frame is None:
        return row
    row.directory_bytes = len(frame)
    broker = Mosquitto(tmp / f"mosquitto-{orgs}", settings=("max_connections -1",)).start()
    hub = None
    try:
        hub = HubProcess(
            tmp / f"hub-{orgs}", nation.hub_key, nation.directory, broker_port=broker.port
        )
        hub.start(timeout=args.timeout)
        try:
            _run(run_spokes(nation, row, hub, broker, args))
        except (MemoryError, TimeoutError, ConnectionError) as exc:
            row.notes.append(f"stopped: {exc}")
    finally:
        if hub is not None and hub.process is not None and hub.process.poll() is None:
            hub.terminate()
        broker.stop()
    return row


# ------------------------------------------------------------------ report


def _mb(value: float | None) -> str:
    return "" if value is None else f"{value:,.0f} MB"


def _bytes(value: int | None) -> str:
    if value is None:
        return ""
    if value >= 10**9:
        return f"{value / 10**9:,.1f} GB"
    if value >= 10**6:
        return f"{value / 10**6:,.2f} MB"
    return f"{value:,} B"


def _frame(row: Row) -> str:
    if row.directory_bytes is not None:
        return _bytes(row.directory_bytes)
    size = re.search(r"is (\d+) bytes", row.refusal)  # hubctl's sentence names the size
    return "**refused**" + (f" ({_bytes(int(size.group(1)))})" if size else "")


def _count(value: int | None) -> str:
    return "" if value is None else f"{value:,}"


def _s(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.2f} s" if value < 10 else f"{value:,.0f} s"


def format_table(rows: list[Row], taker: str) -> str:
    """One column per size, one line per figure."""
    lines: list[tuple[str, list[str]]] = [
        ("organisations", [f"{r.orgs:,}" for r in rows]),
        ("simulated spokes", [f"{r.spokes:,}" for r in rows]),
        ("signed directory", [_frame(r) for r in rows]),
        (
            "bytes per organisation",
            [f"{r.directory_bytes / r.orgs:.0f}" if r.directory_bytes else "" for r in rows],
        ),
        ("generate + build; sign", [f"{r.generate_s:.1f} s; {r.sign_s:.1f} s" for r in rows]),
        ("every spoke connected", [_s(r.connected_s) for r in rows]),
        ("every spoke holds the directory", [_s(r.all_taken_s) for r in rows]),
        ("the hub heard every hello", [_s(r.all_hello_s) for r in rows]),
        (
            "online at the hub (/metrics)",
            [f"{r.hub_online:,}" if r.hub_online is not None else "" for r in rows],
        ),
        ("directory bytes per spoke (connect)", [_bytes(r.taken_per_spoke) for r in rows]),
        ("directory bytes through the broker", [_bytes(r.taken_total) for r in rows]),
        (
            "spoke's check of what it took, median",
            [f"{r.check_ms:,.0f} ms" if r.check_ms else "" for r in rows],
        ),
        ("one key rotation: spokes that took it", [_count(r.rotation_spokes) for r in rows]),
        ("one key rotation: bytes per spoke", [_bytes(r.rotation_per_spoke) for r in rows]),
        ("one key rotation: bytes through the broker", [_bytes(r.rotation_total) for r in rows]),
        ("one key rotation: SIGHUP until every spoke has it", [_s(r.rotation_s) for r in rows]),
        ("broker peak RSS: spokes connecting", [_mb(r.broker_connect_peak_mb) for r in rows]),
        (
            "broker peak RSS: with the rotation",
            [_mb(r.broker_peak_mb) + (" (killed)" if r.broker_killed else "") for r in rows],
        ),
        ("hub peak RSS", [_mb(r.hub_peak_mb) for r in rows]),
        ("load generator peak RSS", [_mb(r.bench_peak_mb) for r in rows]),
    ]
    out = [
        "| "
        + " | ".join(["directory as spokes take it: " + taker, *[f"{r.orgs:,} orgs" for r in rows]])
        + " |",
        "| --- |" + " ---: |" * len(rows),
    ]
    out += [f"| {name} | " + " | ".join(values) + " |" for name, values in lines]
    notes = [f"- {r.orgs:,} organisations: {r.refusal}" for r in rows if r.refusal]
    signed = [r for r in rows if r.directory_bytes]
    if signed and len(signed) < len(rows):
        per_org = max(r.directory_bytes or 0 for r in signed) / max(r.orgs for r in signed)
        notes.append(
            f"- at {per_org:.0f} bytes per organisation the 8 MiB limit falls near "
            f"{8 * 2**20 / per_org:,.0f} organisations"
        )
    notes += [f"- {r.orgs:,} organisations: {n}" for r in rows for n in r.notes]
    return "\n".join(out + (["", *notes] if notes else []))


def run_options(parser: argparse.ArgumentParser) -> None:
    """The options every national-scale bench takes (bench/groupnotice.py too)."""
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds for each phase")
    parser.add_argument(
        "--broker-cap-mb", type=float, default=8192.0, help="stop a run whose broker holds more"
    )
    parser.add_argument("--tmp", type=Path, default=None, help="folder for broker and hub state")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here as JSON")
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")


def main(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--orgs", default="17000,100000", help="organisations, one size or several (a,b,c)"
    )
    parser.add_argument(
        "--taker", choices=sorted(TAKERS), default="whole", help="how spokes take the directory"
    )
    parser.add_argument("--spokes", type=int, default=10_000, help="simulated spokes per size")
    run_options(parser)
    args = parser.parse_args(argv)
    sizes = [int(x) for x in args.orgs.split(",") if x.strip()]
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the broker inherits it
    if hard < args.spokes + 200:
        parser.error(
            f"--spokes {args.spokes} needs {args.spokes + 200} open files; the limit is {hard}"
        )
    if args.tmp is not None:  # the caller's folder: left as it is
        rows = [measure(orgs, args, args.tmp) for orgs in sizes]
    else:
        with kept_on_failure(Path(tempfile.mkdtemp(prefix="govx-national-"))) as tmp:
            rows = [measure(orgs, args, tmp) for orgs in sizes]
    table = format_table(rows, TAKERS[args.taker](b"").name)
    print(table)
    print(
        "\nKeys: key pairs for the simulated spokes' organisations; random 32-byte public keys"
        " for the others (generating 100,000 pairs costs ~10 s; nothing checks a directory"
        " key is a curve point)."
    )
    if args.json is not None:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=1))
    if args.write:
        taker = "" if args.taker == "whole" else f" --taker {args.taker}"
        command = f"python bench/national.py --orgs {args.orgs} --spokes {args.spokes}{taker}"
        # one block per protocol and spoke count: the new protocol's runs sit beside today's
        replace_block(f"national-{args.taker}-{args.spokes}", command, table)
    return rows


def _run(coro: Coroutine[None, None, None]) -> None:
    try:
        import uvloop  # noqa: PLC0415 - optional, as in bench/e2e.py
    except ImportError:
        asyncio.run(coro)
    else:
        uvloop.run(coro)


if __name__ == "__main__":
    main()
