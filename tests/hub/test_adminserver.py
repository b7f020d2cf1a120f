"""The admin socket server (hubd.admin.server) on a real unix socket in this process, with a
handler that echoes what it was given: limits over the wire, the claim of the path, the
peer's credentials, and errors that come back as sentences."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from hubd.admin.client import HubNotRunningError, ask
from hubd.admin.protocol import MAX_REQUEST, HubRefusedError, Op, Request
from hubd.admin.server import AdminServer, Peer
from schemas.errors import ConfigError


async def echo(request: Request, peer: Peer) -> dict[str, Any]:
    if request.op is Op.DIRECTORY_PUBLISH:
        raise HubRefusedError("directory.refused", "the file does not verify")
    if request.op is Op.REDELIVER:
        raise RuntimeError("a bug in the hub")
    return {"op": request.op.value, "peer": peer.as_json()}


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "run" / "hubd.sock"


@pytest.fixture
async def server(path: Path) -> AsyncIterator[AdminServer]:
    async with AdminServer(path, echo) as serving:
        yield serving


def modes(path: Path) -> tuple[int, int, list[str]]:
    """The socket's mode, its folder's, and what the folder holds."""
    return path.stat().st_mode, path.parent.stat().st_mode, [p.name for p in path.parent.iterdir()]


def raw_exchange(path: Path, data: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(20)
        sock.connect(str(path))
        sock.sendall(data)
        with sock.makefile("rb") as answers:
            return answers.readline()


async def test_the_hub_answers_with_the_peers_credentials_as_the_kernel_gives_them(
    server: AdminServer, path: Path
) -> None:
    answer = await asyncio.to_thread(ask, path, Op.PRESENCE)

    assert answer["op"] == "presence"
    assert answer["peer"]["uid"] == os.getuid()
    assert answer["peer"]["gid"] == os.getgid()
    assert answer["peer"]["pid"] == os.getpid()


async def test_the_socket_is_0660_and_the_folder_it_made_0750(
    server: AdminServer, path: Path
) -> None:
    socket_mode, folder_mode, names = modes(path)

    assert stat.S_ISSOCK(socket_mode)
    assert stat.S_IMODE(socket_mode) == 0o660
    assert stat.S_IMODE(folder_mode) == 0o750
    assert names == ["hubd.sock"]  # no private name left behind


async def test_a_line_over_the_limit_is_refused_over_the_wire_naming_the_limit(
    server: AdminServer, path: Path
) -> None:
    with capture_logs() as logs:
        answer = await asyncio.to_thread(raw_exchange, path, b"x" * (MAX_REQUEST + 10))

    assert b'"code":"request.too_large"' in answer
    assert str(MAX_REQUEST).encode() in answer
    assert [e["event"] for e in logs] == ["admin.invalid"]
    assert logs[0]["uid"] == os.getuid()


async def test_an_unknown_op_is_refused_with_the_closed_set_named(
    server: AdminServer, path: Path
) -> None:
    answer = await asyncio.to_thread(raw_exchange, path, b'{"version":1,"op":"shell"}\n')

    assert b'"ok":false' in answer
    assert b"request.op" in answer
    assert b"presence, redeliver, directory.publish" in answer


async def test_a_refusal_and_a_fault_in_the_hub_come_back_as_errors_and_the_server_goes_on(
    server: AdminServer, path: Path
) -> None:
    with pytest.raises(HubRefusedError) as refused:
        await asyncio.to_thread(ask, path, Op.DIRECTORY_PUBLISH)
    with capture_logs() as logs, pytest.raises(HubRefusedError) as failed:
        await asyncio.to_thread(ask, path, Op.REDELIVER, dead=True)
    still = await asyncio.to_thread(ask, path, Op.PRESENCE)

    assert (refused.value.code, refused.value.message) == (
        "directory.refused",
        "the file does not verify",
    )
    assert failed.value.code == "hub.failed"
    assert "a bug" not in failed.value.message  # the traceback is for the log, not the peer
    assert [e["event"] for e in logs] == ["admin.failed"]
    assert still["op"] == "presence"


async def test_a_live_socket_is_refused_and_left_alone(server: AdminServer, path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        async with AdminServer(path, echo):
            pass

    assert "another hubd is serving on it" in str(caught.value)
    assert (await asyncio.to_thread(ask, path, Op.PRESENCE))["op"] == "presence"


async def test_a_dead_socket_is_replaced_and_closing_removes_the_file(path: Path) -> None:
    path.parent.mkdir()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(str(path))  # bound, never listening: what a killed hub leaves
    with pytest.raises(HubNotRunningError, match="nothing accepts on it"):
        await asyncio.to_thread(ask, path, Op.PRESENCE)

    with capture_logs() as logs:
        async with AdminServer(path, echo):
            answer = await asyncio.to_thread(ask, path, Op.PRESENCE)

    assert answer["op"] == "presence"
    assert "admin.stale_socket_removed" in [e["event"] for e in logs]
    assert not await asyncio.to_thread(path.exists)
    with pytest.raises(HubNotRunningError, match="there is no socket file"):
        await asyncio.to_thread(ask, path, Op.PRESENCE)


async def test_a_file_that_is_not_a_socket_is_never_removed(path: Path) -> None:
    path.parent.mkdir()
    await asyncio.to_thread(path.write_text, "someone's notes")

    with pytest.raises(ConfigError) as caught:
        async with AdminServer(path, echo):
            pass

    assert "is not a socket" in str(caught.value)
    assert await asyncio.to_thread(path.read_text) == "someone's notes"


async def test_a_path_too_long_for_a_unix_socket_is_refused_with_the_limit(
    tmp_path: Path,
) -> None:
    long = tmp_path / ("d" * 60) / ("s" * 60 + ".sock")

    with pytest.raises(ConfigError) as caught:
        async with AdminServer(long, echo):
            pass

    assert "at most 107" in str(caught.value)
