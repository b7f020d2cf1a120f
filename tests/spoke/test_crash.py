"""kill -9 of spoke agents in the middle of their work, and a hub restarted under a stream.

Issue, section 7: "kill -9 of a spoke during a pickup and during an inbox write -> no loss,
no partial file, no duplicate; hub restarted while a spoke is sending."

The kills are real (SIGKILL to the agent's process) and land on moments read from the
agent's own log or folders: right after ``drop.claimed``, after a number of pickup events
or inbox writes drawn from ``random.Random(seed)``, or while an ``inbox/.tmp-*`` staging
folder exists. The seed is printed; ``GOVX_SPOKE_CRASH_SEED=<seed>`` replays the same plan
(the machine's timing still varies). Two tests build the state a kill leaves between two
steps that no kill can be aimed at reliably (a few microseconds apart) by moving the
agent's own files or deleting its own row, then restart the real agent on it.
"""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import sqlite3
from collections import Counter
from collections.abc import Callable

import pytest

from tests.spoke.conftest import ExchangeFactory
from tests.spoke.procs import LogTail, SpokeProcess, eventually, inbox_problems

PICKUP = ("drop.claimed", "drop.sealed", "drop.accepted")


def crash_seed() -> int:
    value = os.environ.get("GOVX_SPOKE_CRASH_SEED")
    seed = int(value) if value else secrets.randbits(32)
    print(f"crash plan seed {seed} (GOVX_SPOKE_CRASH_SEED={seed} replays it)")
    return seed


def notice(title: str, to: str = "jl.cc") -> dict[str, object]:
    """A routine 通知 from the province down to a prefecture (a 函 may not go down a line)."""
    return {"to": to, "classification": "INTERNAL", "doc_type": "通知", "title": title}


async def kill_when(
    spoke: SpokeProcess, trigger: Callable[[], bool], done: Callable[[], bool]
) -> bool:
    """kill -9 ``spoke`` as soon as ``trigger()`` holds; False if ``done()`` came first."""

    def decided() -> str | None:
        if trigger():
            spoke.kill9()
            return "killed"
        if done():
            return "done"
        if not spoke.running:
            raise AssertionError(f"the spoke of {spoke.org} died on its own; see {spoke.log}")
        return None

    return await eventually(decided, f"a moment to kill {spoke.org}", every=0.001) == "killed"


def counted(tail: LogTail, n: int, *events: str) -> Callable[[], bool]:
    """True once ``tail`` has seen ``n`` of ``events``."""
    return lambda: tail.count(*events) >= n


def staging(spoke: SpokeProcess) -> list[str]:
    return [n for n in spoke.inbox_entries() if n.startswith(".tmp-")]


def assert_inbox_exactly_once(
    recipient: SpokeProcess, titles: set[str], msg_ids: set[str], *, count_writes: bool = True
) -> None:
    """Every document once, complete, nothing else: no staging, no partial folder; and
    (``count_writes``) no msg_id written twice, by the agent's ``inbox.received`` lines."""
    entries = recipient.inbox_entries()
    assert [n for n in entries if n.startswith(".")] == []
    received = recipient.received()
    assert sorted(received) == sorted(entries)  # every folder has its meta.json
    assert set(received) == msg_ids
    assert Counter(m["title"] for m in received.values()) == Counter(titles)
    for msg_id in received:
        assert inbox_problems(recipient.inbox / msg_id) == []
    if count_writes:
        written = Counter(e["msg_id"] for e in recipient.logged("inbox.received"))
        assert {m for m, n in written.items() if n > 1} == set()  # never written twice


async def all_delivered(
    sender: SpokeProcess, names: list[str], recipient: str, *, or_failed: bool = False
) -> None:
    """Wait until every drop of ``names`` holds DELIVERED (or, ``or_failed``, is in failed/)."""

    def waiting() -> list[str]:
        statuses = sender.statuses()
        failed = set(sender.failure_names()) if or_failed else set()
        return [
            n
            for n in names
            if n not in failed
            and statuses.get(n, {}).get("recipients", {}).get(recipient, {}).get("status")
            != "DELIVERED"
        ]

    try:
        await eventually(lambda: not waiting(), f"DELIVERED from {recipient} for all {len(names)}")
    except AssertionError as exc:
        bare = [p.name for p in sender.sent_folders() if not (p / "status.json").exists()]
        raise AssertionError(
            f"{exc}; still waiting: {waiting()}; sent/ folders without status.json: {bare}"
        ) from None


# ------------------------------------------------------------------ the sender


@pytest.mark.slow
async def test_sender_killed_during_pickup_sends_every_document_exactly_once(
    exchanges: ExchangeFactory,
) -> None:
    rng = random.Random(crash_seed())
    exchange = exchanges()
    gov, cc = await exchange.running("jl.gov", "jl.cc")
    documents = {f"件-{i:03d}.txt": f"document {i}: {rng.getrandbits(64):x}\n" for i in range(40)}
    titles = {name: f"文件 {i}" for i, name in enumerate(documents)}
    for name, text in documents.items():
        gov.drop(name, text.encode(), notice(titles[name]))

    def all_answered() -> bool:
        return len(gov.sent_folders()) + len(gov.failure_names()) >= len(documents)

    tail = gov.tail()
    kills = []
    if await kill_when(gov, counted(tail, 1, "drop.claimed"), all_answered):
        kills.append("right after the first drop.claimed")
    for _ in range(4):
        gov.start()
        tail = gov.tail()
        target = rng.randint(1, 12)
        if not await kill_when(gov, counted(tail, target, *PICKUP), all_answered):
            break
        kills.append(f"after {target} pickup events")
    print(f"kills: {kills}")
    assert kills, "no kill landed during the pickup"
    if not gov.running:
        gov.start()

    names = list(documents)
    await all_delivered(gov, names, "jl.cc", or_failed=True)
    failed = gov.failure_names()
    by_name = Counter(s["name"] for s in gov.status_files())
    assert {n: c for n, c in by_name.items() if c > 1} == {}  # none sent twice
    assert set(by_name) | set(failed) == set(names)  # none lost
    assert set(by_name) & set(failed) == set()
    for name in failed:  # allowed by the issue, but only with a reason next to it
        failure = gov.failure(name)
        assert failure is not None, f"{name} is in failed/ without NAME.error.txt/json"
        print(f"failed: {name}: {failure[1]['rule']}")
    statuses = gov.statuses()
    for name in by_name:
        folder = gov.sent / statuses[name]["msg_id"]
        assert (folder / name).read_text() == documents[name]
        assert (folder / f"{name}.meta.toml").is_file()
    assert [p.name for p in gov.outbox.iterdir() if not p.name.startswith(".")] == []
    assert list((gov.work / "work").iterdir()) == []  # every claim finished
    assert_inbox_exactly_once(
        cc, {titles[n] for n in by_name}, {statuses[n]["msg_id"] for n in by_name}
    )


@pytest.mark.parametrize(
    "moved_first", ["半途.txt.meta.toml", "半途.txt"], ids=["metadata-first", "document-first"]
)
async def test_restart_after_a_crash_between_the_moves_into_sent_keeps_the_document(
    exchanges: ExchangeFactory, moved_first: str
) -> None:
    """ACCEPTED moves work/NAME and work/NAME.meta.toml into sent/<msg_id>/ one by one, in
    the order the folder lists them; a kill between the two renames leaves one of them in
    sent/ and the other in work/."""
    exchange = exchanges()
    gov, _ = await exchange.running("jl.gov", "jl.cc")
    await gov.hold_entries("jl.cc")  # it seals while the hub is away
    assert exchange.hub is not None
    assert exchange.hub.terminate() == 0  # no ACCEPTED can come: the drop stays sealed
    gov.drop("半途.txt", b"halfway\n", notice("半途"))
    sealed = await gov.wait_logged("drop.sealed", name="半途.txt")
    assert gov.terminate() == 0
    (work,) = (gov.work / "work").iterdir()
    target = gov.sent / sealed["msg_id"]
    target.mkdir(parents=True)
    (work / moved_first).rename(target / moved_first)  # the first rename, then the kill

    gov.start()  # the hub still away: the agent's start-up recovery runs before any answer
    gov.drop("探针.txt", b"probe\n", notice("探针"))
    await gov.wait_logged("drop.sealed", this_run=True, name="探针.txt")  # recovery is done
    exchange.start_hub()
    await gov.wait_status("探针.txt", "jl.cc")
    status = await gov.wait_status("半途.txt", "jl.cc")
    assert status["msg_id"] == sealed["msg_id"]
    assert sorted(p.name for p in target.iterdir()) == [
        "status.json",
        "半途.txt",
        "半途.txt.meta.toml",
    ]
    assert (target / "半途.txt").read_bytes() == b"halfway\n"
    assert not (gov.outbox / "半途.txt").exists()


async def test_restart_after_a_crash_before_status_json_was_written_writes_it(
    exchanges: ExchangeFactory,
) -> None:
    """ACCEPTED records the state, then writes sent/<msg_id>/status.json. When DELIVERED
    was recorded first (it can be: a restart replays the hub's numbered receipts before
    the resent envelope is answered again), a kill between the two leaves a folder
    without status.json, and no later receipt will bring one."""
    exchange = exchanges()
    gov, _ = await exchange.running("jl.gov", "jl.cc")
    gov.drop("状态文件.txt", b"status file\n", notice("状态文件"))
    status = await gov.wait_status("状态文件.txt", "jl.cc")
    assert gov.terminate() == 0
    path = gov.sent / status["msg_id"] / "status.json"
    path.unlink()  # what the kill between the state and the status file leaves

    gov.start()
    gov.drop("探针.txt", b"probe\n", notice("探针"))
    await gov.wait_status("探针.txt", "jl.cc")  # the restarted agent is fully at work
    assert path.exists(), "sent/<msg_id>/ of an ACCEPTED, DELIVERED send has no status.json"
    restored = gov.status("状态文件.txt")
    assert restored is not None
    assert restored["recipients"]["jl.cc"]["status"] == "DELIVERED"


# ------------------------------------------------------------------ the recipient


@pytest.mark.slow
async def test_recipient_killed_during_inbox_writes_keeps_no_partial_folder_and_no_duplicate(
    exchanges: ExchangeFactory,
) -> None:
    rng = random.Random(crash_seed())
    exchange = exchanges()
    gov, cc = await exchange.running("jl.gov", "jl.cc")
    documents = {
        f"报告-{i:02d}.bin": rng.randbytes(rng.choice([2_000, 60_000, 200_000])) for i in range(30)
    }
    titles = {name: f"报告 {i}" for i, name in enumerate(documents)}
    for name, data in documents.items():
        gov.drop(name, data, notice(titles[name]))

    def all_written() -> bool:
        return len([n for n in cc.inbox_entries() if not n.startswith(".")]) >= len(documents)

    kills: list[tuple[int, list[str]]] = []
    for _ in range(4):
        tail = cc.tail()
        target = rng.randint(1, 6)
        if not await kill_when(cc, counted(tail, target, "inbox.received"), all_written):
            break
        left = staging(cc)
        kills.append((target, left))
        cc.start()
        await cc.wait_logged("spoke.starting", this_run=True)
        for name in left:  # what the kill cut in half is gone before anything else runs
            assert cc.logged("inbox.staging_removed", this_run=True, folder=name), name
    print(f"kills (after n inbox writes, staging left): {kills}")
    assert kills, "no kill landed during the inbox writes"

    names = list(documents)
    await all_delivered(gov, names, "jl.cc")
    statuses = gov.statuses()
    assert_inbox_exactly_once(cc, set(titles.values()), {statuses[n]["msg_id"] for n in names})
    for name, data in documents.items():
        assert (cc.inbox / statuses[name]["msg_id"] / name).read_bytes() == data


@pytest.mark.slow
async def test_recipient_killed_while_writing_a_chunked_document_receives_it_after_restart(
    exchanges: ExchangeFactory,
) -> None:
    """A body over 256 KiB arrives in chunks, staged in .spoke/incoming/<msg_id>.part; the
    kill lands while the complete body is being opened into inbox/.tmp-<msg_id>/."""
    exchange = exchanges()
    gov, cc = await exchange.running("jl.gov", "jl.cc")
    data = os.urandom(24 * 1024 * 1024)
    gov.drop("大文件.bin", data, notice("大文件"))

    killed = await kill_when(cc, lambda: bool(staging(cc)), lambda: bool(cc.received()))
    assert killed, "the document was written before the kill could land; make it larger"
    parts = sorted(p.name for p in (cc.work / "incoming").iterdir())
    print(f"after the kill: staging {staging(cc)}, incoming {parts}")
    cc.start()

    status = await gov.wait_status("大文件.bin", "jl.cc", within=45)
    msg_id = status["msg_id"]
    assert_inbox_exactly_once(cc, {"大文件"}, {msg_id})
    assert (cc.inbox / msg_id / "大文件.bin").read_bytes() == data
    assert list((cc.work / "incoming").iterdir()) == []


async def test_restart_after_a_crash_between_the_inbox_rename_and_its_record_acknowledges(
    exchanges: ExchangeFactory,
) -> None:
    """The inbox write renames .tmp-<msg_id> to <msg_id>, then records the msg_id in
    state.db. A kill between the two leaves a complete folder the state does not know; the
    hub, without DELIVERED, sends the document again after the restart."""
    exchange = exchanges()
    gov = exchange.spoke("jl.gov")
    cc = exchange.spoke("jl.cc", receipt_flush=600.0)  # DELIVERED stays in memory
    await exchange.running("jl.gov", "jl.cc")
    gov.drop("重发.txt", b"sent again\n", notice("重发"))
    written = await cc.wait_logged("inbox.received")
    cc.kill9()  # before DELIVERED left
    msg_id = written["msg_id"]
    assert gov.recipient_status("重发.txt", "jl.cc") == "PENDING"
    meta = cc.inbox / msg_id / "meta.json"
    first = (meta.stat().st_ino, meta.read_bytes())
    db = sqlite3.connect(cc.work / "state.db")  # the row the kill would have prevented
    db.execute("DELETE FROM inbound WHERE msg_id = ?", (bytes.fromhex(msg_id),))
    db.commit()
    db.close()

    cc.limits = {**cc.limits, "receipt_flush": 0.02}
    cc.write()
    cc.start()

    def answered() -> str | None:
        if cc.logged("message.failed", this_run=True):
            return "message.failed"
        return "DELIVERED" if gov.recipient_status("重发.txt", "jl.cc") == "DELIVERED" else None

    outcome = await eventually(answered, "DELIVERED, or the agent failing on the message")
    assert outcome == "DELIVERED", f"the agent logged message.failed; see {cc.log}"
    assert_inbox_exactly_once(cc, {"重发"}, {msg_id}, count_writes=False)
    assert (meta.stat().st_ino, meta.read_bytes()) == first  # the folder was not written again


# ------------------------------------------------------------------ the hub


@pytest.mark.slow
@pytest.mark.parametrize(
    ("broker_kind", "how"),
    [("mosquitto", "SIGTERM"), ("mosquitto", "SIGKILL"), ("embedded", "SIGKILL")],
)
async def test_hub_restarted_while_a_spoke_sends_a_stream_delivers_everything_once(
    exchanges: ExchangeFactory, broker_kind: str, how: str
) -> None:
    exchange = exchanges(broker_kind)
    hub = exchange.hub
    assert hub is not None
    gov, cc = await exchange.running("jl.gov", "jl.cc")
    names = [f"流-{i:02d}.txt" for i in range(30)]

    async def stream() -> None:
        for i, name in enumerate(names):
            gov.drop(name, f"stream {i}\n".encode(), notice(f"流 {i}"))
            await asyncio.sleep(0.1)  # paces the load; nothing waits on it

    sending = asyncio.create_task(stream())
    await eventually(lambda: len(gov.sent_folders()) >= 5, "the first documents ACCEPTED")
    if how == "SIGTERM":
        assert await asyncio.to_thread(hub.terminate) == 0
    else:
        await asyncio.to_thread(hub.kill9)
    await asyncio.to_thread(hub.start)
    await sending

    await all_delivered(gov, names, "jl.cc")
    by_name = Counter(s["name"] for s in gov.status_files())
    assert by_name == Counter(names)
    statuses = gov.statuses()
    assert_inbox_exactly_once(
        cc, {f"流 {i}" for i in range(30)}, {statuses[n]["msg_id"] for n in names}
    )
