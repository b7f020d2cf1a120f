"""Large documents through a real hubd: chunks, spool, resume, interleaving, memory.

Issue text: "Large documents travel as chunks: the hub spools them to disk, never holds a
whole document in memory, resumes a broken transfer from the last chunk it has, and
interleaves chunks of different messages so precedence still holds. A 1 GiB document
passes through with the hub's peak RSS under 150 MB."

Senders seal a sparse file of zeros into a ciphertext file and stream it from there
(:meth:`SimSpoke.send_file`: the head, then chunks from the offset the hub's ``resume``
names); recipients with ``stream_dir`` stage chunks to a file and open it streaming, so
the test process never holds a document either.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from schemas import transport
from schemas.ids import msg_id_text
from schemas.labels import Precedence
from schemas.receipts import ReceiptStatus
from schemas.seal import Sealed
from tests.hub.conftest import HubSpawner, SpokeSpawner
from tests.hubproc import HubProcess, Mosquitto
from tests.spokesim import Arrival, SimSpoke

MiB = 1 << 20
GiB = 1 << 30
CHUNK = transport.CHUNK_BYTES
# SHA-256 of 2**30 zero bytes (as in tests/schemas/test_large_body.py, computed outside
# this project): the recipient's plaintext is checked against it, not against itself.
SHA256_OF_1_GIB_ZEROS = "49bc20df15e412a64472421e13fe86ff1c5165e18b2afccf160d4dc19fe68a14"
PEAK_RSS_LIMIT = 150 * 1000 * 1000  # bytes: "the hub's peak RSS under 150 MB"
# The test process (simulated sender and recipient) only has to show it never held the
# whole document: on a loaded machine paho's queues between the two sims hold hundreds of
# megabytes of chunks in flight (530 MB seen once). The spoke's own bound is tested in
# tests/schemas/test_large_body.py and the hub's here.
TEST_GROWTH_LIMIT = 900 * 1000 * 1000  # bytes; below the 1 GiB (1074 MB) document
WITHIN = 60.0  # generous bound for a transfer of a few MiB
WITHIN_GIB = 900.0  # ... and for 1 GiB through the hub and out again


def sparse(path: Path, size: int) -> Path:
    with path.open("wb") as handle:
        handle.truncate(size)
    return path


def sha256_of_zeros(size: int) -> str:
    digest, block = hashlib.sha256(), bytes(MiB)
    for offset in range(0, size, MiB):
        digest.update(block[: min(MiB, size - offset)])
    return digest.hexdigest()


def sha256_of_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(MiB):
            digest.update(block)
    return digest.hexdigest()


def spool(hub: HubProcess, msg_id: bytes, suffix: str) -> Path:
    return hub.folder / "state" / "spool" / f"{msg_id_text(msg_id)}.{suffix}"


def file_size(path: Path) -> int:
    with contextlib.suppress(FileNotFoundError):
        return path.stat().st_size
    return -1


def reset_peak_rss() -> int:
    """Reset the test process's VmHWM to its current RSS (Linux: 5 > clear_refs); KiB."""
    Path("/proc/self/clear_refs").write_text("5")
    return vm_kib("VmRSS")


def vm_kib(field: str) -> int:
    """VmRSS or VmHWM of the test process itself."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


async def eventually(predicate: Callable[[], bool], within: float = WITHIN) -> bool:
    """Poll ``predicate`` (state of another process, a file) until it holds or time is up."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(within):
            while True:
                if predicate():
                    break
                await asyncio.sleep(0.02)
    return predicate()


async def seal_zeros(
    spoke: SimSpoke,
    to: str,
    folder: Path,
    name: str,
    size: int,
    *,
    precedence: Precedence = Precedence.ROUTINE,
) -> tuple[Sealed, Path]:
    """A document of ``size`` zero bytes, sealed by ``spoke`` into ``folder/name.sealed``."""
    source = sparse(folder / f"{name}.bin", size)
    sink = folder / f"{name}.sealed"
    sealed = await asyncio.to_thread(spoke.seal_file, [to], source, sink, precedence=precedence)
    source.unlink()
    return sealed, sink


async def delivered(sender: SimSpoke, recipient: SimSpoke, msg_id: bytes, within: float) -> None:
    """Wait until the recipient opened ``msg_id`` and the sender holds its DELIVERED."""
    await recipient.wait_for(lambda: msg_id in recipient.received, within)
    await sender.wait_for(
        lambda: sender.has(msg_id, ReceiptStatus.DELIVERED, recipient.org), within
    )


@pytest.fixture(params=["embedded", "mosquitto"])
def broker_port(request: pytest.FixtureRequest) -> int | None:
    """None for the broker inside hubd, or the port of a Mosquitto of the test's own."""
    if request.param == "embedded":
        return None
    return int(request.getfixturevalue("mosquitto").port)


@pytest.fixture
def big_files(tmp_path: Path) -> Iterator[Path]:
    """A folder for documents; everything big under tmp_path is deleted afterwards, so
    pytest's kept temporary folders do not pile up gigabytes."""
    folder = tmp_path / "docs"
    folder.mkdir()
    yield folder
    for pattern in ("**/*.sealed", "**/*.bin", "**/*.body", "**/*.part"):
        for path in tmp_path.glob(pattern):
            path.unlink(missing_ok=True)


# ------------------------------------------------------------------ 1 GiB


@pytest.mark.slow
async def test_one_gib_document_passes_through_with_hub_peak_rss_under_150_mb(
    mosquitto: Mosquitto, spawn_hub: HubSpawner, spawn_spoke: SpokeSpawner, big_files: Path
) -> None:
    hub = spawn_hub(broker_port=mosquitto.port)
    sender = spawn_spoke(hub, "jl.gov")
    recipient = spawn_spoke(hub, "jl.cc", stream_dir=big_files / "inbox")
    rss_before = reset_peak_rss()

    sealed, ciphertext = await seal_zeros(sender, "jl.cc", big_files, "gib", GiB)
    msg_id = sealed.header.msg_id
    await recipient.connect()
    await sender.connect()
    await sender.send_file(sealed, ciphertext)
    await sender.wait_for(lambda: sender.has(msg_id, ReceiptStatus.ACCEPTED), WITHIN_GIB)
    await delivered(sender, recipient, msg_id, WITHIN_GIB)

    hub_peak = hub.peak_rss_kib() * 1024
    test_growth = vm_kib("VmHWM") * 1024 - rss_before * 1024
    print(
        f"\n1 GiB through hubd: hub peak RSS {hub_peak / 1e6:.1f} MB; the test process "
        f"(sender and recipient) grew by at most {test_growth / 1e6:.1f} MB"
    )
    assert hub_peak < PEAK_RSS_LIMIT
    assert test_growth < TEST_GROWTH_LIMIT

    opened = recipient.received[msg_id]
    assert opened.sizes == [GiB]
    assert [d.hex() for d in opened.digests] == [SHA256_OF_1_GIB_ZEROS]
    assert recipient.deliveries[msg_id] == 1
    # The hub spooled the body to disk, whole, and holds no partial transfer.
    assert file_size(spool(hub, msg_id, "body")) == sealed.body.size
    assert not spool(hub, msg_id, "part").exists()
    # Every chunk went up once: nothing was resent, so nothing was lost on the way.
    assert sender.resumes == [(msg_id, 0)]


# ------------------------------------------------------------------ resume


DOC = 8 * MiB  # plaintext; the body is a little more (a 41-byte stream header + MACs)
HALF = 16 * CHUNK  # where the sender stalls: 4 MiB of body, a chunk boundary


async def test_sender_that_stalls_and_reconnects_resumes_from_the_offset_the_hub_holds(
    broker_port: int | None, spawn_hub: HubSpawner, spawn_spoke: SpokeSpawner, big_files: Path
) -> None:
    hub = spawn_hub(broker_port=broker_port)
    sender = spawn_spoke(hub, "jl.gov")
    recipient = spawn_spoke(hub, "jl.cc", stream_dir=big_files / "inbox")
    sealed, ciphertext = await seal_zeros(sender, "jl.cc", big_files, "doc", DOC)
    msg_id = sealed.header.msg_id
    await recipient.connect()
    await sender.connect()

    await sender.send_file(sealed, ciphertext, pause_at=HALF)
    outbound = sender.outbox[msg_id]
    part = spool(hub, msg_id, "part")
    await sender.wait_for(lambda: sender.pump_paused(msg_id), WITHIN)
    assert await eventually(lambda: file_size(part) == HALF), file_size(part)
    assert sender.resumes == [(msg_id, 0)]
    assert outbound.sent_offsets == list(range(0, HALF, CHUNK))

    await sender.disconnect()  # stops half way and goes away
    await sender.connect()
    sent_before = len(outbound.sent_offsets)
    await sender.continue_file(msg_id)  # the head again, with nothing paused any more
    await sender.wait_for(lambda: len(sender.resumes) == 2)
    assert sender.resumes[1] == (msg_id, HALF), "the hub names the offset it holds"

    await sender.wait_for(lambda: sender.has(msg_id, ReceiptStatus.ACCEPTED), WITHIN)
    await delivered(sender, recipient, msg_id, WITHIN)
    assert outbound.sent_offsets[sent_before:] == list(range(HALF, sealed.body.size, CHUNK)), (
        "after reconnecting, the sender sent only what the hub did not hold"
    )
    assert sha256_of_file(spool(hub, msg_id, "body")) == sha256_of_file(ciphertext)
    opened = recipient.received[msg_id]
    assert (opened.sizes, [d.hex() for d in opened.digests]) == ([DOC], [sha256_of_zeros(DOC)])


async def test_transfer_broken_by_kill9_resumes_from_the_spool_after_restart(
    broker_port: int | None, spawn_hub: HubSpawner, spawn_spoke: SpokeSpawner, big_files: Path
) -> None:
    hub = spawn_hub(broker_port=broker_port)
    sender = spawn_spoke(hub, "jl.gov")
    recipient = spawn_spoke(hub, "jl.cc", stream_dir=big_files / "inbox")
    for spoke in (sender, recipient):
        spoke.start_reliable(resend_every=5.0)  # reconnect by itself if the broker dies
    sealed, ciphertext = await seal_zeros(sender, "jl.cc", big_files, "doc", DOC)
    msg_id = sealed.header.msg_id
    await recipient.connect()
    await sender.connect()

    await sender.send_file(sealed, ciphertext, pause_at=HALF)
    outbound = sender.outbox[msg_id]
    part = spool(hub, msg_id, "part")
    await sender.wait_for(lambda: sender.pump_paused(msg_id), WITHIN)
    assert await eventually(lambda: file_size(part) == HALF), file_size(part)

    hub.kill9()
    assert file_size(part) == HALF, "the spool keeps what arrived"
    assert spool(hub, msg_id, "frame").exists()
    sent_before = len(outbound.sent_offsets)
    connections = sender.connections
    await asyncio.to_thread(hub.start)
    if broker_port is None:  # the broker died with hubd: wait for the spoke to come back
        assert await eventually(lambda: sender.connections > connections)
    await sender.continue_file(msg_id)

    await sender.wait_for(lambda: (msg_id, HALF) in sender.resumes, WITHIN)
    assert [o for m, o in sender.resumes if m == msg_id][1:] == [HALF]
    await sender.wait_for(lambda: sender.has(msg_id, ReceiptStatus.ACCEPTED), WITHIN)
    await delivered(sender, recipient, msg_id, WITHIN)
    assert outbound.sent_offsets[sent_before:] == list(range(HALF, sealed.body.size, CHUNK))
    resumed = [e for e in hub.log_events() if e.get("event") == "spool.resumed"]
    assert [(e["msg_id"], e["received"]) for e in resumed] == [(msg_id_text(msg_id), HALF)]
    assert not part.exists()
    assert sha256_of_file(spool(hub, msg_id, "body")) == sha256_of_file(ciphertext)
    opened = recipient.received[msg_id]
    assert (opened.sizes, [d.hex() for d in opened.digests]) == ([DOC], [sha256_of_zeros(DOC)])


# ------------------------------------------------------------------ interleaving


BIG = 64 * MiB
FLASH_DOC = 1 * MiB


def positions(arrivals: list[Arrival], kind: str, msg_id: bytes) -> list[int]:
    return [i for i, a in enumerate(arrivals) if a.kind == kind and a.msg_id == msg_id]


@pytest.mark.parametrize("window", [1, 256])
async def test_flash_document_overtakes_a_big_routine_one_being_delivered(
    window: int,
    mosquitto: Mosquitto,
    spawn_hub: HubSpawner,
    spawn_spoke: SpokeSpawner,
    big_files: Path,
) -> None:
    """window 1: every publisher is busy, so precedence alone decides what goes next;
    window 256 (the default): chunks of both documents are in flight side by side."""
    hub = spawn_hub(
        broker_port=mosquitto.port, extra_toml=f"[delivery]\npublish_window = {window}\n"
    )
    routine_sender, flash_sender = spawn_spoke(hub, "jl.cc"), spawn_spoke(hub, "jl.jl")
    recipient = spawn_spoke(hub, "jl.gov", stream_dir=big_files / "inbox")
    big, big_file = await seal_zeros(routine_sender, "jl.gov", big_files, "big", BIG)
    flash, flash_file = await seal_zeros(
        flash_sender, "jl.gov", big_files, "flash", FLASH_DOC, precedence=Precedence.FLASH
    )
    big_id, flash_id = big.header.msg_id, flash.header.msg_id
    for spoke in (recipient, routine_sender, flash_sender):
        await spoke.connect()

    await routine_sender.send_file(big, big_file)
    # The big document is on its way to the recipient, chunk by chunk ...
    await recipient.wait_for(lambda: positions(recipient.arrivals, "chunk", big_id), WITHIN)
    # ... when the FLASH one is sent to the same recipient.
    await flash_sender.send_file(flash, flash_file)
    await recipient.wait_for(lambda: {big_id, flash_id} <= recipient.received.keys(), WITHIN)

    arrivals = recipient.arrivals
    flash_head = positions(arrivals, "head", flash_id)[0]
    flash_done = positions(arrivals, "done", flash_id)[0]
    big_chunks = positions(arrivals, "chunk", big_id)
    assert list(recipient.received) == [flash_id, big_id], "FLASH completed first"
    assert any(i < flash_head for i in big_chunks), "the big one was under way before"
    assert any(i > flash_done for i in big_chunks), "the big one went on afterwards"
    if window == 1:
        during = [i for i in big_chunks if flash_head < i < flash_done]
        assert during == [], (
            f"{len(during)} ROUTINE chunks were published between the FLASH head and its "
            "last chunk, with one publisher and the FLASH document ready"
        )
    for opened, size in (
        (recipient.received[flash_id], FLASH_DOC),
        (recipient.received[big_id], BIG),
    ):
        assert (opened.sizes, [d.hex() for d in opened.digests]) == (
            [size],
            [sha256_of_zeros(size)],
        )
