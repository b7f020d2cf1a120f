"""Petitions (信访件) at a real hubd with simulated spokes on a real Mosquitto (issue 16,
part 3): a case received from above is transferred down the tree (转送、交办) keeping its
case number, the organ responsible reports 受理 and 办结, an organisation the case never
passed through cannot add to it, and ``hubctl cases [CASE]`` shows the province
where every case stands — case numbers, states and dates only."""

from __future__ import annotations

import json

import pytest

from runtime.clock import now_ms
from schemas.labels import DocType
from schemas.receipts import ReceiptStatus
from schemas.terms import Terms
from tests.hub.conftest import NO_RETRIES, HubFactory, SpokeMaker
from tests.hub.test_deadlines_hub import hubctl
from tests.hub.test_flows_hub import statement

S = ReceiptStatus
CASE = "吉信〔2026〕0815号"
DAY = 86_400_000


@pytest.fixture
def broker_kind() -> str:
    return "mosquitto"


def petition_terms(case: str = CASE) -> Terms:
    now = now_ms()
    return Terms(sign_by=None, done_by=now + 60 * DAY, case=case, accept_by=now + 15 * DAY,
                 drill=False)  # fmt: skip


async def test_a_case_transferred_down_keeps_its_number_and_the_province_sees_it_closed(
    hub_factory: HubFactory, spokes_at: SpokeMaker
) -> None:
    hub = hub_factory(extra_toml=NO_RETRIES)
    cn, gov, cc, county, jl = (
        spokes_at(hub, o) for o in ("cn.gov", "jl.gov", "jl.cc", "jl.cc.nongan", "jl.jl")
    )
    for spoke in (cn, gov, cc, county, jl):
        await spoke.connect()
    first = await cn.send(["jl.gov"], doc_type=DocType.PETITION, terms=petition_terms(),
                          contents=["（信访人姓名、诉求：只在加密内容中）".encode()])  # fmt: skip
    await cn.wait_for(lambda: cn.has(first.header.msg_id, S.DELIVERED, "jl.gov"), within=20)
    down = await gov.send(["jl.cc"], doc_type=DocType.PETITION, terms=petition_terms(),
                          contents=[b"transfer"])  # fmt: skip
    await gov.wait_for(lambda: gov.has(down.header.msg_id, S.DELIVERED, "jl.cc"), within=20)
    down2 = await cc.send(["jl.cc.nongan"], doc_type=DocType.PETITION, terms=petition_terms(),
                          contents=[b"assigned"])  # fmt: skip
    d2 = down2.header.msg_id
    await cc.wait_for(lambda: cc.has(d2, S.DELIVERED, "jl.cc.nongan"), within=20)

    stranger = await jl.send(["jl.cc"], doc_type=DocType.PETITION, terms=petition_terms(),
                             contents=[b"not mine"])  # fmt: skip
    s_id = stranger.header.msg_id
    await jl.wait_for(lambda: jl.has(s_id, S.REJECTED), within=20)
    (refused,) = [e for e in jl.receipts[s_id] if e.status is S.REJECTED]
    assert refused.reason == "envelope.case_not_held"

    await county.publish_raw(statement(county, S.CASE_ACCEPTED, down2, recipient="jl.cc.nongan"))
    await cc.wait_for(lambda: cc.has(d2, S.CASE_ACCEPTED, "jl.cc.nongan"), within=20)
    shown = json.loads(await hubctl(hub, "cases", CASE, "--json"))
    assert [s["sender"] for s in shown["steps"]] == ["cn.gov", "jl.gov", "jl.cc"]
    assert shown["steps"][-1]["holders"][0]["handling"] == "CASE_ACCEPTED"
    assert shown["open"] is True

    await county.publish_raw(
        statement(county, S.DONE, down2, recipient="jl.cc.nongan", note="已答复信访人")
    )
    await cc.wait_for(lambda: cc.has(d2, S.DONE, "jl.cc.nongan"), within=20)
    listed = json.loads(await hubctl(hub, "cases", "--json"))
    assert [(c["case"], c["open"]) for c in listed["cases"]] == [(CASE, False)]
    assert (await hubctl(hub, "cases", "--open")).startswith("no open petition cases")
    text = await hubctl(hub, "cases", CASE)
    assert "transferred (转送/交办) by jl.cc" in text
    assert "-> jl.cc.nongan: DELIVERED, DONE" in text
    assert "信访人" not in text, "the hub shows case numbers, states and dates only"
