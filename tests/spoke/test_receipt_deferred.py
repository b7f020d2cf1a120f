"""A receipt batch that arrives before the spoke judges with a directory is kept, not lost.

Found by CI under load (tests/spoke/test_receipt_gaps.py): a numbered batch reached the
agent while its own directory entry was still on its way from the hub; with no directory
in use the agent returned without recording it, and its number was never asked for again
until the next reconnect's hello. Now the batch waits, and is taken as soon as a directory
is in use.

In-process, on the fake broker (tests/runtime/test_fakelink_world.py): the real hub and a
real agent. "No directory in use" is the state of an agent whose directory expired (its
``ctx.verified`` is gone); the directory coming back is the book telling the agent
(``on_change``), as a new root or its own entry does.
"""

from __future__ import annotations

from pathlib import Path

from structlog.testing import capture_logs

from schemas import topics, transport
from tests.runtime.test_fakelink_world import CHANNEL, SENDER, exchange
from tests.spoke.procs import eventually
from tests.spoke.test_receipt_gaps import delivered_by_jl_cc
from tests.world import World


async def test_a_numbered_batch_before_a_directory_is_in_use_is_taken_when_one_is(
    world: World, tmp_path: Path
) -> None:
    async with exchange(world, tmp_path, orgs=(SENDER,)) as ex:
        agent = ex.agents[SENDER]
        assert agent.ctx.book is not None
        await agent.ctx.book.ensure(["jl.cc"])  # the issuer's entry held: nothing to ask
        assert agent.ctx.verified is not None
        agent.ctx.verified = None  # no directory in use (as when it has expired)
        frame = delivered_by_jl_cc(world)
        before = agent.ctx.state.cursors().get(CHANNEL, 0)
        batch = transport.encode(transport.ReceiptsMsg(frame, before + 1))

        with capture_logs() as logs:
            agent._sink(topics.down(CHANNEL, SENDER), batch)
            await eventually(
                lambda: any(e["event"] == "receipt.deferred" for e in logs), "the deferral"
            )
        assert agent.ctx.state.cursors().get(CHANNEL, 0) == before  # not taken, not lost

        agent._held_changed()

        await eventually(
            lambda: agent.ctx.state.cursors().get(CHANNEL, 0) == before + 1,
            "the batch to be taken",
        )
