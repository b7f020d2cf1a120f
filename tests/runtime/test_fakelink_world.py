"""A real hub and real spoke agents, in this process, on one in-memory broker.

The hub (its SQLite store, its signed directory and key) and the spoke agents are the real
ones; only their links are :class:`runtime.fakelink.FakeLink` (``link_maker``). A test moves
the broker itself at a chosen moment (pausing a reader, cutting a connection, restarting
the broker) instead of killing a Mosquitto process and waiting for timers. Every wait is
an :func:`eventually` with a generous bound; nothing sleeps to synchronise.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from hubd.config import load_config as load_hub_config
from hubd.daemon import Hub
from runtime.fakelink import FakeBroker, FakeLink
from runtime.tasks import cancel_and_wait
from schemas import topics, transport
from spoke.agent import SpokeAgent
from spoke.config import load_config as load_spoke_config
from tests.hubproc import HubProcess, live_directory
from tests.spoke.procs import SpokeProcess, eventually
from tests.world import World

CHANNEL = "govnet"
SENDER, RECIPIENT = "jl.gov", "jl.cc"
WITHIN = 30.0  # the bound of one wait; each is met in well under a second when nothing is wrong
# No broker listens anywhere: the port is only written into the configurations.
NOWHERE = 1
QUIET_HUB = '[metrics]\nlisten = ""\n[admin]\nenabled = false\n'  # nothing leaves the process
# retries: a resend within a fraction of a second (the tests that wait for one), or none
# within any test (so that a count of what the hub sent is exact)
SOON, NEVER = 0.2, 600.0


def notice(title: str) -> dict[str, object]:
    return {"主送": RECIPIENT, "密级": "内部", "文种": "通知", "标题": title}


@dataclass
class FakeExchange:
    """One hub and some spokes of the Jilin exchange, all on ``broker``."""

    folder: Path
    world: World
    retry: float = NEVER
    broker: FakeBroker = field(default_factory=FakeBroker)
    hub: Hub | None = None
    installs: dict[str, SpokeProcess] = field(default_factory=dict)
    agents: dict[str, SpokeAgent] = field(default_factory=dict)
    _tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)

    async def start_hub(self) -> Hub:
        install = HubProcess(
            self.folder / "hub",
            self.world.hub_key,
            live_directory(self.world),
            broker_port=NOWHERE,  # channels on an external broker: no embedded one starts
            metrics_port=None,
            extra_toml=f"{QUIET_HUB}[delivery]\nretry_initial = {self.retry}\n"
            f"retry_max = {self.retry}\n",
        )
        hub = self.hub = Hub(load_hub_config(install.write()), link_maker=self.broker.link)
        self._tasks["hub"] = asyncio.get_running_loop().create_task(hub.run())
        await eventually(self.hub_connected, "the hub to connect", within=WITHIN)
        return hub

    def hub_connected(self) -> bool:
        self._check_alive()
        links = [] if self.hub is None else self.hub.broker_links()
        return bool(links) and all(link.connected.is_set() for link in links)

    async def start_spoke(self, org: str) -> SpokeAgent:
        """``org``'s agent, running once it is connected, holds the directory and the hub
        knows it is online."""
        install = self.installs[org] = SpokeProcess(
            self.folder / org, org, self.world, NOWHERE, (CHANNEL,)
        )
        agent = self.agents[org] = SpokeAgent(
            load_spoke_config(install.write()), link_maker=self.broker.link
        )
        self._tasks[org] = asyncio.get_running_loop().create_task(agent.run())
        assert self.hub is not None
        assert self.hub.dispatcher is not None
        dispatcher = self.hub.dispatcher

        def ready() -> bool:
            self._check_alive()
            return agent.ctx.verified is not None and dispatcher.is_online(CHANNEL, org)

        await eventually(
            ready, f"{org} to hold the directory and be online at the hub", within=WITHIN
        )
        return agent

    def spoke_link(self, org: str) -> FakeLink:
        link = self.agents[org].ctx.links[CHANNEL]
        assert isinstance(link, FakeLink)
        return link

    def _check_alive(self) -> None:
        """A hub or agent that stopped by itself fails the test with its own error."""
        for name, task in self._tasks.items():
            if task.done():
                raise AssertionError(f"{name} stopped by itself") from task.exception()

    async def close(self) -> None:
        for agent in self.agents.values():
            agent.stop()
        if self.hub is not None:
            self.hub.stop()
        tasks = list(self._tasks.values())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(WITHIN):
                await asyncio.gather(*tasks, return_exceptions=True)
        await cancel_and_wait(tasks)

    # ------------------------------------------------------------------ what the test reads

    def envelopes_to(self, org: str) -> int:
        """How many envelopes the broker took for ``org`` (from the hub)."""
        down = topics.down(CHANNEL, org)
        return sum(
            1
            for p in self.broker.published
            if p.topic == down and isinstance(transport.decode(p.payload), transport.EnvelopeMsg)
        )

    async def delivered(self, title: str) -> tuple[str, dict[str, Any]]:
        """(msg_id, the sender's status.json) once the recipient's DELIVERED is in it."""
        sender = self.installs[SENDER]

        def reached() -> dict[str, Any] | None:
            self._check_alive()
            status = sender.status(f"{title}.txt")
            if status is None or status["recipients"][RECIPIENT]["status"] != "DELIVERED":
                return None
            return status

        status = await eventually(reached, f"'{title}' to be DELIVERED", within=WITHIN)
        return str(status["msg_id"]), status


@contextlib.asynccontextmanager
async def exchange(
    world: World,
    tmp_path: Path,
    *,
    retry: float = NEVER,
    orgs: tuple[str, ...] = (SENDER, RECIPIENT),
) -> AsyncIterator[FakeExchange]:
    """The hub (resending after ``retry`` seconds) and the spokes of ``orgs``, running and
    connected."""
    made = FakeExchange(tmp_path, world, retry)
    try:
        await made.start_hub()
        for org in orgs:
            await made.start_spoke(org)
        yield made
    finally:
        await made.close()


def inbox_folders(install: SpokeProcess) -> list[str]:
    """The recipient's complete inbox folders (dot-named staging left out)."""
    return [name for name in install.inbox_entries() if not name.startswith(".")]


async def test_a_dropped_document_reaches_the_recipients_inbox_and_the_sender_sees_it_delivered(
    world: World, tmp_path: Path
) -> None:
    async with exchange(world, tmp_path) as ex:
        content = "各市（州）人民政府：请做好今冬明春供暖保障工作。\n".encode()
        ex.installs[SENDER].drop("供暖通知.txt", content, notice("供暖通知"))

        msg_id, status = await ex.delivered("供暖通知")

        assert status["hub"] == "ACCEPTED"
        assert status["channel"] == CHANNEL
        assert status["accepted_at"] is not None
        assert status["recipients"][RECIPIENT]["delivered_at"] is not None
        receipts = ex.agents[SENDER].ctx.state.receipts(bytes.fromhex(msg_id))
        assert [(who, what) for who, what, *_ in receipts] == [(RECIPIENT, "DELIVERED")]
        recipient = ex.installs[RECIPIENT]
        assert inbox_folders(recipient) == [msg_id]
        assert (recipient.inbox / msg_id / "供暖通知.txt").read_bytes() == content
        received = recipient.received()[msg_id]
        assert received["title"] == "供暖通知"
        assert received["sender"]["id"] == SENDER
        assert ex.envelopes_to(RECIPIENT) == 1  # sent once: nothing was lost


def logged(logs: list[MutableMapping[str, Any]], event: str) -> int:
    return sum(1 for entry in logs if entry["event"] == event)


async def test_an_envelope_lost_with_the_recipients_connection_is_sent_again_and_lands_once(
    world: World, tmp_path: Path
) -> None:
    with capture_logs() as logs:
        async with exchange(world, tmp_path, retry=SOON) as ex:
            recipient_link = ex.spoke_link(RECIPIENT)
            recipient_link.set_reading(False)  # what arrives waits, unread, on its connection
            connections = recipient_link.connections
            ex.installs[SENDER].drop("会议通知.txt", b"meeting on Monday\n", notice("会议通知"))
            await eventually(
                lambda: ex.envelopes_to(RECIPIENT) >= 1, "the hub to send it", within=WITHIN
            )

            ex.broker.drop(recipient_link)  # the unread envelope is lost with the connection
            await eventually(
                lambda: (
                    recipient_link.connections > connections and recipient_link.connected.is_set()
                ),
                "the recipient to reconnect",
                within=WITHIN,
            )
            recipient_link.set_reading(True)

            msg_id, _ = await ex.delivered("会议通知")
            assert ex.envelopes_to(RECIPIENT) >= 2  # the first was lost: a resend delivered it
            assert inbox_folders(ex.installs[RECIPIENT]) == [msg_id]
    assert logged(logs, "inbox.received") == 1


async def test_a_recipient_that_reads_the_hubs_resend_as_well_stores_the_document_once(
    world: World, tmp_path: Path
) -> None:
    with capture_logs() as logs:
        async with exchange(world, tmp_path, retry=SOON) as ex:
            recipient_link = ex.spoke_link(RECIPIENT)
            recipient_link.set_reading(False)
            drop = ex.installs[SENDER].drop
            drop("值班通知.txt", b"on duty over the holiday\n", notice("值班通知"))
            # no DELIVERED comes while the recipient reads nothing: the hub sends it again
            await eventually(
                lambda: ex.envelopes_to(RECIPIENT) >= 2, "the hub to resend", within=WITHIN
            )

            recipient_link.set_reading(True)  # both copies arrive, one after the other

            msg_id, _ = await ex.delivered("值班通知")
            await eventually(
                lambda: logged(logs, "inbox.received") + logged(logs, "inbox.duplicate") >= 2,
                "both copies to be read",
                within=WITHIN,
            )
            assert inbox_folders(ex.installs[RECIPIENT]) == [msg_id]
    assert logged(logs, "inbox.received") == 1  # written once, the copy only answered
    assert logged(logs, "inbox.duplicate") >= 1


async def test_a_broker_restarted_without_its_retained_messages_still_delivers_what_waited(
    world: World, tmp_path: Path
) -> None:
    async with exchange(world, tmp_path, orgs=(SENDER,)) as ex:  # the recipient is not running
        ex.installs[SENDER].drop("防汛通知.txt", b"flood season duty\n", notice("防汛通知"))
        status = await eventually(
            lambda: ex.installs[SENDER].status("防汛通知.txt"),
            "the hub to accept it",
            within=WITHIN,
        )
        assert status["recipients"][RECIPIENT]["status"] == "PENDING"
        assert ex.hub is not None
        [hub_link] = ex.hub.broker_links()
        assert isinstance(hub_link, FakeLink)
        connections = hub_link.connections

        ex.broker.stop(keep_retained=False)  # the directory it held is gone with it
        assert ex.broker.retained == {}
        ex.broker.start()
        await eventually(
            lambda: hub_link.connections > connections and hub_link.connected.is_set(),
            "the hub to reconnect",
            within=WITHIN,
        )

        await ex.start_spoke(RECIPIENT)  # gets the directory the hub published again

        msg_id, _ = await ex.delivered("防汛通知")
        assert inbox_folders(ex.installs[RECIPIENT]) == [msg_id]
        assert ex.envelopes_to(RECIPIENT) == 1  # held for the recipient, sent when it came
