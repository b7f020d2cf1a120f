"""hubd as systemd runs it (ARCHITECTURE section 7): a real process, real signals, a real
NOTIFY_SOCKET.

SIGTERM drains in-flight work and exits 0 within ``[lifecycle] drain_timeout``, and every
document the sender holds ACCEPTED for is delivered once the hub is back; STOPPING=1 and
WATCHDOG=1 reach the notify socket; SIGHUP reloads the signed directory and republishes
it; an embedded broker port already taken is refused with the options that fix it.
"""

from __future__ import annotations

import asyncio
import hashlib
import signal
import subprocess
import sys
from pathlib import Path

from runtime.clock import now_ms
from schemas import topics
from schemas.directory import Directory, sign_directory, verify_directory
from schemas.errors import PeerError
from schemas.receipts import ReceiptStatus
from tests.hub.conftest import (
    FAST_RETRIES,
    HubFactory,
    Observer,
    RecordingSpoke,
    SpokeMaker,
    wait_for_log,
)
from tests.hubproc import HubProcess, Mosquitto, live_directory
from tests.world import World

DRAIN_S = 5.0
START_MARGIN_S = 20.0  # a process that must import, open its store and close its links
LIFECYCLE = FAST_RETRIES + f"\n[lifecycle]\ndrain_timeout = {DRAIN_S}\n"


def read_notifications(hub: HubProcess) -> list[str]:
    """Every datagram hubd sent: those already read, then whatever is still queued."""
    assert hub.notify is not None
    datagrams = list(hub.notifications)
    while True:
        try:
            datagrams.append(hub.notify.recv(4096).decode())
        except TimeoutError:
            return datagrams


async def sigterm_and_wait(hub: HubProcess) -> tuple[int, list[str]]:
    """SIGTERM; the exit code (within the drain bound) and every notification sent."""
    assert hub.process is not None
    hub.process.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(hub.process.wait, DRAIN_S + START_MARGIN_S)
    notes = read_notifications(hub)
    hub._close_notify()  # as HubProcess.terminate does; start() opens a fresh socket
    return code, notes


async def reconnect(*spokes: RecordingSpoke) -> None:
    """After a restart: the embedded broker went down with the hub, Mosquitto did not."""
    for spoke in spokes:
        await spoke.disconnect()
        await spoke.connect()


async def test_sigterm_with_traffic_in_flight_exits_0_and_everything_accepted_is_delivered_later(
    hub_factory: HubFactory, spokes_at: SpokeMaker
) -> None:
    hub = hub_factory(extra_toml=LIFECYCLE)
    gov, cc, jl = (spokes_at(hub, org) for org in ("jl.gov", "jl.cc", "jl.jl"))
    await jl.connect()  # online: its deliveries are being published at the stop
    await gov.connect()  # jl.cc stays away: its deliveries wait in the store
    recipient = {}
    sealed = []
    for n in range(400):
        to = "jl.cc" if n % 2 else "jl.jl"
        s, body = gov.seal([to], contents=[f"document {n}".encode()])
        recipient[s.header.msg_id] = to
        sealed.append((s, body))

    async def pump() -> None:
        for start in range(0, len(sealed), 50):
            await asyncio.gather(
                *(gov.publish_envelope(s, b) for s, b in sealed[start : start + 50]),
                return_exceptions=True,  # the embedded broker goes down with the hub
            )

    pumping = asyncio.create_task(pump())
    await gov.wait_for(lambda: sum(gov.has(m, ReceiptStatus.ACCEPTED) for m in recipient) >= 50)
    code, notes = await sigterm_and_wait(hub)
    await pumping

    assert code == 0
    assert any("STOPPING=1" in n.splitlines() for n in notes)
    events = [e.get("event") for e in hub.log_events()]
    assert "hub.stopped" in events
    assert "hub.drain_timeout" not in events
    accepted_at_stop = {m for m in recipient if gov.has(m, ReceiptStatus.ACCEPTED)}

    hub.start()
    await reconnect(gov, jl)
    await cc.connect()
    accepted = {m for m in recipient if gov.has(m, ReceiptStatus.ACCEPTED)}
    assert accepted >= accepted_at_stop
    await gov.wait_for(
        lambda: all(gov.has(m, ReceiptStatus.DELIVERED, recipient[m]) for m in accepted),
        within=60,
    )
    for msg_id in accepted:
        spoke = cc if recipient[msg_id] == "jl.cc" else jl
        assert msg_id in spoke.received


async def test_sigterm_notifies_stopping_and_no_watchdog_unless_systemd_asks(
    hub_factory: HubFactory,
) -> None:
    hub = hub_factory(extra_toml=LIFECYCLE)

    code, notes = await sigterm_and_wait(hub)

    assert code == 0
    lines = [line for n in notes for line in n.splitlines()]
    assert lines[0] == "READY=1"
    assert "STOPPING=1" in lines
    assert lines.index("STOPPING=1") > 0
    assert "WATCHDOG=1" not in lines


async def test_watchdog_pings_arrive_when_systemd_sets_watchdog_usec(
    hub_factory: HubFactory,
) -> None:
    hub = hub_factory(extra_toml=LIFECYCLE, env={"WATCHDOG_USEC": "200000"})
    pings = sum(n.splitlines().count("WATCHDOG=1") for n in hub.notifications)
    while pings < 3:  # periodic: more than the one at start
        note = await asyncio.to_thread(hub.wait_notification, "WATCHDOG=1", 20.0)
        pings += note.splitlines().count("WATCHDOG=1")

    code, _ = await sigterm_and_wait(hub)
    assert code == 0


async def test_watchdog_pings_stay_off_when_the_configuration_disables_them(
    hub_factory: HubFactory,
) -> None:
    hub = hub_factory(extra_toml=LIFECYCLE + "watchdog = false\n", env={"WATCHDOG_USEC": "200000"})

    code, notes = await sigterm_and_wait(hub)

    assert code == 0
    assert "READY=1" in [line for n in notes for line in n.splitlines()]
    assert not any("WATCHDOG=1" in n for n in notes)


def directory_versions(observer: Observer, hub_key: bytes) -> dict[str, set[int]]:
    """channel -> versions of the verified directory frames seen on its directory topic."""
    seen: dict[str, set[int]] = {}
    for topic, payload, _ in observer.messages:
        try:
            verified = verify_directory(payload, hub_key, now=now_ms())
        except PeerError:
            continue
        seen.setdefault(topic.split("/")[2], set()).add(verified.version)
    return seen


def replace_directory(hub: HubProcess, frame: bytes) -> None:
    path = hub.folder / "keys" / "directory.bin"
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(frame)
    tmp.replace(path)  # the hub never reads half a file


async def test_sighup_reloads_a_directory_that_revokes_a_key_and_republishes_it(
    hub: HubProcess, spokes_at: SpokeMaker, world: World, live_dir: Directory
) -> None:
    gov, cc = spokes_at(hub, "jl.gov"), spokes_at(hub, "jl.cc")
    await gov.connect()
    await cc.connect()
    before = await cc.send(["jl.gov"], contents=[b"before the reload"])
    await cc.wait_for(lambda: cc.has(before.header.msg_id, ReceiptStatus.ACCEPTED))

    kid = world.keys["jl.cc"].signing.kid
    replace_directory(
        hub, sign_directory(live_directory(world, version=2, revoked=[kid]), world.hub_key)
    )
    channels = [c.id for c in live_dir.channels]
    async with Observer(hub.port, *(topics.directory(c) for c in channels)) as watch:
        hub.hup()
        await watch.wait_for(
            lambda: all(
                2 in directory_versions(watch, world.hub_key.public).get(c, set()) for c in channels
            )
        )
    after, body = cc.seal(["jl.gov"], contents=[b"after the reload"])
    await cc.publish_envelope(after, body)
    subject = hashlib.sha256(after.frame).digest()
    await cc.wait_for(lambda: any(e.subject == subject for e in cc.receipts[None]))

    (entry,) = [e for e in cc.receipts[None] if e.subject == subject]
    assert entry.status is ReceiptStatus.REJECTED
    assert entry.reason == "sig.key_revoked"
    assert entry.detail is not None
    assert kid in entry.detail
    assert after.header.msg_id not in gov.received
    reloaded = await wait_for_log(hub, lambda e: e.get("event") == "directory.reloaded")
    assert reloaded["version"] == 2


async def test_sighup_with_a_broken_directory_keeps_serving_the_old_one(
    hub: HubProcess, spokes_at: SpokeMaker
) -> None:
    gov, cc = spokes_at(hub, "jl.gov"), spokes_at(hub, "jl.cc")
    await gov.connect()
    await cc.connect()
    replace_directory(hub, b"\x81\xa1v\x01 not a signed directory")

    hub.hup()
    failed = await wait_for_log(hub, lambda e: e.get("event") == "directory.reload_failed")

    assert failed["level"] == "error"
    assert "hubctl directory build" in str(failed["error"])
    assert str(failed["error"]).startswith("新目录文件被拒绝，继续使用 v1 / ")
    assert failed["reason"] == "decode.trailing_bytes"
    assert "exception" not in failed  # an expected refusal: its reason, no traceback
    sealed = await gov.send(["jl.cc"], contents=[b"still served"])
    await gov.wait_for(lambda: gov.has(sealed.header.msg_id, ReceiptStatus.DELIVERED, "jl.cc"))


def test_a_taken_embedded_broker_port_is_refused_naming_the_option_for_an_existing_broker(
    mosquitto: Mosquitto, world: World, live_dir: Directory, tmp_path: Path
) -> None:
    hub = HubProcess(tmp_path / "hub", world.hub_key, live_dir, embedded_port=mosquitto.port)
    config = hub.write()

    done = subprocess.run(  # noqa: S603 - our own daemon
        [sys.executable, "-m", "hubd", "run", "--config", str(config)],
        capture_output=True,
        timeout=60,
        check=False,
    )

    output = (done.stdout + done.stderr).decode()
    assert done.returncode == 2, output
    assert f"127.0.0.1:{mosquitto.port} is already in use" in output
    assert f"端口 127.0.0.1:{mosquitto.port} 已被占用" in output
    assert "[broker] listen" in output
    assert "[broker] enabled = false" in output
    assert "[channels.govnet] url" in output
    assert f"mqtt://127.0.0.1:{mosquitto.port}" in output
