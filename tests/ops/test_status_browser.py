"""The status page in Debian's headless Chromium against a real hubd (issue 6, section 5).

The page loads and draws the summary; the organisation tree is drawn only once it is
opened, a level at a time (every ▸ is clicked), with a spoke online; the spoke
disconnects and, with no reload, the page shows it offline in the tree and in the
channels' counts (the DOM is polled under a generous deadline); documents then wait for
it and the page shows its queue and an alert; the hub is killed and the page says it is
no longer updating. A screenshot of the
whole page is kept in ``test-artefacts/status-page.png`` at the repository root (and
``status-page-dark.png``, as a browser that prefers a dark scheme shows it). Outside
CI the test skips, naming the reason, when chromium is missing; .ci/run installs it and
sets GOVX_REQUIRE_CHROMIUM=1, which turns that skip into a failure.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from hubd.web.statustree import org_tree
from runtime.clock import now_ms
from schemas.directory import Directory, OrgEntry
from schemas.labels import DocType, Precedence
from schemas.receipts import ReceiptStatus
from schemas.terms import Terms
from tests.hub.conftest import SpokeSpawner
from tests.hubproc import HubProcess, live_directory
from tests.national import national_directory
from tests.ops.chromium import Chromium, cjk_font_or_skip
from tests.ops.test_metrics import FAST_DEATH, WITHIN
from tests.spokesim import SimSpoke
from tests.world import REPO, World

ARTEFACT = REPO / "test-artefacts" / "status-page.png"


def row_state(org: str) -> str:
    """A page expression: the state the page shows for ``org`` (its row's data-state)."""
    return f"(document.querySelector('tr[data-org={json.dumps(org)}]')?.dataset.state ?? null)"


# Click the first closed ▸ of the tree (if the page is not busy opening one, the click
# is ignored and the next poll clicks again), and say how many rows the tree has.
OPEN_NEXT = (
    "(() => { const b = document.querySelector('#tree button.toggle[aria-expanded=\"false\"]');"
    " if (b) b.click(); return document.querySelectorAll('tr[data-org]').length; })()"
)


def cell_text(org: str, channel: str) -> str:
    selector = f"tr[data-org={json.dumps(org)}] td[data-channel={json.dumps(channel)}]"
    return f"(document.querySelector({json.dumps(selector)})?.textContent ?? null)"


@pytest.fixture
def hub(world: World, live_dir: Directory, tmp_path: Path) -> Iterator[HubProcess]:
    # Fast retries: the department that never confirms makes a dead letter within seconds.
    process = HubProcess(tmp_path / "hub", world.hub_key, live_dir, extra_toml=FAST_DEATH)
    yield process.start()
    process.stop()


async def test_the_page_shows_a_spoke_going_offline_and_keeps_a_screenshot(
    hub: HubProcess, spawn_spoke: SpokeSpawner, live_dir: Directory, tmp_path: Path
) -> None:
    cjk_font_or_skip()
    spokes = await busy_exchange(hub, spawn_spoke)
    gov = spokes["jl.gov"]
    assert hub.metrics_port is not None

    async with Chromium(tmp_path / "chromium") as browser:
        await browser.open(f"http://127.0.0.1:{hub.metrics_port}/")
        closed_rows = await open_tree(browser, len(live_dir.orgs))
        await browser.wait_for(f"{row_state('jl.cc')} === 'online'", "jl.cc shown online")
        rows = await browser.evaluate(
            "[...document.querySelectorAll('tr[data-org]')].map(r => r.dataset.org)"
        )
        first = await browser.evaluate("document.querySelector('tr[data-org]').textContent")
        online_cell = await browser.evaluate(cell_text("jl.cc", "govnet"))
        ready = await browser.evaluate("document.getElementById('ready').textContent")

        await spokes["jl.cc"].disconnect()  # the page is not reloaded: its polling sees it
        await browser.wait_for(f"{row_state('jl.cc')} === 'offline'", "jl.cc shown offline")
        offline_cell = await browser.evaluate(cell_text("jl.cc", "govnet"))
        govnet = await browser.wait_for(
            "document.querySelector('#channels tr[data-channel=\"govnet\"]')?.textContent",
            "the govnet channel's counts",
        )

        waiting = [
            await gov.send(["jl.cc"], precedence=Precedence.EXTRA_URGENT),
            await gov.send(["jl.cc"]),
        ]
        for sealed in waiting:
            msg_id = sealed.header.msg_id
            await gov.wait_for(lambda m=msg_id: gov.has(m, ReceiptStatus.ACCEPTED), WITHIN)
        queue_expr = "document.querySelector('tr[data-org=\"jl.cc\"] td.queue')?.textContent"
        queue = await browser.wait_for(
            f"(({queue_expr}) || '').includes('2 oldest') && ({queue_expr})",
            "jl.cc's queue of 2 on the page",
        )
        alerts = await browser.wait_for(
            "document.querySelector('#attention .alert-bad')?.textContent",
            "an alert for the offline spoke with deliveries waiting",
        )
        dead_row = await browser.wait_for(
            "document.querySelector('#dead .state-DEAD')?.closest('tr')?.textContent",
            "the dead letter listed",
        )
        shot = await browser.screenshot(ARTEFACT)
        dark_scheme = [{"name": "prefers-color-scheme", "value": "dark"}]
        await browser.send("Emulation.setEmulatedMedia", features=dark_scheme)
        dark = await browser.screenshot(ARTEFACT.with_name("status-page-dark.png"))
        print(f"\nstatus page screenshots: {shot} {dark}")  # the artefacts, for whoever reads CI

        await browser.send("Emulation.setEmulatedMedia", features=[])
        hub.kill9()  # the page must not go on showing a reassuring picture
        stale = await browser.wait_for(
            "!document.getElementById('stale').hidden"
            " && document.getElementById('stale').textContent",
            "the page saying it no longer updates",
        )
        ready_after = await browser.evaluate("document.getElementById('ready').textContent")

        assert browser.exceptions == [], browser.exceptions
        errors = [line for line in browser.console if line.startswith(("error", "warning"))]
        assert errors == [], errors

    assert closed_rows == 0, "the tree is read only once it is opened"
    assert rows == [node.id for node in _tree_order(live_dir)]
    assert govnet.startswith("govnet")
    assert "国务院办公厅" in first
    assert "online" in online_cell
    assert "OFFLINE" in offline_cell
    assert ready.startswith("READY")
    assert "特急" in queue, "the most urgent waiting precedence is shown"
    assert "jl.cc" in alerts
    assert "offline" in alerts
    assert "jl.dept.health" in dead_row
    assert shot.stat().st_size > 10_000
    assert "NOT UPDATING" in stale
    assert ready_after.startswith("READY"), "the last answer stays visible, greyed out"
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


async def open_tree(browser: Chromium, orgs: int) -> int:
    """Open the tree and every level of it; how many rows it had before it was opened."""
    await browser.wait_for(
        "document.getElementById('ready')?.textContent.startsWith('READY') ?? false", "the summary"
    )
    closed_rows = await browser.evaluate("document.querySelectorAll('tr[data-org]').length")
    await browser.evaluate("document.querySelector('#tree-panel > summary').click()")
    await browser.wait_for(f"{OPEN_NEXT} === {orgs}", "every level of the tree opened")
    return int(closed_rows)


def rows_with(org: str, count: int) -> str:
    """A page expression: true once the tree has ``count`` rows and one for ``org``."""
    return (
        f"document.querySelectorAll('tr[data-org]').length === {count} && {row_state(org)} !== null"
    )


def opener(org: str) -> str:
    selector = f"tr[data-org={json.dumps(org)}] button.toggle"
    return f"document.querySelector({json.dumps(selector)}).click()"


async def test_a_large_tree_is_read_a_level_and_a_hundred_at_a_time(
    world: World, tmp_path: Path
) -> None:
    cjk_font_or_skip()
    directory = national_directory(live_directory(world), 1_200)
    below_cc = [o.id for o in directory.orgs if o.parent == "jl.cc"]  # 3 + 100 counties
    hub = HubProcess(tmp_path / "hub", world.hub_key, directory).start()
    try:
        async with Chromium(tmp_path / "chromium") as browser:
            await browser.open(f"http://127.0.0.1:{hub.metrics_port}/")
            await browser.wait_for(
                "document.getElementById('ready')?.textContent.startsWith('READY') ?? false",
                "the summary",
            )
            await browser.evaluate("document.querySelector('#tree-panel > summary').click()")
            await browser.wait_for(rows_with("cn.gov", 3), "the top level: three roots")
            await browser.evaluate(opener("cn.gov"))
            await browser.wait_for(rows_with("jl.gov", 4), "the province below the State Council")
            await browser.evaluate(opener("jl.gov"))
            await browser.wait_for(rows_with("jl.cc", 18), "nine prefectures, five departments")
            await browser.evaluate(opener("jl.cc"))
            await browser.wait_for(rows_with(below_cc[99], 118), "the first hundred below jl.cc")
            more = await browser.evaluate("document.querySelector('tr.more')?.textContent")
            await browser.evaluate("document.querySelector('tr.more button').click()")
            await browser.wait_for(rows_with(below_cc[-1], 121), "the last three below jl.cc")
            left = await browser.evaluate("document.querySelectorAll('tr.more').length")
            spokes = await browser.evaluate("document.querySelector('#tiles .tile').textContent")
            # Nothing happens on this hub: a refresh sends the ETag back and gets no body.
            await browser.wait_for(
                "performance.getEntriesByType('resource').some("
                "e => e.name.endsWith('/status.json') && e.responseStatus === 304)",
                "a refresh of the summary answered 304",
            )
            stale = await browser.evaluate("document.getElementById('stale').hidden")

            assert browser.exceptions == [], browser.exceptions
    finally:
        hub.stop()

    assert len(below_cc) == 103
    assert "show 3 more of 3" in more
    assert left == 0
    assert "0 / 1200" in spokes
    assert stale is True, "a 304 is a good answer: the page is up to date"


def _tree_order(directory: Directory) -> list[OrgEntry]:
    """The organisations depth first along parent links, as the page lists them."""
    return [org for root in org_tree(directory) for org in root.walk()]


async def busy_exchange(hub: HubProcess, spawn_spoke: SpokeSpawner) -> dict[str, SimSpoke]:
    """Five spokes online, documents delivered, one dead letter and one refusal."""
    spokes = {
        "cn.gov": spawn_spoke(hub, "cn.gov", channels=("govnet", "classified")),
        "jl.gov": spawn_spoke(hub, "jl.gov", channels=("govnet", "internet", "classified")),
        "jl.cc": spawn_spoke(hub, "jl.cc"),
        "jl.cc.nongan": spawn_spoke(hub, "jl.cc.nongan"),
        "jl.dept.health": spawn_spoke(hub, "jl.dept.health", auto_deliver=False),
    }
    for spoke in spokes.values():
        await spoke.connect()
    gov = spokes["jl.gov"]
    delivered = [await gov.send(["jl.cc", "jl.cc.nongan"]) for _ in range(3)]
    unconfirmed = await gov.send(["jl.dept.health"])  # received, never confirmed: DEAD
    for sealed in delivered:
        msg_id = sealed.header.msg_id
        await gov.wait_for(lambda m=msg_id: gov.has(m, ReceiptStatus.DELIVERED, "jl.cc"), WITHIN)
    dead = unconfirmed.header.msg_id
    await gov.wait_for(lambda: gov.has(dead, ReceiptStatus.DEAD, "jl.dept.health"), WITHIN)
    await gov.publish_raw(b"\xc1 not a message")  # one REJECTED, for the flow
    return spokes


async def test_an_unacknowledged_emergency_is_a_red_line_naming_who_has_not_signed_for_it(
    world: World, live_dir: Directory, tmp_path: Path, spawn_spoke: SpokeSpawner
) -> None:
    cjk_font_or_skip()
    fast = '[deadlines]\nlook_every = 0.3\nremind_before = "1s"\n'
    hub = HubProcess(tmp_path / "hub", world.hub_key, live_dir, extra_toml=fast).start()
    try:
        gov, cc, jl = (spawn_spoke(hub, o) for o in ("jl.gov", "jl.cc", "jl.jl"))
        for spoke in (gov, cc, jl):
            await spoke.connect()
        terms = Terms(sign_by=now_ms() + 2_000, done_by=None, case=None, accept_by=None,
                      drill=False)  # fmt: skip
        sealed = await gov.send(["jl.cc", "jl.jl"], doc_type=DocType.EMERGENCY,
                                precedence=Precedence.FLASH, terms=terms)  # fmt: skip
        msg_id = sealed.header.msg_id
        await gov.wait_for(lambda: gov.has(msg_id, ReceiptStatus.DELIVERED, "jl.jl"), WITHIN)
        await cc.acknowledge(cc.received[msg_id].envelope, ReceiptStatus.SIGNED_FOR)
        async with Chromium(tmp_path / "chromium") as browser:
            await browser.open(f"http://127.0.0.1:{hub.metrics_port}/")
            red = (
                "[...document.querySelectorAll('#attention .alert-bad')].map(e => e.textContent)"
                ".find(t => t.includes('应急 Emergency')) ?? null"
            )
            await browser.wait_for(f"({red}) !== null", "the emergency's red line")
            line = await browser.evaluate(red)
            tile = await browser.evaluate(
                "[...document.querySelectorAll('#tiles .tile')].find(t => "
                "t.textContent.includes('逾期 Overdue'))?.className ?? ''"
            )
            assert browser.exceptions == [], browser.exceptions
    finally:
        hub.stop()

    assert msg_id.hex() in line
    assert "by jl.jl" in line, "it names who has not signed for it, and only them"
    assert "jl.cc" not in line.split("(from")[0]
    assert "bad" in tile
