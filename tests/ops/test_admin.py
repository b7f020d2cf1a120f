"""The admin socket against real hubd processes: presence in hubctl status, redelivery of
dead letters (through the running hub, and into the store of a stopped one), directory
publish, the socket's permissions and its claim at start (issue 6, section 1).

Dead letters are made the quick way (one attempt, a retry timer of ~0.2 s finds the limit
reached); the redelivery then happens on a hub restarted on the same folder with a retry
timer that cannot fire within a test, so "received exactly once" is a claim about the
redelivery, not a race with the retry timer.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from runtime.clock import now_ms
from schemas.directory import Directory, sign_directory
from schemas.ids import msg_id_text, new_msg_id
from schemas.receipts import ReceiptStatus
from tests.hub.conftest import HubSpawner, SpokeSpawner, wait_for_log
from tests.hubproc import HubProcess, live_directory
from tests.ops.test_hubctl import (
    GIVES_UP_AT_ONCE,
    NO_RETRIES,
    WITHIN,
    accepted,
    as_json,
    hubctl,
    until,
)
from tests.spokesim import SimSpoke
from tests.world import REPO, World

# After a restart: one attempt, and no retry timer fires within a test.
ONE_ATTEMPT = "[delivery]\nretry_initial = 600.0\nretry_max = 600.0\nmax_attempts = 1\n"


def sock_of(hub: HubProcess) -> Path:
    return hub.folder / "state" / "hubd.sock"


async def connected(spawn_spoke: SpokeSpawner, hub: HubProcess, org: str, **kw: Any) -> SimSpoke:
    spoke = spawn_spoke(hub, org, **kw)
    await spoke.connect()
    return spoke


async def govnet_presence(hub: HubProcess, org: str) -> dict[str, Any] | None:
    report = await as_json(hub, "status")
    spoke = {s["org"]: s for s in report["spokes"]}[org]
    value = spoke["channels"]["govnet"]
    return value if report["presence_known"] else None


async def dead_letter(spawn_spoke: SpokeSpawner, hub: HubProcess) -> bytes:
    """A message from jl.gov that jl.cc receives and never confirms: DEAD in the store."""
    deaf = await connected(spawn_spoke, hub, "jl.cc", auto_deliver=False)
    sender = await connected(spawn_spoke, hub, "jl.gov")
    msg_id = await accepted(sender, ["jl.cc"])
    await sender.wait_for(lambda: sender.has(msg_id, ReceiptStatus.DEAD, "jl.cc"), WITHIN)

    async def stored() -> bool:  # the DEAD receipt and the row are separate commits
        return bool((await as_json(hub, "dead"))["total"])

    await until(stored)
    await deaf.disconnect()
    await sender.disconnect()
    return msg_id


async def delivered_in_store(hub: HubProcess, msg_id: bytes) -> None:
    async def done() -> bool:
        trace = await as_json(hub, "trace", msg_id_text(msg_id))
        return [d["state"] for d in trace["deliveries"]] == ["DELIVERED"]

    await until(done)


# ---------------------------------------------------------------------------- presence


async def test_status_json_shows_a_spoke_online_then_offline_through_the_admin_socket(
    spawn_hub: HubSpawner, spawn_spoke: SpokeSpawner
) -> None:
    hub = spawn_hub(extra_toml=NO_RETRIES)
    spoke = await connected(spawn_spoke, hub, "jl.cc")

    async def online() -> bool:
        value = await govnet_presence(hub, "jl.cc")
        return value is not None and value["online"] is True

    await until(online)
    report = await as_json(hub, "status")
    came_online = {s["org"]: s for s in report["spokes"]}["jl.cc"]["channels"]["govnet"]["since"]
    await spoke.disconnect()

    async def offline() -> bool:
        value = await govnet_presence(hub, "jl.cc")
        return value is not None and value["online"] is False and value["since"] is not None

    await until(offline)
    gone = await govnet_presence(hub, "jl.cc")
    text = await hubctl(hub, "status")

    assert report["source"] == "hub and store"
    assert report["hub"] == {
        "socket": str(sock_of(hub)),
        "answered": True,
        "problem": None,
        "brokers": [  # the hub's one connection and the node it is on
            {
                "broker": "embedded",
                "channels": [c.id for c in hub.directory.channels],
                "node": f"mqtt://127.0.0.1:{hub.port}",
            }
        ],
    }
    assert isinstance(came_online, int)
    assert gone is not None
    assert gone["since"] >= came_online
    assert text.exit_code == 0, text.output
    [row] = [line for line in text.stdout.splitlines() if line.startswith("jl.cc ")]
    assert "govnet offline for" in row
    assert "presence unknown" not in text.stdout
    channels = ", ".join(c.id for c in hub.directory.channels)
    assert f"broker     channels {channels}: on mqtt://127.0.0.1:{hub.port}\n" in text.stdout


async def test_status_with_the_hub_stopped_falls_back_to_the_store_and_says_so(
    spawn_hub: HubSpawner, spawn_spoke: SpokeSpawner
) -> None:
    hub = spawn_hub(extra_toml=NO_RETRIES)
    sender = await connected(spawn_spoke, hub, "jl.gov")
    await accepted(sender, ["jl.cc"])
    await sender.disconnect()
    assert hub.terminate() == 0

    report = await as_json(hub, "status")
    text = await hubctl(hub, "status")

    assert not sock_of(hub).exists()  # a clean stop removes it
    assert report["presence_known"] is False
    assert report["source"] == "store"
    assert report["hub"]["answered"] is False
    assert "there is no socket file" in report["hub"]["problem"]
    assert "from the store alone" in report["presence_note"]
    assert report["pending"]["total"] == 1  # the store's answers are all still there
    assert {s["org"]: s for s in report["spokes"]}["jl.cc"]["channels"] == {"govnet": None}
    assert f"did not answer on {sock_of(hub)}" in text.stdout
    assert "everything below is from the store" in text.stdout


# ---------------------------------------------------------------------------- the socket


async def test_the_socket_is_0660_with_the_hubs_group_in_a_0750_folder_it_made(
    spawn_hub: HubSpawner, tmp_path: Path
) -> None:
    path = tmp_path / "run" / "hubd.sock"
    hub = spawn_hub(extra_toml=f'{NO_RETRIES}\n[admin]\nsocket = "{path}"\n')

    info = path.stat()
    folder = path.parent.stat()
    report = await as_json(hub, "status")

    assert stat.S_ISSOCK(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == 0o660
    assert (info.st_uid, info.st_gid) == (os.geteuid(), os.getegid())
    assert stat.S_IMODE(folder.st_mode) == 0o750
    assert stat.S_IMODE((hub.folder / "state").stat().st_mode) == 0o750
    assert report["hub"]["socket"] == str(path)
    assert report["hub"]["answered"] is True


async def test_a_second_hub_on_the_same_socket_path_refuses_to_start_with_a_sentence(
    spawn_hub: HubSpawner, tmp_path: Path
) -> None:
    first = spawn_hub(extra_toml=NO_RETRIES)

    with pytest.raises(RuntimeError, match="hubd exited with 2"):
        spawn_hub(extra_toml=f'{NO_RETRIES}\n[admin]\nsocket = "{sock_of(first)}"\n')
    refusal = (tmp_path / "hubd1" / "hubd.log").read_text()
    report = await as_json(first, "status")

    assert "admin.socket" in refusal
    assert str(sock_of(first)) in refusal
    assert "another hubd is serving on it" in refusal
    assert report["hub"]["answered"] is True  # the first hub's socket is still its own
    assert sock_of(first).exists()


async def test_a_socket_left_by_a_killed_hub_is_replaced_when_it_starts_again(
    spawn_hub: HubSpawner,
) -> None:
    hub = spawn_hub(extra_toml=NO_RETRIES)
    hub.kill9()

    while_down = await as_json(hub, "status")
    hub.start()
    event = await wait_for_log(hub, lambda e: e.get("event") == "admin.stale_socket_removed")
    back = await as_json(hub, "status")

    assert while_down["hub"]["answered"] is False
    assert "nothing accepts on it" in while_down["hub"]["problem"]
    assert event["socket"] == str(sock_of(hub))
    assert back["hub"]["answered"] is True


# ---------------------------------------------------------------------------- redeliver


async def test_a_dead_letter_redelivered_through_the_socket_reaches_the_now_confirming_spoke_once(
    spawn_hub: HubSpawner, spawn_spoke: SpokeSpawner
) -> None:
    hub = spawn_hub(extra_toml=GIVES_UP_AT_ONCE)
    msg_id = await dead_letter(spawn_spoke, hub)
    text_id = msg_id_text(msg_id)
    assert hub.terminate() == 0
    hub.extra_toml = ONE_ATTEMPT
    hub.start()
    recipient = await connected(spawn_spoke, hub, "jl.cc")  # confirms what it receives

    async def online() -> bool:
        value = await govnet_presence(hub, "jl.cc")
        return value is not None and value["online"] is True

    await until(online)
    result = await hubctl(hub, "redeliver", text_id)
    await recipient.wait_for(lambda: recipient.deliveries[msg_id] >= 1, WITHIN)
    await delivered_in_store(hub, msg_id)
    trace = await as_json(hub, "trace", text_id)
    again = await hubctl(hub, "redeliver", text_id)
    audit = await hubctl(hub, "audit", "verify")
    request = await wait_for_log(
        hub, lambda e: e.get("event") == "admin.request" and e.get("op") == "redeliver"
    )

    assert result.exit_code == 0, result.output
    assert "redelivered by the running hub" in result.stdout
    assert f"{text_id}  to jl.cc" in result.stdout
    assert recipient.deliveries[msg_id] == 1  # exactly once
    events = [s["event"] for s in trace["timeline"]]
    after = events[events.index("delivery.redelivered") :]
    assert after == ["delivery.redelivered", "delivery.sent", "receipt.delivered"]
    step = trace["timeline"][events.index("delivery.redelivered")]
    assert step["detail"]["requested_by"]["uid"] == os.getuid()
    assert step["detail"]["requested_by"]["pid"] == os.getpid()  # hubctl ran in this process
    assert step["detail"]["via"] == "admin socket"
    assert step["detail"]["attempts_before"] == 1
    assert trace["deliveries"][0]["attempts"] == 1  # counted from 0 again
    assert (request["uid"], request["pid"], request["redelivered"]) == (os.getuid(), os.getpid(), 1)
    assert again.exit_code == 1, again.output  # confirmed now: the hub does not deliver twice
    assert "every recipient" in again.stdout
    assert audit.exit_code == 0, audit.output


async def test_redeliver_with_the_hub_stopped_writes_the_store_and_the_next_start_delivers(
    spawn_hub: HubSpawner, spawn_spoke: SpokeSpawner
) -> None:
    hub = spawn_hub(extra_toml=GIVES_UP_AT_ONCE)
    msg_id = await dead_letter(spawn_spoke, hub)
    assert hub.terminate() == 0

    result = await hubctl(hub, "redeliver", "--dead", "--to", "jl.cc")
    stored = await as_json(hub, "trace", msg_id_text(msg_id))
    hub.extra_toml = ONE_ATTEMPT
    hub.start()
    starting = [e for e in hub.log_events() if e.get("event") == "hub.starting"][-1]  # 2nd run
    recipient = await connected(spawn_spoke, hub, "jl.cc")
    await recipient.wait_for(lambda: recipient.deliveries[msg_id] >= 1, WITHIN)
    await delivered_in_store(hub, msg_id)

    assert result.exit_code == 0, result.output
    assert "the hub is not running" in result.stdout
    assert "it delivers them when it next starts" in result.stdout
    assert [d["state"] for d in stored["deliveries"]] == ["PENDING"]
    [step] = [s for s in stored["timeline"] if s["event"] == "delivery.redelivered"]
    assert step["detail"]["via"] == "hubctl, hub stopped"
    assert step["detail"]["requested_by"]["uid"] == os.getuid()
    assert starting["reloaded_deliveries"] == 1
    assert recipient.deliveries[msg_id] == 1


async def test_redeliver_refuses_an_expired_delivery_and_an_unknown_message_saying_why(
    spawn_hub: HubSpawner, spawn_spoke: SpokeSpawner
) -> None:
    hub = spawn_hub(extra_toml=NO_RETRIES)
    sender = await connected(spawn_spoke, hub, "jl.gov")  # jl.cc stays offline
    msg_id = await accepted(sender, ["jl.cc"], expires_at=now_ms() + 1500)
    await sender.wait_for(lambda: sender.has(msg_id, ReceiptStatus.EXPIRED, "jl.cc"), WITHIN)

    async def expired() -> bool:
        return bool((await as_json(hub, "dead"))["total"])

    await until(expired)
    refused = await hubctl(hub, "redeliver", msg_id_text(msg_id), "--json")
    unknown = await hubctl(hub, "redeliver", msg_id_text(new_msg_id()))
    bad_org = await hubctl(hub, "redeliver", "--dead", "--to", "JL.CC")
    both = await hubctl(hub, "redeliver", msg_id_text(msg_id), "--dead")
    nothing = await hubctl(hub, "redeliver", "--dead")

    assert refused.exit_code == 1, refused.output
    answer = json.loads(refused.stdout)
    assert answer["redelivered"] == []
    [why] = answer["refused"]
    assert why["code"] == "redeliver.expired"
    assert "the sender must send it again" in why["detail"]
    assert unknown.exit_code == 1, unknown.output
    assert "holds no message" in unknown.stdout
    assert bad_org.exit_code == 2
    assert "'JL.CC'" in bad_org.stderr
    assert both.exit_code == 2
    assert nothing.exit_code == 0, nothing.output
    assert "nothing to redeliver" in nothing.stdout
    assert [d["state"] for d in (await as_json(hub, "dead"))["deliveries"]] == ["EXPIRED"]


# ---------------------------------------------------------------------------- directory


def _guide_refusal() -> str:
    """The refused publish as docs/operations.md shows it, without its elided reason."""
    guide = (REPO / "docs" / "operations.md").read_text(encoding="utf-8")
    [line] = [x for x in guide.splitlines() if x.startswith("hubctl directory publish: ")]
    assert line.endswith(": ...")
    return line.removesuffix("...")


async def test_directory_publish_answers_the_version_served_or_why_the_new_file_was_refused(
    spawn_hub: HubSpawner, world: World
) -> None:
    hub = spawn_hub(extra_toml=NO_RETRIES)
    served = hub.folder / "keys" / "directory.bin"
    served.write_bytes(sign_directory(live_directory(world, version=2), world.hub_key))

    published = await hubctl(hub, "directory", "publish", "--json")
    served.write_bytes(b"not a directory")
    refused = await hubctl(hub, "directory", "publish")
    hub_log = await wait_for_log(
        hub,
        lambda e: (
            e.get("event") == "admin.request"
            and e.get("op") == "directory.publish"
            and e.get("outcome") == "refused"
        ),
    )
    assert hub.terminate() == 0
    stopped = await hubctl(hub, "directory", "publish")

    assert published.exit_code == 0, published.output
    answer = json.loads(published.stdout)
    assert (answer["published"], answer["version"], answer["previous"]) == (True, 2, 1)
    assert refused.exit_code == 1, refused.output
    assert "keeps serving v2" in refused.stderr
    # the line docs/operations.md shows, up to its "..." (the guide's hub serves v8)
    assert refused.stderr.startswith(_guide_refusal().replace("v8", "v2")), refused.stderr
    assert hub_log["uid"] == os.getuid()
    assert stopped.exit_code == 2
    assert "reads the directory file when it starts" in stopped.stderr
    ledger = _ledger(hub)
    published_entries = [json.loads(d) for e, d in ledger if e == "directory.published"]
    assert [(p["version"], p["previous"]) for p in published_entries] == [(2, 1)]
    assert published_entries[0]["requested_by"]["uid"] == os.getuid()


def _ledger(hub: HubProcess) -> list[tuple[str, str]]:
    import sqlite3  # noqa: PLC0415

    db = hub.folder / "state" / "hub.db"
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as raw:
        return list(raw.execute("SELECT event, detail FROM audit ORDER BY seq"))


async def test_a_second_hub_on_the_same_state_folder_refuses_after_waiting_for_the_lock(
    spawn_hub: HubSpawner, world: World, live_dir: Directory
) -> None:
    first = spawn_hub(extra_toml=NO_RETRIES)
    second = HubProcess(first.folder, world.hub_key, live_dir, extra_toml=NO_RETRIES)

    with pytest.raises(RuntimeError, match="hubd exited with 2"):
        second.start(timeout=40.0)
    report = await as_json(first, "status")

    assert "hub.state_dir" in (first.folder / "hubd.log").read_text()  # both log there
    assert "is locked by another process" in (first.folder / "hubd.log").read_text()
    assert report["hub"]["answered"] is True  # the first hub and its socket are untouched
