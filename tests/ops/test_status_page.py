"""The status page over HTTP from a real hubd, with simulated spokes (issue 6, section 5).

``/status.json`` is read as the page reads it; each test shows a value change as spokes
come and go and documents wait, die or expire. The page's own files are checked for the
headers that keep a browser to them alone.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import structlog

from hubd.config import HubConfig, load_config
from hubd.web.flow import FlowHistory
from hubd.web.server import Request
from hubd.web.statuspage import PAGE_FILES, StatusPage, browser_host_allowed
from runtime.clock import now_ms
from runtime.ports import free_port
from runtime.tasks import cancel_and_wait
from schemas.directory import Directory
from schemas.errors import ConfigError
from schemas.ids import msg_id_text
from schemas.labels import Precedence
from schemas.receipts import ReceiptStatus
from tests.hub.conftest import RecordingSpoke, SpokeSpawner
from tests.hubproc import HubProcess
from tests.national import PageHub
from tests.ops.test_metrics import FAST_DEATH, WITHIN, Reply, request, until
from tests.world import REPO, World

CSP = "default-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
STATIC = REPO / "hubd" / "web" / "static"
T = TypeVar("T")


async def get(port: int, path: str, method: str = "GET") -> Reply:
    """A request addressed as a browser on the hub (or at a tunnel's end) addresses it."""
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n"
    return await request(port, head.encode())


async def status(hub: HubProcess) -> dict[str, Any]:
    """The summary, and under "rows" every organisation's row as the open tree reads them
    (a level at a time, two to a page so that paging is exercised too), all from the same
    build of the hub's facts (the same "at"), so that they agree."""
    while True:  # the hub builds at most once a second: a walk that crosses one is redone
        found = await _status(hub)
        if found is not None:
            return found


async def _status(hub: HubProcess) -> dict[str, Any] | None:
    assert hub.metrics_port is not None
    port = hub.metrics_port
    reply = await get(port, "/status.json")
    assert reply.status == 200, reply.body
    assert reply.headers["content-type"] == "application/json"
    summary = reply.json()
    rows: dict[str, dict[str, Any]] = {}
    levels: list[str] = [""]
    while levels:
        under = levels.pop()
        offset: int | None = 0
        while offset is not None:
            query = f"under={under}&" if under else ""
            page = await get(port, f"/status/orgs.json?{query}offset={offset}&limit=2")
            assert page.status == 200, page.body
            found = page.json()
            if found["at"] != summary["at"]:
                return None
            for row in found["orgs"]:  # type: ignore[attr-defined]
                rows[row["id"]] = row
                levels += [row["id"]] if row["children"] else []
            offset = found["next_offset"]  # type: ignore[assignment]
    return {**summary, "rows": rows}


def org(snapshot: dict[str, Any], org_id: str) -> dict[str, Any]:
    assert org_id in snapshot["rows"], f"{org_id} is not in the tree"
    return dict(snapshot["rows"][org_id])


def channel_state(snapshot: dict[str, Any], org_id: str, channel: str = "govnet") -> str:
    found = next(c for c in org(snapshot, org_id)["channels"] if c["id"] == channel)
    return str(found["state"])


@pytest.fixture
def hub(world: World, live_dir: Directory, tmp_path: Path) -> Iterator[HubProcess]:
    process = HubProcess(tmp_path / "hub", world.hub_key, live_dir).start()
    yield process
    process.stop()


# ---------------------------------------------------------------------------- presence


async def test_a_spoke_shows_online_then_offline_after_it_disconnects(
    hub: HubProcess, spawn_spoke: SpokeSpawner
) -> None:
    before = await status(hub)
    cc = spawn_spoke(hub, "jl.cc")
    await cc.connect()
    online = await until(
        lambda: status(hub), lambda s: channel_state(s, "jl.cc") == "online", "jl.cc online"
    )
    await cc.disconnect()  # a clean stop publishes its retained offline presence
    offline = await until(
        lambda: status(hub), lambda s: channel_state(s, "jl.cc") == "offline", "jl.cc offline"
    )

    assert channel_state(before, "jl.cc") == "unseen"
    assert org(online, "jl.cc")["state"] == "online"
    cc_online = org(online, "jl.cc")["channels"][0]
    assert cc_online["ceiling"] == {"name": "INTERNAL", "zh": "内部"}
    assert cc_online["since"] <= online["at"]
    assert online["spokes"]["online"] == 1
    assert org(offline, "jl.cc")["state"] == "offline"
    assert org(offline, "jl.cc")["channels"][0]["since"] >= cc_online["since"]
    assert offline["spokes"]["online"] == 0
    assert offline["spokes"]["offline"] == 1


async def test_a_spoke_that_crashes_shows_offline_through_its_will(
    hub: HubProcess, world: World, live_dir: Directory
) -> None:
    cc = RecordingSpoke(
        "jl.cc",
        world.keys["jl.cc"].signing,
        world.keys["jl.cc"].encryption,
        live_dir,
        "127.0.0.1",
        hub.port,
    )
    await cc.connect()
    try:
        await until(
            lambda: status(hub), lambda s: channel_state(s, "jl.cc") == "online", "jl.cc online"
        )
        await cc.crash()  # no DISCONNECT: the broker publishes the will
        crashed = await until(
            lambda: status(hub),
            lambda s: channel_state(s, "jl.cc") == "offline",
            "jl.cc offline by its will",
        )
    finally:
        await cc.disconnect()

    assert crashed["spokes"]["offline"] == 1


# ---------------------------------------------------------------------------- queues, flow


async def test_deliveries_to_an_offline_spoke_show_as_its_queue_until_it_comes_back(
    hub: HubProcess, spawn_spoke: SpokeSpawner
) -> None:
    gov = spawn_spoke(hub, "jl.gov")
    await gov.connect()
    sent = [
        await gov.send(["jl.cc"], precedence=Precedence.ROUTINE),
        await gov.send(["jl.cc"], precedence=Precedence.FLASH),
        await gov.send(["jl.cc"], precedence=Precedence.ROUTINE),
    ]
    for sealed in sent:
        msg_id = sealed.header.msg_id
        await gov.wait_for(lambda m=msg_id: gov.has(m, ReceiptStatus.ACCEPTED), WITHIN)
    waiting = await until(
        lambda: status(hub), lambda s: s["pending"]["total"] == 3, "three deliveries pending"
    )

    cc = spawn_spoke(hub, "jl.cc")
    await cc.connect()
    for sealed in sent:
        msg_id = sealed.header.msg_id
        await gov.wait_for(lambda m=msg_id: gov.has(m, ReceiptStatus.DELIVERED, "jl.cc"), WITHIN)
    drained = await until(
        lambda: status(hub),
        lambda s: s["pending"]["total"] == 0 and s["flow"]["totals"]["delivered"] == 3,
        "the queue drained and three deliveries counted",
    )

    queue = org(waiting, "jl.cc")["queue"]
    assert queue["pending"] == 3
    assert queue["most_urgent"] == {"name": "FLASH", "zh": "特提"}
    assert queue["oldest_age_ms"] >= 0
    assert org(waiting, "jl.gov")["queue"]["pending"] == 0
    assert waiting["pending"]["oldest"]["msg_id"] == msg_id_text(sent[0].header.msg_id)
    assert waiting["pending"]["oldest"]["recipient"] == "jl.cc"
    assert waiting["flow"]["totals"]["accepted"] == 3
    assert org(drained, "jl.cc")["queue"]["pending"] == 0
    assert drained["flow"]["totals"]["accepted"] == 3
    assert drained["flow"]["totals"]["rejected"] == 0
    assert drained["flow"]["step_s"] == 10


async def test_dead_and_expired_deliveries_are_listed_with_their_recipients(
    world: World, live_dir: Directory, tmp_path: Path, spawn_spoke: SpokeSpawner
) -> None:
    hub = HubProcess(tmp_path / "hub", world.hub_key, live_dir, extra_toml=FAST_DEATH).start()
    try:
        gov, cc = spawn_spoke(hub, "jl.gov"), spawn_spoke(hub, "jl.cc", auto_deliver=False)
        await cc.connect()  # receives, never confirms: DEAD after max_attempts (3)
        await gov.connect()
        clean = await status(hub)
        dead = (await gov.send(["jl.cc"])).header.msg_id
        expired = (await gov.send(["jl.jl"], expires_at=now_ms() + 2_000)).header.msg_id
        await gov.wait_for(lambda: gov.has(dead, ReceiptStatus.DEAD, "jl.cc"), WITHIN)
        await gov.wait_for(lambda: gov.has(expired, ReceiptStatus.EXPIRED, "jl.jl"), WITHIN)
        after = await until(
            lambda: status(hub), lambda s: s["dead"]["total"] == 2, "two dead letters"
        )
    finally:
        hub.stop()

    assert clean["dead"] == {"total": 0, "dead": 0, "expired": 0, "recent": [], "problem": None}
    assert (after["dead"]["dead"], after["dead"]["expired"]) == (1, 1)
    recent = {d["msg_id"]: d for d in after["dead"]["recent"]}
    assert recent[msg_id_text(dead)]["recipient"] == "jl.cc"
    assert recent[msg_id_text(dead)]["state"] == "DEAD"
    assert recent[msg_id_text(dead)]["attempts"] == 3
    assert recent[msg_id_text(expired)]["recipient"] == "jl.jl"
    assert recent[msg_id_text(expired)]["state"] == "EXPIRED"
    assert after["pending"]["total"] == 0


async def test_the_snapshot_carries_readiness_and_the_directory(
    hub: HubProcess, live_dir: Directory
) -> None:
    assert hub.metrics_port is not None
    health = (await get(hub.metrics_port, "/healthz")).json()
    snapshot = await status(hub)

    assert snapshot["ready"] is True
    assert snapshot["readiness"] == health
    assert snapshot["hub"]["id"] == live_dir.hub_id
    assert snapshot["directory"]["version"] == live_dir.version
    assert snapshot["directory"]["expires_at"] == live_dir.expires_at
    assert snapshot["directory"]["expired"] is False
    assert list(snapshot["rows"])[:3] == ["cn.gov", "jl.congress", "jl.cc.congress"]
    assert sorted(snapshot["rows"]) == sorted(o.id for o in live_dir.orgs)
    assert {c["id"] for c in snapshot["channels"]} == {c.id for c in live_dir.channels}


# ---------------------------------------------------------------------------- HTTP


async def test_a_summary_unchanged_but_for_the_time_is_a_304_without_a_body(
    hub: HubProcess, spawn_spoke: SpokeSpawner
) -> None:
    assert hub.metrics_port is not None
    port = hub.metrics_port

    async def asking(tag: str) -> Reply:
        head = (
            f"GET /status.json HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nIf-None-Match: {tag}\r\n\r\n"
        )
        return await request(port, head.encode())

    async def unchanged() -> Reply:
        first = await get(port, "/status.json")
        await asyncio.sleep(1.1)  # past the hub's one build per second: the next is anew
        return await asking(first.headers["etag"])

    # Every 10 s the flow chart gains a bucket (a change): a second try falls between two.
    same = await until(unchanged, lambda r: r.status == 304, "a 304 while nothing changed")
    tag = same.headers["etag"]
    cc = spawn_spoke(hub, "jl.cc")
    await cc.connect()
    changed = await until(lambda: asking(tag), lambda r: r.status == 200, "a changed summary")

    assert tag.startswith('W/"')
    assert same.status == 304
    assert same.body == b""
    assert same.headers["etag"] == tag
    assert "content-length" not in same.headers
    assert_strict(same)
    assert changed.headers["etag"] != tag
    assert json.loads(changed.body)["spokes"]["online"] == 1


@pytest.mark.parametrize(("path", "file"), [(p, f) for p, (f, _) in PAGE_FILES.items()])
async def test_the_page_and_its_files_are_served_with_strict_headers(
    hub: HubProcess, path: str, file: str
) -> None:
    assert hub.metrics_port is not None
    reply = await get(hub.metrics_port, path)

    assert reply.status == 200
    assert reply.body == (STATIC / file).read_bytes()
    assert reply.headers["content-type"] == PAGE_FILES[path][1]
    assert_strict(reply)


def assert_strict(reply: Reply) -> None:
    assert reply.headers["content-security-policy"] == CSP
    assert reply.headers["x-content-type-options"] == "nosniff"
    assert reply.headers["cache-control"] == "no-store"
    assert reply.headers["referrer-policy"] == "no-referrer"


async def test_head_answers_the_same_head_without_a_body_and_other_methods_are_405(
    hub: HubProcess,
) -> None:
    assert hub.metrics_port is not None
    port = hub.metrics_port
    got = await get(port, "/")
    head = await get(port, "/", method="HEAD")
    head_data = await get(port, "/status.json", method="HEAD")
    posted = await get(port, "/status.json", method="POST")
    deleted = await get(port, "/", method="DELETE")

    assert head.status == 200
    assert head.body == b""
    assert head.headers["content-length"] == got.headers["content-length"]
    assert head.headers["content-type"] == "text/html; charset=utf-8"
    assert head_data.status == 200
    assert head_data.body == b""
    assert_strict(head)
    for refused in (posted, deleted):
        assert refused.status == 405
        assert refused.headers["allow"] == "GET, HEAD"
        assert b"read-only" in refused.body
        assert_strict(refused)


async def test_the_page_refuses_a_host_name_that_could_be_dns_rebinding(
    hub: HubProcess,
) -> None:
    assert hub.metrics_port is not None
    port = hub.metrics_port

    def asking(host: str, path: str = "/status.json") -> bytes:
        return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()

    rebinding = await request(port, asking(f"attacker.example:{port}"))
    page = await request(port, asking("attacker.example", "/"))
    tree = await request(port, asking("attacker.example", "/status/orgs.json?under=jl.cc"))
    allowed = [
        await request(port, asking(host))
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", "[::1]:9464", "localhost")
    ]
    no_host = await request(port, b"GET /status.json HTTP/1.0\r\n\r\n")
    metrics = await request(port, asking("prometheus.example", "/metrics"))

    assert rebinding.status == 403
    assert b"DNS rebinding" in rebinding.body
    assert b"attacker.example" in rebinding.body
    assert page.status == 403
    assert tree.status == 403
    assert [r.status for r in allowed] == [200, 200, 200, 200]
    assert no_host.status == 200
    assert metrics.status == 200, "scrapers are not browsers: /metrics is unchanged"


async def test_status_page_false_turns_the_page_off_with_a_404_naming_the_switch(
    world: World, live_dir: Directory, tmp_path: Path
) -> None:
    port = free_port()
    hub = HubProcess(
        tmp_path / "hub",
        world.hub_key,
        live_dir,
        metrics_port=None,  # no [metrics] of its own: the one below
        extra_toml=f'[metrics]\nlisten = "127.0.0.1:{port}"\nstatus_page = false\n',
    ).start()
    hub.metrics_port = port
    try:
        assert hub.metrics_port is not None
        page = await get(hub.metrics_port, "/")
        data = await get(hub.metrics_port, "/status.json")
        health = await get(hub.metrics_port, "/healthz")
    finally:
        hub.stop()

    assert page.status == 404
    assert data.status == 404
    assert b"[metrics] status_page = false" in data.body
    assert health.status == 200


# ---------------------------------------------------------------------------- the files


def test_the_page_loads_nothing_from_elsewhere_and_puts_no_data_into_markup() -> None:
    html = (STATIC / "status.html").read_text()
    css = (STATIC / "status.css").read_text()
    js = (STATIC / "status.js").read_text()

    for name, text in (("status.html", html), ("status.css", css), ("status.js", js)):
        urls = re.findall(r"[a-z]+://[^\s\"')]+", text)
        assert urls in ([], ["http://www.w3.org/2000/svg"]), (name, urls)  # a namespace
        assert "@import" not in text, name
        assert "@font-face" not in text, name
    assert re.findall(r"<script[^>]*>", html) == ['<script src="/status.js" defer>']
    assert "style=" not in html, "no inline style: the CSP refuses it"
    assert re.findall(r"\son[a-z]+=", html) == [], "no inline event handlers"
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in js, sink


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        (None, True),  # no browser sends a request without Host
        ("127.0.0.1:9464", True),
        ("127.0.0.1", True),
        ("10.1.2.3:9464", True),  # an address of the hub itself, typed by the operator
        ("localhost:9464", True),
        ("LOCALHOST", True),
        ("[::1]:9464", True),
        ("::1", True),
        ("hub.jl.gov.example:9464", False),
        ("127.0.0.1.nip.io", False),  # a name that resolves to loopback: rebinding
        ("localhost.attacker.example", False),
        ("", False),
    ],
)
def test_only_an_ip_address_or_localhost_may_address_the_page(
    host: str | None, allowed: bool
) -> None:
    assert browser_host_allowed(host) is allowed


# ---------------------------------------------------------------------------- configuration


def test_the_page_is_on_by_default_and_in_the_repository_configuration() -> None:
    assert HubConfig().metrics.status_page is True
    assert load_config(REPO / "config" / "hub.toml").metrics.status_page is True


def test_a_status_page_switch_that_is_not_a_boolean_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "hub.toml"
    path.write_text('[metrics]\nstatus_page = "maybe"\n')

    with pytest.raises(ConfigError, match=r"metrics\.status_page"):
        load_config(path)


# ---------------------------------------------------------------------------- without a server


class FlakyMetrics:
    """HubMetrics' ``delivered``, failing the first ``failures`` reads."""

    def __init__(self, failures: int) -> None:
        self.failures, self.reads = failures, 0

    @property
    def delivered(self) -> int:
        self.reads += 1
        if self.reads <= self.failures + 1 and self.reads > 1:  # the baseline read succeeds
            raise RuntimeError("a fault in a counter")
        return self.reads


async def test_a_fault_while_sampling_the_flow_is_logged_and_sampling_goes_on(
    live_dir: Directory,
) -> None:
    page = StatusPage(PageHub(live_dir, None, metrics=FlakyMetrics(failures=1)), clock=now_ms)
    page.flow = FlowHistory(step_ms=20)
    with structlog.testing.capture_logs() as logs:
        sampler = asyncio.create_task(page.sample_flow())
        try:
            await until(_now(lambda: len(page.flow.buckets())), lambda n: n >= 2, "two buckets")
        finally:
            await cancel_and_wait(sampler)

    assert [e["event"] for e in logs if e["log_level"] == "error"] == ["status.flow_failed"]


def _now(value: Callable[[], T]) -> Callable[[], Awaitable[T]]:
    async def probe() -> T:
        return value()

    return probe


async def test_a_hub_still_starting_answers_not_ready_and_dead_letters_unknown(
    live_dir: Directory,
) -> None:
    page = StatusPage(PageHub(live_dir, None, metrics=FlakyMetrics(failures=0)), clock=now_ms)

    first, tag = await page.snapshot_json()
    again, _ = await page.snapshot_json()
    snapshot = json.loads(first)
    top = await page.answer(Request("GET", "/status/orgs.json", None))

    assert again is first, "one build serves every request within REFRESH_MS"
    assert tag.startswith('W/"')
    assert snapshot["ready"] is False
    assert "the store is not open yet (the hub is starting)" in snapshot["readiness"]["not_ready"]
    assert snapshot["dead"]["total"] is None
    assert "not open" in snapshot["dead"]["problem"]
    assert len(json.loads(top.body)["orgs"]) == 3  # the State Council and the two congresses
    assert snapshot["pending"]["total"] == 0
