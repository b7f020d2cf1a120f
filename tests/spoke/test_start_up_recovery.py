"""Start-up recovery finishes before anything else touches the work area.

At start the agent finishes what a crash left in ``.spoke/work/`` (Outbox.recover). It did
so in its first scan, in a worker thread, while its links were up and the hub's answers
to the envelopes it re-published were being handled: recover removed a work folder that
an ACCEPTED had just emptied (FileNotFoundError in fsync_dir, healed only by a resend).
Here the real agent runs in this process; recovery is held at its start while the hub's
ACCEPTED arrives the way a link hands it over, and it must not be acted on until
recovery has finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import socket
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from runtime.clock import now_ms
from schemas import topics, transport
from schemas.directory import Directory
from schemas.labels import Classification
from schemas.receipts import ReceiptEntry, ReceiptStatus, sign_receipts
from spoke.agent import SpokeAgent
from spoke.config import load_config
from spoke.outbox import Claimed
from spoke.state import Outbound, SpokeState
from tests.hubproc import live_directory
from tests.spoke.procs import SpokeProcess, eventually
from tests.world import World, seed_held

ORG = "jl.gov"
NOTICE = {"to": "jl.cc", "classification": "内部", "doc_type": "通知", "title": "关于供暖的通知"}


def unused_port() -> int:
    """A port nothing listens on: the links keep trying, no hub ever answers by itself."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def running(agent: SpokeAgent) -> AsyncIterator[None]:
    task = asyncio.get_running_loop().create_task(agent.run())
    try:
        yield
    finally:
        agent.stop()
        async with asyncio.timeout(30):
            await task


def installed(world: World, folder: Path, directory: Directory) -> SpokeProcess:
    """A spoke installed in ``folder`` whose state already holds a verified directory."""
    install = SpokeProcess(folder, ORG, world, unused_port(), ("govnet",))
    install.write()
    install.work.mkdir(parents=True)
    state = SpokeState(install.work / "state.db")
    seed_held(state, directory, world.hub_key)
    state.close()
    return install


def accepted(world: World, directory: Directory, out: Outbound) -> bytes:
    """The hub's ACCEPTED for ``out`` as the link hands it to the agent."""
    entry = ReceiptEntry(
        msg_id=out.msg_id,
        recipient=None,
        status=ReceiptStatus.ACCEPTED,
        at=now_ms(),
        subject=hashlib.sha256(out.frame).digest(),
        classification=Classification.INTERNAL,
        reason=None,
        detail=None,
        retriable=False,
    )
    frame = sign_receipts(directory.hub_id, world.hub_key, [entry], at=now_ms())
    return transport.encode(transport.ReceiptsMsg(frame, 0))


def handling_messages() -> bool:
    """Whether the agent's inbound loop (hub -> agent) is running in this event loop."""
    return any(task.get_name() == "spoke.inbound" for task in asyncio.all_tasks())


async def test_an_accepted_arriving_during_start_up_recovery_is_acted_on_only_after_it(
    world: World, tmp_path: Path
) -> None:
    directory = live_directory(world)
    install = installed(world, tmp_path / ORG, directory)
    first = SpokeAgent(load_config(install.config))
    async with running(first):  # seals the drop; no hub answers it
        install.drop("通知.txt", "关于做好冬季供暖工作的通知。\n".encode(), NOTICE)
        await eventually(
            lambda: first.ctx.state.outbound("WHERE state = 'QUEUED'"), "the drop to be sealed"
        )

    agent = SpokeAgent(load_config(install.config))  # the restart
    [out] = agent.ctx.state.outbound("WHERE state = 'QUEUED'")
    recovering, release = threading.Event(), threading.Event()
    seen: list[list[str]] = []  # what recovery found in the drop's work folder
    recover = agent.sender.outbox.recover

    def held(sealed: Callable[[Path], bool]) -> list[Claimed]:
        recovering.set()
        release.wait()
        seen.append(sorted(p.name for p in out.work.iterdir()) if out.work.exists() else [])
        return recover(sealed)

    agent.sender.outbox.recover = held  # type: ignore[method-assign]
    try:
        async with running(agent):
            await eventually(recovering.is_set, "start-up recovery to begin")
            # the hub answers the envelope the agent re-publishes, as the link hands it over
            agent._inbound.put_nowait((topics.down("govnet", ORG), accepted(world, directory, out)))
            if handling_messages():  # then the answer is acted on now, during recovery
                await eventually(lambda: not out.work.exists(), "the ACCEPTED to be acted on")
            release.set()
            status_file = install.sent / out.msg_id.hex() / "status.json"
            await eventually(status_file.exists, "sent/<msg_id>/status.json")
            assert handling_messages()  # the probe above names the loop that handled it
    finally:
        release.set()  # never leave the worker thread waiting

    assert seen == [["通知.txt", "通知.txt.meta.toml"]]  # nothing moved it during recovery
    status: dict[str, Any] = json.loads(status_file.read_text(encoding="utf-8"))
    assert status["hub"] == "ACCEPTED"
    assert sorted(p.name for p in status_file.parent.iterdir()) == [
        "status.json",
        "通知.txt",
        "通知.txt.meta.toml",
    ]
    assert list((install.work / "work").iterdir()) == []
