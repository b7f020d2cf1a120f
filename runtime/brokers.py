"""A broker address as hub and spoke configuration files write it (shared, pure).

A channel names one broker (``url = "mqtts://b:8883"``) or the nodes of one clustered
broker (``urls = ["mqtts://b1:8883", "mqtts://b2:8883"]``): the link connects to the first
that answers, in the order written, and moves to the next when its node goes away
(runtime.mqtt.BrokerLink). The nodes of a list are one broker, so they share one scheme
and one set of TLS files.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, field_validator, model_validator


def _checked(value: str) -> str:
    """``value`` if it is an mqtt:// or mqtts:// HOST:PORT URL, else ValueError saying why."""
    parts = urlsplit(value)
    problem = f"{value!r} is not an mqtt://HOST:PORT or mqtts://HOST:PORT URL"
    if parts.scheme not in {"mqtt", "mqtts"} or not parts.hostname:
        raise ValueError(problem)
    if parts.username or parts.password or parts.path not in {"", "/"} or parts.query:
        raise ValueError(f"{problem}: credentials, paths and queries are not used here")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{problem}: the port is not a number from 1 to 65535") from exc
    if port == 0:
        raise ValueError(f"{problem}: port 0")
    return value


def node_identity(url: str) -> str:
    """``scheme://host:port`` of a checked URL, the port written out: what names one node."""
    parts = urlsplit(url)
    port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
    return f"{parts.scheme}://{parts.hostname or ''}:{port}"


class BrokerURL(BaseModel):
    """One broker: ``url`` (``mqtt://host:port`` or ``mqtts://host:port``) or ``urls``, the
    nodes of one clustered broker in the order they are tried; TLS files for mqtts."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str | None = None
    urls: tuple[str, ...] | None = None
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else _checked(value)

    @field_validator("urls")
    @classmethod
    def _urls(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is None:
            return None
        if not value:
            raise ValueError(
                "urls = [] 不含任何节点；请至少写一个 mqtt(s)://HOST:PORT，或改用 url / "
                "urls is an empty list; give at least one mqtt(s)://HOST:PORT, or use url"
            )
        for url in value:
            _checked(url)
        seen: dict[str, str] = {}
        for url in value:
            node = node_identity(url)
            if node in seen:
                raise ValueError(
                    f"urls 中 {seen[node]!r} 与 {url!r} 是同一节点；请删去一个 / urls lists "
                    f"{seen[node]!r} and {url!r}, the same node {node}, twice; remove one"
                )
            seen[node] = url
        schemes = sorted({urlsplit(url).scheme for url in value})
        if len(schemes) > 1:
            raise ValueError(
                f"urls {list(value)!r} 混用了 mqtt:// 与 mqtts://；同一频道的节点须同为一种 / "
                "urls mixes mqtt:// and mqtts:// nodes; the nodes of one channel's broker are "
                "one broker: write them all mqtts:// (with ca, cert, key) or all mqtt://"
            )
        return value

    @model_validator(mode="after")
    def _one_of_url_and_urls(self) -> BrokerURL:
        if self.url is not None and self.urls is not None:
            raise ValueError(
                f"url = {self.url!r} 与 urls = {list(self.urls)!r} 只能写一个 / give url "
                "(one broker) or urls (the nodes of one clustered broker), not both"
            )
        if self.url is None and self.urls is None:
            raise ValueError(
                '缺少 url 或 urls / give url = "mqtt(s)://HOST:PORT" or urls = '
                '["mqtt(s)://HOST1:PORT", "mqtt(s)://HOST2:PORT"]'
            )
        return self

    @property
    def node_urls(self) -> tuple[str, ...]:
        """The URLs as written, in the order the link tries them (one for ``url``)."""
        if self.urls is not None:
            return self.urls
        assert self.url is not None  # noqa: S101 - the model validator's guarantee
        return (self.url,)

    @property
    def nodes(self) -> tuple[tuple[str, int], ...]:
        """(host, port) of every node, in the order the link tries them."""
        return tuple(_host_port(url) for url in self.node_urls)

    @property
    def host(self) -> str:
        """The first node's host."""
        return self.nodes[0][0]

    @property
    def port(self) -> int:
        """The first node's port."""
        return self.nodes[0][1]

    @property
    def tls(self) -> bool:
        return urlsplit(self.node_urls[0]).scheme == "mqtts"

    @property
    def node_identities(self) -> tuple[str, ...]:
        """``scheme://host:port`` of each node, in order."""
        return tuple(node_identity(url) for url in self.node_urls)

    @property
    def identity(self) -> str:
        """What makes two channels share one connection: the same node (``url``), or the
        same nodes in the same order (``urls``); a list of one node is that node."""
        return ",".join(self.node_identities)


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "", parts.port or (8883 if parts.scheme == "mqtts" else 1883)


def overlapping(channels: dict[str, BrokerURL]) -> list[tuple[str, str]]:
    """(key path, problem) for each pair of channels whose brokers share a node but are not
    the same broker: one connection per node cannot follow two different node lists."""
    problems: list[tuple[str, str]] = []
    owner: dict[str, tuple[str, BrokerURL]] = {}  # node -> (first channel naming it, broker)
    for channel, broker in channels.items():
        for node in broker.node_identities:
            first = owner.get(node)
            if first is None:
                owner[node] = (channel, broker)
                continue
            other, theirs = first
            if theirs.identity != broker.identity:
                problems.append((f"channels.{channel}", _overlap(channel, broker, other, theirs)))
                break
    return problems


def _overlap(channel: str, mine: BrokerURL, other: str, theirs: BrokerURL) -> str:
    def written(broker: BrokerURL) -> str:
        return repr(broker.url) if broker.url is not None else repr(list(broker.node_urls))

    return (
        f"频道 {channel} 的 {written(mine)} 与频道 {other} 的 {written(theirs)} 有共同节点但不"
        f"相同；共用同一代理的频道须写相同的节点列表（同样的顺序）/ channel {channel} names "
        f"{written(mine)} and channel {other} names {written(theirs)}: they share a node but "
        "are not the same list; channels on one broker must list the same nodes in the same "
        "order (they share one connection), channels on different brokers share no node"
    )
