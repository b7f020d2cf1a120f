"""runtime.ports.free_port: ports a later bind gets, which no outgoing connection takes."""

from __future__ import annotations

import socket

from runtime.ports import _ephemeral_range, free_port


def test_free_ports_lie_below_the_ephemeral_range_and_are_never_handed_out_twice() -> None:
    low, _ = _ephemeral_range()
    ports = [free_port() for _ in range(50)]
    assert all(1024 < p < low for p in ports), ports
    assert len(set(ports)) == len(ports)


def test_a_free_port_can_be_bound_without_reuse_address() -> None:
    port = free_port()
    with socket.socket() as server:
        server.bind(("127.0.0.1", port))
        server.listen()
        assert server.getsockname()[1] == port
