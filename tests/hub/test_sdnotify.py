"""systemd's notify protocol (hubd.engine.sdnotify.Notifier) against a real unix datagram socket.

The socket stands where systemd's would; each state must arrive as one datagram. The
receive timeout only bounds a broken run: a datagram to a bound unix socket is queued
before sendto returns.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from hubd.engine.sdnotify import Notifier


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket and the NOTIFY_SOCKET value that names it."""
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(5)
        yield sock, str(path)


def nothing_waiting(sock: socket.socket) -> bool:
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        sock.recv(4096)
    except BlockingIOError:
        return True
    finally:
        sock.settimeout(timeout)
    return False


def test_ready_with_status_arrives_as_one_datagram(listener: tuple[socket.socket, str]) -> None:
    sock, address = listener
    notifier = Notifier({"NOTIFY_SOCKET": address})

    assert notifier.enabled
    assert notifier.ready("serving 4 channels")

    assert sock.recv(4096) == b"READY=1\nSTATUS=serving 4 channels"
    assert nothing_waiting(sock)


def test_ready_without_status_sends_only_ready(listener: tuple[socket.socket, str]) -> None:
    sock, address = listener

    assert Notifier({"NOTIFY_SOCKET": address}).ready()

    assert sock.recv(4096) == b"READY=1"


def test_watchdog_and_stopping_arrive_in_order(listener: tuple[socket.socket, str]) -> None:
    sock, address = listener
    notifier = Notifier({"NOTIFY_SOCKET": address})

    assert notifier.watchdog()
    assert notifier.watchdog()
    assert notifier.stopping()

    assert [sock.recv(4096) for _ in range(3)] == [b"WATCHDOG=1", b"WATCHDOG=1", b"STOPPING=1"]
    assert nothing_waiting(sock)


def test_abstract_namespace_address_works() -> None:
    name = f"govxchg-test-{secrets.token_hex(8)}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)  # what systemd means by "@name"
        sock.settimeout(5)
        notifier = Notifier({"NOTIFY_SOCKET": "@" + name})

        assert notifier.ready("up")
        assert notifier.stopping()

        assert sock.recv(4096) == b"READY=1\nSTATUS=up"
        assert sock.recv(4096) == b"STOPPING=1"


def test_without_notify_socket_nothing_is_sent(
    listener: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sock, _ = listener
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    for notifier in (Notifier({"WATCHDOG_USEC": "2000000"}), Notifier()):  # explicit, os.environ
        assert not notifier.enabled
        assert notifier.notify("READY=1") is False
        assert notifier.ready("x") is False
        assert notifier.watchdog() is False
        assert notifier.stopping() is False
    assert nothing_waiting(sock)


def test_notifier_reads_the_process_environment_by_default(
    listener: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sock, address = listener
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")

    notifier = Notifier()

    assert notifier.watchdog_interval == 15.0
    assert notifier.ready()
    assert sock.recv(4096) == b"READY=1"
    assert os.environ["NOTIFY_SOCKET"] == address  # left for child processes as it was


def test_a_socket_nobody_listens_on_gives_false_not_an_exception(tmp_path: Path) -> None:
    stale = tmp_path / "stale"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(stale))  # closed below: the file stays, nobody reads it
    for address in (str(tmp_path / "gone"), str(stale)):
        notifier = Notifier({"NOTIFY_SOCKET": address})

        assert notifier.enabled
        assert notifier.ready() is False
        assert notifier.watchdog() is False


@pytest.mark.parametrize(
    ("usec", "interval"),
    [
        ("2000000", 1.0),  # half of what systemd asks for
        ("30000000", 15.0),
        ("1", 0.0000005),
        ("0", None),
        ("", None),
        ("-2000000", None),
        ("2e6", None),
        ("soon", None),
    ],
)
def test_watchdog_interval_is_half_of_watchdog_usec(usec: str, interval: float | None) -> None:
    assert Notifier({"WATCHDOG_USEC": usec}).watchdog_interval == interval


def test_no_watchdog_usec_means_no_watchdog() -> None:
    assert Notifier({}).watchdog_interval is None
