"""The embedded MQTT broker (amqtt, in-process), so that a newcomer needs nothing else.

Bound to loopback by default. Production runs Mosquitto (``hubctl broker-config``); this
broker is for a single machine and the demo. It allows anonymous clients: on one machine
the broker ACL is the operating system's. It runs only the anonymous-auth plugin: amqtt's
logging plugins cost 27-45% of its throughput (PERF-NOTES).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from typing import Any

import structlog
from amqtt.broker import Broker

from schemas.errors import ConfigError, TransportError

log = structlog.get_logger("hubd.broker")
SHUTDOWN_WITHIN = 3.0  # seconds the embedded broker may take to stop


class _Snapshot(dict[str, Any]):
    """A dict whose iteration works on a copy of its keys.

    amqtt 0.12 iterates its subscription table while awaiting inside the loop; a client
    subscribing meanwhile raised "dictionary changed size during iteration" and left the
    connecting client without a CONNACK (seen when five spokes start at once).
    """

    def __iter__(self) -> Any:
        return iter(list(super().keys()))


class _Broker(Broker):  # type: ignore[misc]
    """amqtt's broker with two defects of 0.12.1 worked around."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self._subscriptions = _Snapshot()

    async def _publish_retained_messages_for_subscription(
        self,
        subscription: tuple[str, int],
        session: Any,
    ) -> None:
        # On connect, amqtt offers a new client the retained messages of *every* client's
        # subscriptions (a leak: a spoke would see other spokes' presence). Only the
        # client's own subscriptions may bring it retained messages.
        holders = self._subscriptions.get(subscription[0], ())
        if not any(s.client_id == session.client_id for s, _ in holders):
            return
        await super()._publish_retained_messages_for_subscription(subscription, session)


def check_port_free(host: str, port: int) -> None:
    """Raise ConfigError naming the options to change if ``host:port`` is taken."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            raise ConfigError(
                "hub configuration",
                [
                    (
                        "broker.listen",
                        (
                            f"端口 {host}:{port} 已被占用，内置代理无法启动；请改用已在运行的代理"
                            "（[broker] enabled = false 并为各通道设置 [channels.X] url），或用 "
                            f"[broker] listen 另选端口 / {host}:{port} is already in use, so "
                            "the embedded broker cannot start. Point the hub at the broker "
                            "already running there instead: "
                            "set [broker] enabled = false and give each channel a broker, e.g. "
                            f'[channels.govnet] url = "mqtt://{host}:{port}"; or choose another '
                            "port with [broker] listen"
                        ),
                    )
                ],
            ) from exc


class EmbeddedBroker:
    """``async with EmbeddedBroker(host, port)``: an amqtt broker for the hub's lifetime."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._broker: Broker | None = None

    async def __aenter__(self) -> EmbeddedBroker:
        check_port_free(self.host, self.port)
        logging.getLogger("amqtt").setLevel(logging.WARNING)
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True},
            },
        }
        broker = _Broker(config)
        try:
            await broker.start()
        except Exception as exc:
            raise TransportError(
                f"the embedded broker did not start on {self.host}:{self.port}: {exc}"
            ) from exc
        self._broker = broker
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        broker, self._broker = self._broker, None
        if broker is not None:
            # amqtt's shutdown sometimes waits ~25 s on a client handler that is already
            # gone (seen with traffic in flight at SIGTERM); the hub has committed and
            # drained by now, so it stops waiting and lets the process exit close the rest.
            try:
                async with asyncio.timeout(SHUTDOWN_WITHIN):
                    await broker.shutdown()
            except TimeoutError:
                log.warning("broker.shutdown_slow", waited_s=SHUTDOWN_WITHIN)
