"""The embedded MQTT broker (amqtt, in-process), so that a newcomer needs nothing else.

Bound to loopback by default. Production runs Mosquitto (``hubctl broker-config``); this
broker is for a single machine and the demo. It allows anonymous clients: on one machine
the broker ACL is the operating system's. It runs only the anonymous-auth plugin: amqtt's
logging plugins cost 27-45% of its throughput (PERF-NOTES).
"""

from __future__ import annotations

import errno
import logging
import socket

from amqtt.broker import Broker

from schemas.errors import ConfigError, TransportError


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
                            f"{host}:{port} is already in use, so the embedded broker cannot "
                            "start. Point the hub at the broker already running there instead: "
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
        broker = Broker(config)
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
            await broker.shutdown()
