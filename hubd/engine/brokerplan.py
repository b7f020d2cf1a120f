"""Which broker connections the hub opens: one per distinct broker, the channels without a
broker of their own on the embedded one.

A broker given as a node list (``urls``) is one connection that moves between its nodes;
channels naming the same list share it (hubd.config refuses lists that only overlap).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from hubd.config import HubConfig
from schemas.errors import ConfigError


@dataclass(frozen=True, slots=True)
class BrokerPlan:
    name: str
    host: str
    port: int
    channels: list[str]
    tls: bool
    ca: str | None
    cert: str | None
    key: str | None
    failover: tuple[tuple[str, int], ...] = ()  # the broker's other nodes, tried in order

    @property
    def client_tag(self) -> str:
        """What tells this connection's client id apart: the first node (a node belongs to
        one broker only), the same for a single url and a list starting with it; the id is
        made broker-safe by runtime.mqtt.mqtt_client_id (no dots: NATS refuses them)."""
        first = self.name.split(",", 1)[0]
        return first.replace("://", "-").replace(":", "-")


def plan_brokers(config: HubConfig, channels: list[str]) -> list[BrokerPlan]:
    """One connection per distinct broker; channels without their own use the embedded one."""
    grouped: dict[str, list[str]] = defaultdict(list)
    external = {}
    for channel in channels:
        broker = config.broker_for(channel)
        if broker is None:
            if not config.broker.enabled:
                raise ConfigError(
                    "hub configuration",
                    [(f"channels.{channel}", "no broker: give it a url, or enable [broker]")],
                )
            grouped["embedded"].append(channel)
        else:
            grouped[broker.identity].append(channel)
            external[broker.identity] = broker
    plans = []
    for name, members in grouped.items():
        if name == "embedded":
            plans.append(
                BrokerPlan(
                    "embedded",
                    config.broker.host,
                    config.broker.port,
                    members,
                    False,
                    None,
                    None,
                    None,
                )
            )
        else:
            b = external[name]
            plans.append(
                BrokerPlan(
                    name,
                    b.host,
                    b.port,
                    members,
                    b.tls,
                    None if b.ca is None else str(b.ca),
                    None if b.cert is None else str(b.cert),
                    None if b.key is None else str(b.key),
                    b.nodes[1:],
                )
            )
    return plans
