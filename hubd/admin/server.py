"""The hub's local admin socket: a unix stream socket that hubctl talks to.

Where: ``[admin] socket``, by default ``hubd.sock`` in the state folder; under systemd
``/run/hubd/hubd.sock`` (``RuntimeDirectory=hubd``). Who: the socket is mode 0660, owned
by the hub's user and group, and a folder the hub creates for it is 0750, so root, the
hub's user and the members of the hub's group may connect; nobody else. The kernel names
every peer (SO_PEERCRED: pid, uid, gid) and the hub logs and audits who asked for what.

At start the path is claimed atomically (bind a private name, chmod, listen, then a hard
link to the path, which fails if anything is there): a socket file left by a killed hub
(nothing accepts on it) is replaced; one that accepts belongs to a running hub, and this
hub refuses to start; anything that is not a socket is never removed.

One request per connection: one line of at most :data:`~hubd.admin.protocol.MAX_REQUEST`
bytes within :data:`READ_TIMEOUT` seconds, one answer line, close. At most
:data:`MAX_CLIENTS` connections are served at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import socket
import stat
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from hubd.admin.protocol import (
    MAX_REQUEST,
    HubRefusedError,
    ProtocolError,
    Request,
    encode_error,
    encode_result,
    parse_request,
)
from hubd.web.clients import Clients
from schemas.errors import ConfigError

log = structlog.get_logger("hubd.admin")

READ_TIMEOUT = 5.0  # seconds for the request line to arrive
WRITE_TIMEOUT = 10.0  # seconds for the client to take the answer
MAX_CLIENTS = 8
SUN_PATH_MAX = 107  # bytes of a unix socket path (sun_path is 108 with its NUL)
_CRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


@dataclass(frozen=True, slots=True)
class Peer:
    """Who is on the other end, as the kernel says (not as the client claims)."""

    pid: int
    uid: int
    gid: int

    @property
    def user(self) -> str | None:
        try:
            return pwd.getpwuid(self.uid).pw_name
        except KeyError:
            return None

    def as_json(self) -> dict[str, Any]:
        return {"uid": self.uid, "gid": self.gid, "pid": self.pid, "user": self.user}


Handler = Callable[[Request, Peer], Awaitable[dict[str, Any]]]


def _problem(socket_path: Path, problem: str) -> ConfigError:
    return ConfigError("hub configuration", [("admin.socket", f"{socket_path}: {problem}")])


def _too_long(path: Path) -> bool:
    return len(os.fsencode(path)) > SUN_PATH_MAX


def remove_if_stale(path: Path) -> None:
    """Remove a socket file nobody accepts on; ConfigError if a hub serves there or if the
    path is something else."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise _problem(
            path,
            "exists and is not a socket; the hub never removes other files: remove it or "
            "choose another [admin] socket",
        )
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(2.0)
        try:
            probe.connect(str(path))
        except ConnectionRefusedError:
            pass  # a killed hub's socket: nobody listens
        except FileNotFoundError:
            return
        except PermissionError:
            raise _problem(
                path,
                "cannot tell whether a hub serves on it (permission denied); run the hub as "
                "the user that owns it, or choose another [admin] socket",
            ) from None
        except OSError as exc:  # a full backlog, a timeout: someone is there
            raise _problem(path, f"another process holds it ({exc.strerror or exc})") from None
        else:
            raise _problem(
                path,
                "another hubd is serving on it (it accepted a connection); stop that hub "
                "first, or give this one its own [admin] socket",
            )
    path.unlink(missing_ok=True)
    log.info("admin.stale_socket_removed", socket=str(path))


def claim(path: Path) -> socket.socket:
    """A listening socket at ``path``, mode 0660; ConfigError naming the problem."""
    private = path.with_name(f".hubd-{os.getpid()}.sock")
    for candidate in (path, private):
        if _too_long(candidate):
            raise _problem(
                path,
                f"{len(os.fsencode(candidate))} bytes is too long for a unix socket path "
                f"(at most {SUN_PATH_MAX}); choose a shorter [admin] socket",
            )
    if not path.parent.exists():
        path.parent.mkdir(parents=True, mode=0o750)
        path.parent.chmod(0o750)  # mkdir's mode is cut by the umask; say it exactly
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        private.unlink(missing_ok=True)
        sock.bind(str(private))
        private.chmod(0o660)  # before anyone can reach it under its public name
        sock.listen(MAX_CLIENTS * 2)  # listening before linking: a probe never sees it dead
        for _ in range(3):
            try:
                os.link(private, path)  # atomic: fails if anything is at the path
                break
            except FileExistsError:
                remove_if_stale(path)
        else:
            raise _problem(path, "another process keeps creating it; is a second hub starting?")
    except OSError as exc:
        sock.close()
        raise _problem(path, f"cannot listen there: {exc.strerror or exc}") from exc
    except BaseException:
        sock.close()
        raise
    finally:
        private.unlink(missing_ok=True)
    return sock


def peer_of(writer: asyncio.StreamWriter) -> Peer:
    sock = writer.get_extra_info("socket")
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CRED.size)
    pid, uid, gid = _CRED.unpack(raw)
    return Peer(pid, uid, gid)


class AdminServer:
    """``async with AdminServer(path, handler):`` serving until exit; the socket file is
    removed at exit (unless another process replaced it meanwhile)."""

    def __init__(self, path: Path, handler: Handler) -> None:
        self.path = path
        self._handler = handler
        self._server: asyncio.Server | None = None
        self._inode: int | None = None
        self._clients = Clients(MAX_CLIENTS, WRITE_TIMEOUT)

    async def __aenter__(self) -> AdminServer:
        sock = claim(self.path)
        self._inode = self.path.stat().st_ino
        try:
            self._server = await asyncio.start_unix_server(
                self._serve, sock=sock, limit=MAX_REQUEST
            )
        except BaseException:
            sock.close()
            self._unlink()
            raise
        log.info("admin.listening", socket=str(self.path))
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop listening, end open connections, remove the socket file. Idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        await self._clients.close()
        await server.wait_closed()
        self._unlink()

    def _unlink(self) -> None:
        with contextlib.suppress(OSError):
            if self.path.stat().st_ino == self._inode:
                self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._clients.serve(
            writer,
            lambda: self._answer(reader, peer_of(writer)),
            accepting=self._server is not None,
        )

    async def _answer(self, reader: asyncio.StreamReader, peer: Peer) -> bytes | None:
        """The answer line; None if the client closed before sending a whole line."""
        try:
            async with asyncio.timeout(READ_TIMEOUT):
                line = await reader.readuntil(b"\n")
            request = parse_request(line[:-1])
        except asyncio.IncompleteReadError:
            return None
        except asyncio.LimitOverrunError:
            return self._invalid(
                peer,
                ProtocolError(
                    "request.too_large",
                    f"the request line exceeds the limit of {MAX_REQUEST} bytes",
                ),
            )
        except TimeoutError:
            return self._invalid(
                peer,
                ProtocolError(
                    "request.timeout",
                    f"no whole request line arrived within {READ_TIMEOUT:g} s; send one line "
                    "of JSON ending in a newline",
                ),
            )
        except ProtocolError as exc:
            return self._invalid(peer, exc)
        try:
            return encode_result(await self._handler(request, peer))
        except HubRefusedError as exc:
            return encode_error(exc.code, exc.message)
        except Exception:  # a fault in one answer must not end the hub: say so, log it
            log.exception("admin.failed", op=request.op.value, uid=peer.uid, pid=peer.pid)
            return encode_error(
                "hub.failed", "the hub could not answer; admin.failed in its log says why"
            )

    @staticmethod
    def _invalid(peer: Peer, exc: ProtocolError) -> bytes:
        log.warning("admin.invalid", uid=peer.uid, pid=peer.pid, code=exc.code)
        return encode_error(exc.code, exc.message)
