"""Hub and spokes on a channel given as a list of broker nodes, end to end.

The list's first node is dead from the start (nothing listens there) and the second is a
real Mosquitto: hub and spokes must skip the first, exchange a document on the second,
and say which node they are on (their logs, the hub's /metrics and /healthz). Two
Mosquittos are not a cluster, so nothing here fails over mid-flow between them (that is
tests/runtime/test_failover.py's claim, on the link itself).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from typer.testing import CliRunner

from hubd.cli import hubctl_app
from runtime.ports import free_port
from tests.ops.test_metrics import get, scrape, series
from tests.spoke.procs import make_exchange
from tests.world import World


async def test_hub_and_spokes_skip_a_dead_first_node_and_exchange_on_the_next(
    world: World, tmp_path: Path
) -> None:
    exchange = make_exchange(tmp_path, world, "mosquitto", start_hub=False)
    try:
        assert exchange.hub is not None
        assert exchange.broker is not None
        dead = f"mqtt://127.0.0.1:{free_port()}"  # nothing listens there
        live = f"mqtt://127.0.0.1:{exchange.broker.port}"
        exchange.hub.broker_urls = (dead, live)
        hub = exchange.start_hub()
        gov, cc = (exchange.spoke(org) for org in ("jl.gov", "jl.cc"))
        for spoke in (gov, cc):
            text = spoke.write().read_text(encoding="utf-8")
            spoke.config.write_text(
                text.replace(f'url = "{live}"', f'urls = ["{dead}", "{live}"]'), encoding="utf-8"
            )
        for spoke in (gov, cc):
            await spoke.started()

        gov.drop("通知.txt", "请各单位按时报送。\n".encode(), {
            "主送": "jl.cc", "密级": "内部", "文种": "通知", "标题": "节点列表通知",
        })  # fmt: skip
        await cc.wait_received("节点列表通知")

        for spoke in (gov, cc):
            assert spoke.logged("broker.unreachable", node=dead, retry_in=0), spoke.org
            on = {c for e in spoke.logged("broker.connected", node=live) for c in e["channels"]}
            assert on == set(spoke.channels), spoke.org
            assert not spoke.logged("broker.connected", node=dead)
        hub_log = hub.log_events()
        assert any(
            e["event"] == "broker.unreachable" and e["node"] == dead and e["retry_in"] == 0
            for e in hub_log
        )
        assert [e["node"] for e in hub_log if e["event"] == "broker.connected"] == [live]

        nodes = series(await scrape(hub), "govxchg_broker_node")
        assert {dict(labels)["node"] for labels in nodes} == {live}
        assert {dict(labels)["channel"] for labels in nodes} == {
            channel.id for channel in exchange.directory.channels
        }
        assert hub.metrics_port is not None
        health = (await get(hub.metrics_port, "/healthz")).json()
        assert health["brokers"] == {f"{dead},{live}": True}
        assert health["nodes"] == {f"{dead},{live}": live}

        status = ["status", "--config", str(hub.folder / "hub.toml")]
        shown = await asyncio.to_thread(CliRunner().invoke, hubctl_app, status)
        report = await asyncio.to_thread(CliRunner().invoke, hubctl_app, [*status, "--json"])
        assert shown.exit_code == 0, shown.output
        channels = ", ".join(channel.id for channel in exchange.directory.channels)
        assert f"broker     channels {channels}: on {live}, node 2 of 2\n" in shown.stdout
        assert json.loads(report.stdout)["hub"]["brokers"] == [
            {"broker": f"{dead},{live}", "channels": channels.split(", "), "node": live}
        ]
    finally:
        exchange.close()
