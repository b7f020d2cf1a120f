"""The witness and ``spoke prove`` with a real broker (Mosquitto) and a real spoke agent
(in this process, so that ``capture_logs`` sees its events); the hub's part is played by
tests.spoke.ledgerpeer, built from the real schemas.ledger and schemas.merkle code.

One scenario, in order: the first checkpoint is adopted and countersigned; the next one
is checked with its attached proof; one after missed checkpoints makes the spoke ask for
a consistency proof; a document sent is ACCEPTED and ``spoke prove`` writes evidence that
schemas.evidence accepts; a forked history is logged as ``ledger.fork``, kept, and shown
by ``spoke status``; ``spoke witness reset`` (as docs/integrators.md writes it) clears it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shlex
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from runtime.clock import now_ms
from schemas import evidence
from schemas.keys import verify_signature
from schemas.ledger import DOMAIN_COSIGN, read_checkpoint
from spoke.agent import SpokeAgent
from spoke.config import load_config
from tests.hubproc import MOSQUITTO, Mosquitto, live_directory
from tests.spoke.ledgerpeer import LedgerPeer, Tree
from tests.spoke.procs import SpokeProcess, eventually, spoke_command
from tests.world import World

pytestmark = pytest.mark.skipif(not Path(MOSQUITTO).exists(), reason="mosquitto not installed")
ORG = "jl.gov"
GUIDE = Path(__file__).parents[2] / "docs" / "integrators.md"


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[Mosquitto]:
    mosquitto = Mosquitto(tmp_path / "mosquitto").start()
    try:
        yield mosquitto
    finally:
        mosquitto.stop()


def guide_command(start: str) -> list[str]:
    """The command of docs/integrators.md that begins with ``start``, split into words."""
    lines = [ln for ln in GUIDE.read_text(encoding="utf-8").splitlines() if ln.startswith(start)]
    assert len(lines) == 1, f"docs/integrators.md should show one command starting {start!r}"
    return shlex.split(lines[0].split("#")[0])


async def cli(spoke: SpokeProcess, *args: str) -> tuple[int, str, str]:
    done = await asyncio.to_thread(spoke_command, *args, "--config", str(spoke.config))
    return done.returncode, done.stdout, done.stderr


async def as_guide_says(
    start: str, spoke: SpokeProcess, cwd: Path, **words: str
) -> tuple[int, str, str]:
    """The guide's command starting ``start``, run in ``cwd`` with its placeholders
    (``spoke.toml``, ``MSG_ID``...) replaced."""
    command = guide_command(start)
    assert command[0] == "spoke"
    words["spoke.toml"] = str(spoke.config)
    args = []
    for word in command[1:]:
        arg = word
        for placeholder, value in words.items():
            arg = arg.replace(placeholder, value)
        args.append(arg)
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "spoke", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.returncode, done.stdout, done.stderr


async def test_the_spoke_witnesses_checkpoints_proves_a_message_and_raises_a_fork(  # noqa: PLR0915 - one scenario: each step needs what the one before left
    world: World, broker: Mosquitto, tmp_path: Path
) -> None:
    directory = live_directory(world)
    entry = directory.org(ORG)
    assert entry is not None
    channels = tuple(entry.channels)
    spoke = SpokeProcess(tmp_path / ORG, ORG, world, broker.port, channels)
    spoke.write()
    tree = Tree(directory.hub_id, world.hub_key)
    tree.grow(3, at=now_ms() - 60_000)
    peer = LedgerPeer(broker.port, ORG, channels, directory, tree, now_ms() - 30_000)
    held_file = spoke.work / "ledger" / "checkpoint.ckpt"

    def held_size() -> int | None:
        return read_checkpoint(held_file.read_bytes()).size if held_file.exists() else None

    async with peer:
        first = tree.checkpoint(peer.tick())
        await peer.publish_checkpoint(first, 0, b"")
        agent = SpokeAgent(load_config(spoke.config))
        with capture_logs() as logs:
            running = asyncio.get_running_loop().create_task(agent.run())
            try:
                await eventually(lambda: held_size() == 3, "the first checkpoint to be held")
                cosig = await eventually(lambda: peer.cosigned, "a countersignature")
                public = world.keys[ORG].signing.public
                body = read_checkpoint(first).body
                assert verify_signature(public, DOMAIN_COSIGN, body, cosig[0].sig)

                tree.grow(2, at=peer.tick())  # 5, with the attached proof from 3
                await peer.publish_checkpoint(
                    tree.checkpoint(peer.tick()), 3, tree.consistency(3, 5)
                )
                await eventually(lambda: held_size() == 5, "size 5 from the attached proof")
                assert peer.asked == []

                tree.grow(2, at=peer.tick())  # 7, published as if 6 came before (missed)
                await peer.publish_checkpoint(
                    tree.checkpoint(peer.tick()), 6, tree.consistency(6, 7)
                )
                await eventually(lambda: held_size() == 7, "size 7 after a question")
                assert [(a.old, a.new) for a in peer.asked] == [(5, 7)]

                spoke.drop("通知.txt", "正文".encode(), {
                    "to": "jl.cc", "classification": "内部", "doc_type": "通知", "title": "见证",
                })  # fmt: skip
                msg_id = (await eventually(lambda: peer.accepted, "the envelope")).pop().hex()
                await eventually((spoke.sent / msg_id / "status.json").exists, "the drop in sent/")
                await peer.publish_checkpoint(
                    tree.checkpoint(peer.tick()), 7, tree.consistency(7, 8)
                )
                await eventually(lambda: held_size() == 8, "size 8")

                code, stdout, stderr = await as_guide_says(
                    "spoke prove ", spoke, tmp_path, MSG_ID=msg_id
                )
                assert code == 0, stderr
                assert "1 ledger entries, 1 receipts, checkpoint of size 8" in stdout
                out = tmp_path / f"{msg_id}.evidence.json"
                doc = evidence.loads(out.read_bytes())
                report = evidence.verify(doc, trusted_hub_keys=[world.hub_key.public])
                assert report.ok, report.problems
                assert [e.event for e in report.entries] == ["message.accepted"]
                assert (spoke.sent / msg_id / "evidence.json").read_bytes() == out.read_bytes()
                code, stdout, _ = await as_guide_says(
                    "spoke check-evidence ", spoke, tmp_path, MSG_ID=msg_id
                )
                assert code == 0
                assert "every proof holds" in stdout

                older = tree.checkpoint(now_ms() - 50_000, 5)  # signed before the held one
                (tmp_path / "OTHER.ckpt").write_bytes(older)
                code, stdout, stderr = await as_guide_says("spoke witness check ", spoke, tmp_path)
                assert code == 0, stderr
                assert "consistent: held size 8, other size 5" in stdout
                assert (5, 8) in [(a.old, a.new) for a in peer.asked]

                forked = Tree(directory.hub_id, world.hub_key)  # same key, another history
                forked.grow(9, at=peer.tick(), tag="forked")
                peer.answer_with = forked
                await peer.publish_checkpoint(
                    forked.checkpoint(peer.tick()), 8, forked.consistency(8, 9)
                )
                fork = await eventually(
                    lambda: [e for e in logs if e["event"] == "ledger.fork"], "ledger.fork"
                )
            finally:
                agent.stop()
                async with asyncio.timeout(30):
                    await running
    assert fork[0]["log_level"] == "error"
    assert (fork[0]["held_size"], fork[0]["new_size"]) == (8, 9)
    folder = Path(fork[0]["folder"])
    assert read_checkpoint((folder / "held.ckpt").read_bytes()).size == 8
    assert read_checkpoint((folder / "new.ckpt").read_bytes()).size == 9
    assert json.loads((folder / "why.json").read_text(encoding="utf-8"))["new_size"] == 9
    assert held_size() == 8  # not adopted
    code, stdout, _ = await cli(spoke, "status")
    assert stdout.splitlines()[0].startswith("账本分叉 / LEDGER FORK")
    assert str(folder) in stdout.splitlines()[0]
    witness = json.loads((spoke.work / "ledger" / "witness.json").read_text(encoding="utf-8"))
    assert (witness["forks_total"], witness["forks_open"]) == (1, 1)

    # the operator settles it with the hub and the security officer, then, as the guide says
    agent = SpokeAgent(load_config(spoke.config))
    async with peer:
        running = asyncio.get_running_loop().create_task(agent.run())
        try:
            await eventually(lambda: agent.witness.latest, "the retained checkpoint again")
            code, stdout, stderr = await as_guide_says("spoke witness reset ", spoke, tmp_path)
            assert code == 0, stderr
            assert "holds the hub's checkpoint of size 9" in stdout
        finally:
            agent.stop()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(30):
                    await running
    code, stdout, _ = await cli(spoke, "status")
    assert "LEDGER FORK" not in stdout
    assert "forks: 1 (0 open)" in stdout
    assert held_size() == 9  # the hub's current checkpoint, accepted by the operator
