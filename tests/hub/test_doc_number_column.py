"""The 发文字号 the store keeps for ``hubctl find`` never poisons a write.

A quarantined message skips the document rules, so its header's number reaches the store
unchecked; PostgreSQL text cannot hold a NUL, and one such row failed the whole group commit
it was in (every other message of the batch unanswered, again at each retry). In-process,
with the real ingest and a real store on SQLite and on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select

from hubd.engine.rows import findable_doc_number
from hubd.store import tables as t
from hubd.store.db import Store
from schemas import topics, transport
from schemas.labels import Classification
from schemas.receipts import ReceiptStatus
from tests.hub.test_ingest_passes import Rig, running_rig, until

UP = topics.up("govnet", "jl.gov")
LEAKED = topics.up("internet", "jl.gov")
GOOD = "吉政发〔2026〕3号"


@pytest.mark.parametrize(
    ("number", "kept"),
    [
        (GOOD, GOOD),
        (None, None),
        ("吉政发\x00〔2026〕3号", None),
        ("吉政发〔2026〕3号\n", None),
        ("\u202e吉政发〔2026〕3号", None),
        ("吉政发[2026]3号", None),  # a rule set to warn lets it through: still not a column
        ("x" * 5000, None),
    ],
)
def test_only_a_well_formed_number_below_secret_is_kept_as_a_column(
    number: str | None, kept: str | None
) -> None:
    assert findable_doc_number(number, Classification.INTERNAL) == kept


def test_a_state_secrets_number_is_never_kept() -> None:
    assert findable_doc_number(GOOD, Classification.SECRET) is None


@pytest.fixture(params=["sqlite", "postgresql"])
async def stored_rig(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Rig]:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}"
    else:
        url = str(request.getfixturevalue("pg_url"))
    # one commit for the two messages the test hands over (one operation each), at once
    async with (
        Store(url, group_delay=30.0, group_max=2) as store,
        running_rig(store, tmp_path) as running,
    ):
        yield running


async def test_a_quarantined_message_with_a_nul_in_its_number_is_stored_with_its_batch(
    stored_rig: Rig,
) -> None:
    rig = stored_rig
    # INTERNAL on the internet channel (ceiling PUBLIC): quarantined, so no rule looks at
    # the number; below 秘密, so the old code kept it as the column
    leak, leak_body = rig.world.seal(doc_number="吉政发\x00〔2026〕3号")
    fine, fine_body = rig.world.seal(doc_number=GOOD)
    for topic, sealed, body in ((LEAKED, leak, leak_body), (UP, fine, fine_body)):
        rig.ingest.on_message(topic, transport.encode(transport.EnvelopeMsg(sealed.frame, body)))

    await until(lambda: len(rig.issuer.entries) == 2, "an answer to both messages")
    assert sorted(rig.issuer.statuses()) == sorted([ReceiptStatus.REJECTED, ReceiptStatus.ACCEPTED])
    m = t.messages
    rows = await rig.store.read(select(m.c.msg_id, m.c.state, m.c.doc_number))
    stored = {row.msg_id: (row.state, row.doc_number) for row in rows}
    leak_id, fine_id = (s.header.msg_id for s in (leak, fine))
    assert stored == {leak_id: ("QUARANTINED", None), fine_id: ("ACCEPTED", GOOD)}
    assert rig.store.commits == 1, "both in one group commit, and it committed"
